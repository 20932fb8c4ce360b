package clientapi

import (
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Account moderation (client-server API): account locking (v1.12) and the
// server administration endpoints that apply it (v1.18). A locked
// account's requests are refused in accounts.Authenticate; only logout
// gets through. Suspension (v1.13) is not implemented.

// lockTarget is the local, active, non-admin user an admin may lock: 400
// M_INVALID_PARAM for another server's user, 404 for an unknown or
// deactivated one, 403 for an admin (the caller included). The route's
// admin access has already checked the caller, so nobody else learns
// whether an account exists.
func (a *API) lockTarget(r *http.Request) (storage.User, error) {
	userID := pathParam(r, "userId")
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return storage.User{}, mxhttp.InvalidParam("Invalid user ID %q", userID)
	}
	if string(uid.Domain()) != a.conf().ServerName {
		return storage.User{}, mxhttp.InvalidParam("User does not belong to the local server")
	}
	u, err := a.db.GetUser(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated) {
		return storage.User{}, mxhttp.NotFound("User not found")
	}
	if err != nil {
		return storage.User{}, err
	}
	return u, nil
}

// GET /_matrix/client/v1/admin/lock/{userId}
func (a *API) getAccountLock(r *http.Request, _ accounts.Caller) (any, error) {
	u, err := a.lockTarget(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"locked": u.Locked}, nil
}

// PUT /_matrix/client/v1/admin/lock/{userId}: admins cannot lock admins,
// themselves included.
func (a *API) putAccountLock(r *http.Request, _ accounts.Caller) (any, error) {
	var body struct {
		Locked *bool `json:"locked"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.Locked == nil {
		return nil, mxhttp.MissingParam("locked is required")
	}
	u, err := a.lockTarget(r)
	if err != nil {
		return nil, err
	}
	if u.IsAdmin {
		return nil, mxhttp.Forbidden("Server administrators cannot be locked")
	}
	if err := a.accounts.SetLocked(r.Context(), u.UserID, *body.Locked); err != nil {
		return nil, err
	}
	return map[string]bool{"locked": *body.Locked}, nil
}
