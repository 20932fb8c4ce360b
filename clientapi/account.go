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

func (a *API) accountRoutes(v3 func(string, string, http.HandlerFunc)) {
	v3("POST", "/account/password", a.authed(a.changePassword))
	v3("POST", "/account/deactivate", a.authed(a.deactivate))
	v3("GET", "/account/3pid", a.authed(a.threePIDs))
}

// POST /account/password (UIA). With logout_devices (the default) every
// other device of the user is logged out; the calling device stays.
func (a *API) changePassword(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req struct {
		NewPassword   string          `json:"new_password"`
		LogoutDevices *bool           `json:"logout_devices"`
		Auth          json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if c.IsGuest {
		mxhttp.WriteError(w, r, mxhttp.GuestAccess("Guests cannot set a password"))
		return
	}
	passed, err := a.userInteractiveAuth(r, passwordFlows("POST /account/password", c.UserID), req.Auth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if req.NewPassword == "" {
		mxhttp.WriteError(w, r, mxhttp.MissingParam("new_password is required"))
		return
	}
	if len(req.NewPassword) > 72 {
		mxhttp.WriteError(w, r, mxhttp.WeakPassword("Passwords longer than 72 bytes are not supported"))
		return
	}
	hash, err := a.accounts.Passwords.Hash(r.Context(), req.NewPassword) // outside the transaction
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
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
	writeEmptyOrError(w, r, err)
}

// POST /account/deactivate (UIA). The account keeps its user ID forever
// (it can never be registered again); its password and every device go.
func (a *API) deactivate(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req struct {
		Auth  json.RawMessage `json:"auth"`
		Erase bool            `json:"erase"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	passed, err := a.userInteractiveAuth(r, passwordFlows("POST /account/deactivate", c.UserID), req.Auth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		if err := passed.consume(r.Context(), tx); err != nil {
			return err
		}
		if err := storage.DeactivateUser(r.Context(), tx, c.UserID, req.Erase); err != nil {
			return err
		}
		return a.accounts.DeleteOtherDevices(r.Context(), tx, c.UserID, "")
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	// No identity server support: nothing was bound, nothing to unbind.
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
}

// GET /account/3pid: Hearth stores no third-party identifiers.
func (a *API) threePIDs(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"threepids": []any{}})
}
