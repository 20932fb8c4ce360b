package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/hearth-matrix/hearth/accounts"
)

// register-user creates an account directly in the database, for closed
// registration. It works while the server runs.
func registerUser(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("register-user", flag.ContinueOnError)
	fset.SetOutput(stderr)
	configPath, applyFlags := configFlags(fset)
	user := fset.String("user", "", "localpart of the new user (alice for @alice:server)")
	password := fset.String("password", "", "password of the new user")
	admin := fset.Bool("admin", false, "make the user a server administrator")
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
	login, err := accts.Register(ctx, accounts.NewUser{Localpart: *user, Password: *password, Admin: *admin, InhibitLogin: true})
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "registered", login.UserID)
	return nil
}
