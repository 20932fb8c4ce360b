package clientapi

import (
	"database/sql"
	"encoding/json"
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Account management (client-server API, Account management: password
// change, deactivation, third-party identifiers).

// POST /account/password. With an access token it is a change, proven
// with the current password; without one it is a reset, proven with a
// validated email address (resetPassword).
func (a *API) postPassword(r *http.Request, _ accounts.Caller) (any, error) {
	if _, ok := accounts.AccessToken(r); !ok {
		return a.resetPassword(r)
	}
	c, err := a.accounts.Authenticate(r)
	if err != nil {
		return nil, err
	}
	return a.changePassword(r, c)
}

// changePassword is POST /account/password (UIA) with an access token.
// With logout_devices (the default) every other device of the user is
// logged out; the calling device stays.
func (a *API) changePassword(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		NewPassword   string          `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
		Auth          json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	if c.IsGuest {
		return nil, mxhttp.GuestAccess("Guests cannot set a password")
	}
	passed, err := a.userInteractiveAuth(r, passwordFlows("POST /account/password", c.UserID), req.Auth)
	if err != nil {
		return nil, err
	}
	if req.NewPassword == "" {
		return nil, mxhttp.MissingParam("new_password is required")
	}
	if len(req.NewPassword) > 72 {
		return nil, mxhttp.WeakPassword("Passwords longer than 72 bytes are not supported")
	}
	hash, err := a.accounts.Passwords.Hash(r.Context(), req.NewPassword) // outside the transaction
	if err != nil {
		return nil, err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		if err := passed.consume(r.Context(), tx); err != nil {
			return err
		}
		if err := storage.SetPasswordHash(r.Context(), tx, c.UserID, hash); err != nil {
			return err
		}
		if logout {
			return a.accounts.DeleteOtherDevices(r.Context(), tx, c.UserID, c.DeviceID)
		}
		return nil
	})
	return writeEmptyOrError(r, err)
}

// POST /account/deactivate (UIA). The account keeps its user ID forever
// (it can never be registered again); its password and every device go
// and it leaves every room (accounts.Deactivate).
func (a *API) deactivate(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		Auth  json.RawMessage `json:"auth"`
		Erase bool            `json:"erase"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	passed, err := a.userInteractiveAuth(r, passwordFlows("POST /account/deactivate", c.UserID), req.Auth)
	if err != nil {
		return nil, err
	}
	err = a.accounts.Deactivate(r.Context(), c.UserID, req.Erase, func(tx *sql.Tx) error {
		return passed.consume(r.Context(), tx)
	})
	if err != nil {
		return nil, err
	}
	// No identity server binding exists here: nothing to unbind, which the
	// spec answers with success.
	return map[string]string{"id_server_unbind_result": "success"}, nil
}
