package clientapi

import (
	"errors"
	"net/http"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Account moderation (client-server API): account locking (v1.12),
// account suspension (v1.13) and the server administration endpoints that
// apply them (v1.18). A locked account's requests are refused in
// accounts.Authenticate; only logout gets through. A suspended account's
// are refused per action: whole routes with access "active", and per
// path or body in refuseSuspended's callers (see its comment).

// moderationTarget is the local, active user an admin may look at: 400
// M_INVALID_PARAM for another server's user, 404 for an unknown or
// deactivated one, 403 for another admin ("the target user is another
// administrator"). The route's admin access has already checked the
// caller, so nobody else learns whether an account exists.
func (a *API) moderationTarget(r *http.Request, c accounts.Caller) (storage.User, error) {
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
	if u.IsAdmin && u.UserID != c.UserID {
		return storage.User{}, mxhttp.Forbidden("The target user is another server administrator")
	}
	return u, nil
}

// moderationChange reads the PUT body's boolean field and the target,
// which may not be an admin, the caller included.
func (a *API) moderationChange(r *http.Request, c accounts.Caller, field string) (storage.User, bool, error) {
	var body map[string]any
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return storage.User{}, false, err
	}
	v, ok := body[field]
	if !ok {
		return storage.User{}, false, mxhttp.MissingParam("%s is required", field)
	}
	on, ok := v.(bool)
	if !ok {
		return storage.User{}, false, mxhttp.BadJSON("%s must be a boolean", field)
	}
	u, err := a.moderationTarget(r, c)
	if err != nil {
		return storage.User{}, false, err
	}
	if u.IsAdmin {
		return storage.User{}, false, mxhttp.Forbidden("Server administrators cannot be %s", field)
	}
	return u, on, nil
}

// GET /_matrix/client/v1/admin/lock/{userId}
func (a *API) getAccountLock(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.moderationTarget(r, c)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"locked": u.Locked}, nil
}

// PUT /_matrix/client/v1/admin/lock/{userId}: admins cannot lock admins,
// themselves included.
func (a *API) putAccountLock(r *http.Request, c accounts.Caller) (any, error) {
	u, locked, err := a.moderationChange(r, c, "locked")
	if err != nil {
		return nil, err
	}
	if err := a.accounts.SetLocked(r.Context(), u.UserID, locked); err != nil {
		return nil, err
	}
	return map[string]bool{"locked": locked}, nil
}

// GET /_matrix/client/v1/admin/suspend/{userId} (v1.18)
func (a *API) getAccountSuspension(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.moderationTarget(r, c)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"suspended": u.Suspended}, nil
}

// PUT /_matrix/client/v1/admin/suspend/{userId} (v1.18): admins cannot
// suspend admins, themselves included.
func (a *API) putAccountSuspension(r *http.Request, c accounts.Caller) (any, error) {
	u, suspended, err := a.moderationChange(r, c, "suspended")
	if err != nil {
		return nil, err
	}
	if err := a.accounts.SetSuspended(r.Context(), u.UserID, suspended); err != nil {
		return nil, err
	}
	return map[string]bool{"suspended": suspended}, nil
}

// refuseSuspended answers 403 M_USER_SUSPENDED when a suspended caller
// acts in roomID, except in their own server notices room: the spec
// recommends letting a suspended user talk in a room kept for talking
// with the server's administrators, and that is Hearth's such room.
//
// What a suspended account may still do (client-server API, Account
// suspension, "SHOULD permit"): read (sync, messages, state), log in, log
// out, manage devices, keys, cross-signing and key backup, leave and
// reject invites, redact its own events, deactivate, set typing, receipts
// and presence, account data. What it may not ("recommended set of
// explicitly forbidden actions"): join or knock (but its notices room),
// invite, send (but redactions of its own events, and in its notices
// room), other state, redact others' events, change its profile, remove
// an admin contact (3PID); and, as the same kinds of actions: create or
// upgrade rooms, kick, ban, unban.
func (a *API) refuseSuspended(r *http.Request, c accounts.Caller, roomID string) error {
	if !c.Suspended {
		return nil
	}
	if a.conf().ServerNoticesLocalpart != "" {
		if own, err := storage.ServerNoticeRoom(r.Context(), a.db.Read(), c.UserID); err == nil && own == roomID {
			return nil
		}
	}
	return accounts.ErrSuspended()
}

// ownEvent says whether eventID is an event of c's in roomID: a suspended
// user may redact those only.
func (a *API) ownEvent(r *http.Request, c accounts.Caller, roomID, eventID string) bool {
	ev, err := a.rooms.Event(r.Context(), eventID)
	return err == nil && ev.RoomID == roomID && ev.Sender == c.UserID
}
