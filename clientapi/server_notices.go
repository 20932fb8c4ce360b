package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Server Notices (client-server API, Server Notices module): one room per
// user, made by the notices account (config server_notices_localpart) on
// the first notice, tagged m.server_notice, to which the user is invited
// rather than joined. Notices are sent through Synapse's admin API, so the
// tools operators already use work.

const serverNoticeTag = "m.server_notice"

// noticeRooms serialises making or mending a user's notices room in this
// process (storage.LockServerNoticeRoom does across processes).
type noticeRooms struct{ mu sync.Mutex }

// POST /_synapse/admin/v1/send_server_notice and PUT .../{txnId}
// (idempotent per admin device and txnId):
// {"user_id", "content", "type" (default m.room.message), "state_key"}.
func (a *API) sendServerNotice(r *http.Request, c accounts.Caller) (any, error) {
	if a.conf().ServerNoticesLocalpart == "" {
		return nil, mxhttp.Unknown("Server notices are off: set server_notices_localpart in the config")
	}
	var req struct {
		UserID   string          `json:"user_id"`
		Content  json.RawMessage `json:"content"`
		Type     string          `json:"type"`
		StateKey *string         `json:"state_key"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	switch {
	case req.UserID == "":
		return nil, mxhttp.MissingParam("user_id is required")
	case !strings.HasSuffix(req.UserID, ":"+a.conf().ServerName):
		return nil, mxhttp.InvalidParam("Server notices go to users of this server only")
	case len(req.Content) == 0 || req.Content[0] != '{':
		return nil, mxhttp.BadJSON("content must be a JSON object")
	}
	if req.Type == "" {
		req.Type = "m.room.message"
	}
	if _, err := a.db.GetUser(r.Context(), req.UserID); errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown user %s", req.UserID)
	} else if err != nil {
		return nil, err
	}
	roomID, err := a.serverNoticeRoom(r.Context(), req.UserID)
	if err != nil {
		return nil, err
	}
	p := rooms.Proto{Sender: a.noticesUserID(), Type: req.Type, StateKey: req.StateKey, Content: req.Content}
	if txn := pathParam(r, "txnId"); txn != "" {
		p.Device, p.TxnScope, p.TxnID = c.DeviceID, "server_notice:"+c.UserID, txn
	}
	evs, err := a.rooms.Send(r.Context(), roomID, p)
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": evs[0].EventID}, nil
}

func (a *API) noticesUserID() string {
	return "@" + a.conf().ServerNoticesLocalpart + ":" + a.conf().ServerName
}

// serverNoticeRoom returns the user's notices room, making it (and the
// notices account) on first use. A user who left is invited back into the
// same room (the spec's one notices room per user); a room that can no
// longer serve (purged, deleted by an admin, left by the notices account,
// or refusing the invite) is replaced by a new one.
func (a *API) serverNoticeRoom(ctx context.Context, userID string) (string, error) {
	// The usual case reads only: the room works and the user is in it or
	// invited.
	if roomID, err := storage.ServerNoticeRoom(ctx, a.db.Read(), userID); err == nil {
		if ready, err := a.noticeRoomReady(ctx, roomID, userID); err != nil || ready {
			return roomID, err
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	// Making or mending the room is serialised per process by the mutex
	// and across processes sharing PostgreSQL by a per-user lock there, so
	// two notices at once never make two rooms.
	a.notices.mu.Lock()
	defer a.notices.mu.Unlock()
	unlock, err := a.db.LockServerNoticeRoom(ctx, userID)
	if err != nil {
		return "", err
	}
	defer unlock()
	sender := a.noticesUserID()
	if _, err := a.db.GetUser(ctx, sender); errors.Is(err, storage.ErrNotFound) {
		// No password: nobody can log in as the notices account.
		_, err := a.accounts.Register(ctx, accounts.NewUser{Localpart: a.conf().ServerNoticesLocalpart, DisplayName: "Server Notices", InhibitLogin: true})
		// Another process may have made it a moment ago (the lock above is
		// per user, not per notices account).
		if err != nil && mxhttp.AsError(err).ErrCode != "M_USER_IN_USE" {
			return "", err
		}
	} else if err != nil {
		return "", err
	}
	old, err := storage.ServerNoticeRoom(ctx, a.db.Read(), userID)
	if err == nil {
		ok, err := a.mendNoticeRoom(ctx, old, userID)
		if err != nil || ok {
			return old, err
		}
		a.log.Info("the server notices room no longer works: making a new one", "user", userID, "old_room", old)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return "", err
	}
	name := "Server Notices"
	// Users may read and leave but not talk: users_default below
	// events_default.
	roomID, err := a.rooms.Create(ctx, rooms.CreateRequest{Creator: sender, Preset: "private_chat", Name: &name,
		Invite: []string{userID}, PowerLevelContentOverride: map[string]json.RawMessage{"users_default": json.RawMessage("-10")}})
	if err != nil {
		return "", err
	}
	if err := a.db.SetServerNoticeRoom(ctx, userID, roomID); err != nil {
		return "", err
	}
	if err := a.changeTag(ctx, userID, roomID, serverNoticeTag, json.RawMessage(`{}`)); err != nil {
		return "", err
	}
	if old != "" {
		// Clients find the notices room by its tag: one room has it.
		if err := a.changeTag(ctx, userID, old, serverNoticeTag, nil); err != nil {
			return "", err
		}
	}
	return roomID, nil
}

// noticeRoomReady reports whether notices can go to roomID as it is: the
// notices account is joined and the user joined or invited.
func (a *API) noticeRoomReady(ctx context.Context, roomID, userID string) (bool, error) {
	if m, _, err := storage.CurrentMembership(ctx, a.db.Read(), roomID, a.noticesUserID()); err != nil || m != spec.Join {
		return false, err
	}
	m, _, err := storage.CurrentMembership(ctx, a.db.Read(), roomID, userID)
	return m == spec.Join || m == spec.Invite, err
}

// mendNoticeRoom makes roomID serve again if it can, inviting the user
// back when they left; false when the room cannot serve any more (the
// notices account is not in it, or the invite is refused).
func (a *API) mendNoticeRoom(ctx context.Context, roomID, userID string) (bool, error) {
	sender := a.noticesUserID()
	if m, _, err := storage.CurrentMembership(ctx, a.db.Read(), roomID, sender); err != nil || m != spec.Join {
		return false, err
	}
	m, _, err := storage.CurrentMembership(ctx, a.db.Read(), roomID, userID)
	if err != nil {
		return false, err
	}
	if m == spec.Join || m == spec.Invite {
		return true, nil
	}
	_, err = a.rooms.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: sender, Target: userID, Membership: spec.Invite})
	var me *mxhttp.Error
	if errors.As(err, &me) && me.Status < http.StatusInternalServerError {
		a.log.Info("the server notices room refuses the invite", "user", userID, "room", roomID, "err", err)
		return false, nil
	}
	return err == nil, err
}

// refuseNoticeRoomReject: an invite to one's server notices room cannot
// be rejected (M_CANNOT_LEAVE_SERVER_NOTICE_ROOM); once joined, the user
// may leave.
func (a *API) refuseNoticeRoomReject(r *http.Request, roomID, userID string) error {
	if a.conf().ServerNoticesLocalpart == "" {
		return nil
	}
	own, err := storage.ServerNoticeRoom(r.Context(), a.db.Read(), userID)
	if err != nil || own != roomID {
		return nil
	}
	if m, _, _ := storage.CurrentMembership(r.Context(), a.db.Read(), roomID, userID); m == spec.Invite {
		return &mxhttp.Error{Status: http.StatusForbidden, ErrCode: "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM",
			Message: "The invite to your server notices room cannot be rejected; join the room, then you may leave it"}
	}
	return nil
}

// SendServerNotice is POST /_synapse/admin/v1/send_server_notice for the
// admin console, which runs it in process (admin.Call).
func (a *API) SendServerNotice(r *http.Request, c accounts.Caller) (any, error) {
	return a.sendServerNotice(r, c)
}
