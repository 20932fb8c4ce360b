package federation

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Inbound EDUs (server-server API, EDUs). Each type has a handler; what a
// handler ignores (a forged sender, a server not in the room, a room whose
// ACL denies the origin) is logged at debug level and otherwise dropped,
// as EDUs have no per-item result.

// EDUHandler processes one EDU's content from an authenticated origin.
type EDUHandler func(ctx context.Context, origin spec.ServerName, content json.RawMessage) error

// errIgnored marks an EDU dropped for a reason the sender is not told.
var errIgnored = errors.New("ignored")

// remoteTypingTimeout is how long a remote user shows as typing without a
// refresh (the EDU carries no timeout; senders repeat it while typing).
const remoteTypingTimeout = 30 * time.Second

func (a *API) eduHandlers() map[string]EDUHandler {
	return map[string]EDUHandler{
		spec.MTyping:           a.receiveTyping,
		spec.MReceipt:          a.receiveReceipts,
		spec.MPresence:         a.receivePresence,
		spec.MDirectToDevice:   a.receiveToDevice,
		spec.MDeviceListUpdate: a.receiveDeviceListUpdate,
		"m.signing_key_update": a.receiveSigningKeyUpdate,
	}
}

// HandleEDU sets the handler of an EDU type, replacing the built-in one.
// It must be called before the server starts serving.
func (a *API) HandleEDU(eduType string, h EDUHandler) { a.edus[eduType] = h }

func (a *API) receiveEDU(ctx context.Context, origin spec.ServerName, edu gomatrixserverlib.EDU) {
	h, ok := a.edus[edu.Type]
	if !ok {
		a.log.Debug("unknown EDU type", "origin", origin, "type", edu.Type)
		return
	}
	if err := h(ctx, origin, json.RawMessage(edu.Content)); err != nil {
		if errors.Is(err, errIgnored) {
			a.log.Debug("EDU ignored", "origin", origin, "type", edu.Type, "why", err)
		} else {
			a.log.Warn("EDU failed", "origin", origin, "type", edu.Type, "err", err)
		}
	}
}

// userOf checks that userID belongs to origin: a server speaks only for its
// own users.
func userOf(origin spec.ServerName, userID string) error {
	if senderServer(userID) != origin {
		return errors.Join(errIgnored, errors.New("user "+userID+" is not on "+string(origin)))
	}
	return nil
}

// originInRoom checks that origin has a joined member in roomID and that
// the room's ACL admits it.
func (a *API) originInRoom(ctx context.Context, origin spec.ServerName, roomID string) error {
	servers, err := a.queue.joinedServers(ctx, roomID)
	if err != nil {
		return err
	}
	if !servers[origin] {
		return errors.Join(errIgnored, errors.New(string(origin)+" has no member in "+roomID))
	}
	if !a.ACLAllows(ctx, roomID, origin) {
		return errors.Join(errIgnored, errors.New(string(origin)+" is denied by the server ACL of "+roomID))
	}
	return nil
}

// m.typing: {room_id, user_id, typing}.
func (a *API) receiveTyping(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		RoomID string `json:"room_id"`
		UserID string `json:"user_id"`
		Typing bool   `json:"typing"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return errors.Join(errIgnored, err)
	}
	if err := userOf(origin, c.UserID); err != nil {
		return err
	}
	if err := a.originInRoom(ctx, origin, c.RoomID); err != nil {
		return err
	}
	a.typing.Set(c.RoomID, c.UserID, c.Typing, remoteTypingTimeout)
	return nil
}

// m.receipt: {room_id: {receipt_type: {user_id: {event_ids, data}}}}.
func (a *API) receiveReceipts(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c map[string]map[string]map[string]struct {
		EventIDs []string `json:"event_ids"`
		Data     struct {
			TS       int64  `json:"ts"`
			ThreadID string `json:"thread_id"`
		} `json:"data"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return errors.Join(errIgnored, err)
	}
	var errs []error
	for roomID, byType := range c {
		if err := a.originInRoom(ctx, origin, roomID); err != nil {
			errs = append(errs, err)
			continue
		}
		for typ, byUser := range byType {
			if typ != "m.read" { // private receipts never leave their server
				continue
			}
			for userID, rc := range byUser {
				if err := userOf(origin, userID); err != nil || len(rc.EventIDs) == 0 {
					errs = append(errs, err)
					continue
				}
				pos, err := a.db.PutReceipt(ctx, storage.Receipt{RoomID: roomID, UserID: userID, Type: typ,
					ThreadID: rc.Data.ThreadID, EventID: rc.EventIDs[0], TS: rc.Data.TS})
				if err != nil {
					return err
				}
				a.notifier.Users(a.notifier.RoomUsers(ctx, roomID), syncstream.Position{Receipts: pos})
			}
		}
	}
	return errors.Join(errs...)
}

// m.presence: {push: [{user_id, presence, status_msg, currently_active, ...}]}.
func (a *API) receivePresence(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		Push []struct {
			UserID          string  `json:"user_id"`
			Presence        string  `json:"presence"`
			StatusMsg       *string `json:"status_msg"`
			CurrentlyActive bool    `json:"currently_active"`
		} `json:"push"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return errors.Join(errIgnored, err)
	}
	var errs []error
	for _, p := range c.Push {
		if err := userOf(origin, p.UserID); err != nil {
			errs = append(errs, err)
			continue
		}
		switch p.Presence {
		case "online", "unavailable", "offline":
			a.presence.Set(p.UserID, p.Presence, p.StatusMsg, p.CurrentlyActive)
		default:
			errs = append(errs, errors.Join(errIgnored, errors.New("unknown presence "+p.Presence)))
		}
	}
	return errors.Join(errs...)
}

// m.direct_to_device: {sender, type, message_id, messages: {user: {device: content}}}.
// The hook for the E2EE module's to-device inbox: the sender is checked
// here; delivery is plugged in with HandleEDU(spec.MDirectToDevice, ...).
func (a *API) receiveToDevice(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		Sender string `json:"sender"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return errors.Join(errIgnored, err)
	}
	if err := userOf(origin, c.Sender); err != nil {
		return err
	}
	return errors.Join(errIgnored, errors.New("to-device delivery over federation is not wired yet"))
}

// m.device_list_update: {user_id, device_id, stream_id, prev_id, deleted, keys}.
// The hook for the E2EE module's remote device lists (with resync through
// GET /user/devices on a stream gap).
func (a *API) receiveDeviceListUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return errors.Join(errIgnored, err)
	}
	if err := userOf(origin, c.UserID); err != nil {
		return err
	}
	return errors.Join(errIgnored, errors.New("remote device lists are not wired yet"))
}

// m.signing_key_update: {user_id, master_key, self_signing_key}.
// The hook for the E2EE module's remote cross-signing keys.
func (a *API) receiveSigningKeyUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		UserID string `json:"user_id"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return errors.Join(errIgnored, err)
	}
	if err := userOf(origin, c.UserID); err != nil {
		return err
	}
	return errors.Join(errIgnored, errors.New("remote cross-signing keys are not wired yet"))
}
