package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// register-user creates an account directly in the database, for closed
// registration. It works while the server runs. With --update an existing
// account gets the new password (its devices are signed out, as with
// reset-password) and, when --admin is given, the admin flag.
func registerUser(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("register-user", flag.ContinueOnError)
	fset.SetOutput(stderr)
	configPath, applyFlags := configFlags(fset)
	user := fset.String("user", "", "localpart of the new user (alice for @alice:server)")
	password := fset.String("password", "", "password of the new user")
	admin := fset.Bool("admin", false, "make the user a server administrator")
	update := fset.Bool("update", false, "if the user exists, set its password (and admin flag, with --admin) instead of failing")
	if err := fset.Parse(args); err != nil {
		return err
	}
	adminGiven := false
	fset.Visit(func(f *flag.Flag) { adminGiven = adminGiven || f.Name == "admin" })
	if *user == "" || *password == "" {
		return fmt.Errorf("--user and --password are required")
	}
	accts, closeDB, err := openAccounts(ctx, *configPath, applyFlags, stderr)
	if err != nil {
		return err
	}
	defer closeDB()
	login, err := accts.Register(ctx, accounts.NewUser{Localpart: *user, Password: *password, Admin: *admin, InhibitLogin: true})
	var me *mxhttp.Error
	if *update && errors.As(err, &me) && me.ErrCode == "M_USER_IN_USE" {
		userID := accts.UserID(strings.ToLower(*user))
		if err := accts.ResetPassword(ctx, userID, *password, true); err != nil {
			return err
		}
		if adminGiven {
			if err := accts.DB.WriteTx(ctx, func(tx *sql.Tx) error { return storage.SetAdmin(ctx, tx, userID, *admin) }); err != nil {
				return err
			}
		}
		fmt.Fprintln(stdout, "updated", userID)
		return nil
	}
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "registered", login.UserID)
	return nil
}
