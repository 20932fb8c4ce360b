package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
)

// reset-password sets a user's password from the shell, for a user who
// forgot theirs. It works while the server runs; the user's devices are
// signed out unless --keep-devices (a running server may honour a cached
// token for a few seconds more).
func resetPassword(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("reset-password", flag.ContinueOnError)
	fset.SetOutput(stderr)
	configPath, applyFlags := configFlags(fset)
	user := fset.String("user", "", "the user: localpart (alice) or full ID (@alice:server)")
	password := fset.String("password", "", "the new password")
	keep := fset.Bool("keep-devices", false, "keep the user's devices signed in")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *user == "" || *password == "" {
		return fmt.Errorf("--user and --password are required")
	}
	accts, closeDB, err := openAccounts(ctx, *configPath, applyFlags, stderr)
	if err != nil {
		return err
	}
	defer closeDB()
	userID := *user
	if !strings.HasPrefix(userID, "@") {
		userID = "@" + userID + ":" + accts.ServerName
	}
	if err := accts.ResetPassword(ctx, userID, *password, !*keep); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "password reset for", userID)
	return nil
}
