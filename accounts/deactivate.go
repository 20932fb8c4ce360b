package accounts

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/hearth-matrix/hearth/storage"
)

// DeactivatedHook runs after a deactivation commits; the room core
// registers one that makes the user leave every room (joined, invited,
// knocking).
type DeactivatedHook func(ctx context.Context, userID string) error

// OnDeactivated registers a hook; call it while wiring the server.
func (a *Accounts) OnDeactivated(h DeactivatedHook) {
	a.deactivatedHooks = append(a.deactivatedHooks, h)
}

// Deactivate is the one road of every deactivation (POST
// /account/deactivate, the account page, the admin API): in one
// transaction the account is marked deactivated, its password, email
// addresses, devices (with their tokens, keys and pushers) and browser
// sessions go, and with erase its profile and account data; inTx, when
// set, joins that transaction (a UIA session consumed with it). Then the
// hooks make the user leave their rooms, which takes them out of the user
// directory too (it lists members of shared and public rooms, and never a
// deactivated user). Deactivating again finishes leaving the rooms an
// interrupted deactivation left.
func (a *Accounts) Deactivate(ctx context.Context, userID string, erase bool, inTx func(*sql.Tx) error) error {
	err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
		if inTx != nil {
			if err := inTx(tx); err != nil {
				return err
			}
		}
		if err := storage.DeactivateUser(ctx, tx, userID, erase); err != nil {
			return err
		}
		if err := a.DeleteOtherDevices(ctx, tx, userID, ""); err != nil {
			return err
		}
		return storage.DeleteUserBrowserSessions(ctx, tx, userID)
	})
	if err != nil {
		return err
	}
	// The account is gone once committed: a client hanging up must not
	// stop the leaving halfway.
	ctx = context.WithoutCancel(ctx)
	for _, h := range a.deactivatedHooks {
		if err := h(ctx, userID); err != nil {
			return fmt.Errorf("leaving rooms after deactivation: %w", err)
		}
	}
	return nil
}
