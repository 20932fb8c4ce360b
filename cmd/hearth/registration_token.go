package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/storage"
)

// registration-token manages the tokens that open registration to the
// people who hold one (registration: token). It works on the database
// directly, also while the server runs, and does what the Synapse-compatible
// admin API /_synapse/admin/v1/registration_tokens does.
func registrationToken(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("registration-token needs a subcommand: create, list or revoke")
	}
	sub, args := args[0], args[1:]
	fset := flag.NewFlagSet("registration-token "+sub, flag.ContinueOnError)
	fset.SetOutput(stderr)
	configPath, applyFlags := configFlags(fset)
	var token *string
	var length, uses *int
	var expires, valid *string
	switch sub {
	case "create":
		token = fset.String("token", "", "the token (default: a random one)")
		length = fset.Int("length", 16, "length of a random token (1-64)")
		uses = fset.Int("uses", -1, "how many registrations the token allows (-1: unlimited)")
		expires = fset.String("expires", "", "when the token expires: an RFC 3339 time or a duration from now such as 72h (default: never)")
	case "list":
		valid = fset.String("valid", "", "only valid (true) or only invalid (false) tokens")
	case "revoke":
		token = fset.String("token", "", "the token to delete")
	default:
		return fmt.Errorf("unknown registration-token subcommand %q (create, list, revoke)", sub)
	}
	if err := fset.Parse(args); err != nil {
		return err
	}
	accts, closeDB, err := openAccounts(ctx, *configPath, applyFlags, stderr)
	if err != nil {
		return err
	}
	defer closeDB()
	switch sub {
	case "create":
		nt := accounts.NewRegistrationToken{Token: *token, Length: *length}
		if *uses >= 0 {
			u := int64(*uses)
			nt.UsesAllowed = &u
		}
		if *expires != "" {
			at, err := parseExpiry(*expires)
			if err != nil {
				return err
			}
			ms := at.UnixMilli()
			nt.ExpiryTime = &ms
		}
		t, err := accts.CreateRegistrationToken(ctx, nt)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout, t.Token)
	case "list":
		if *valid != "" && *valid != "true" && *valid != "false" {
			return fmt.Errorf("--valid must be true or false")
		}
		all, err := accts.DB.ListRegistrationTokens(ctx)
		if err != nil {
			return err
		}
		now := time.Now().UnixMilli()
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TOKEN\tUSES ALLOWED\tPENDING\tCOMPLETED\tEXPIRES\tVALID")
		for _, t := range all {
			if *valid != "" && (*valid == "true") != t.Valid(now) {
				continue
			}
			usesAllowed, exp := "unlimited", "never"
			if t.UsesAllowed != nil {
				usesAllowed = fmt.Sprint(*t.UsesAllowed)
			}
			if t.ExpiryTime != nil {
				exp = time.UnixMilli(*t.ExpiryTime).UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%v\n", t.Token, usesAllowed, t.Pending, t.Completed, exp, t.Valid(now))
		}
		return tw.Flush()
	case "revoke":
		if *token == "" {
			return fmt.Errorf("--token is required")
		}
		if err := accts.DeleteRegistrationToken(ctx, *token); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "revoked", *token)
	}
	return nil
}

func parseExpiry(s string) (time.Time, error) {
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, fmt.Errorf("--expires %q is neither an RFC 3339 time nor a duration", s)
	}
	return t, nil
}

// openAccounts opens the configured database for the admin subcommands.
func openAccounts(ctx context.Context, configPath string, applyFlags func(*config.Config) error, stderr io.Writer) (*accounts.Accounts, func(), error) {
	cfg, err := loadConfig(configPath, applyFlags, newLogger(stderr, "warn", "text"))
	if err != nil {
		return nil, nil, err
	}
	db, err := storage.Open(ctx, cfg.DatabaseURL, storage.Options{Synchronous: cfg.SQLiteSynchronous, MaxConns: 2})
	if err != nil {
		return nil, nil, err
	}
	accts := &accounts.Accounts{DB: db, ServerName: cfg.ServerName, Passwords: accounts.NewPasswords(cfg.BcryptCost, runtime.NumCPU())}
	return accts, func() { db.Close() }, nil
}
