package federation

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/e2ee"
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
// Delivered to the local devices named; a repeated message_id is dropped.
func (a *API) receiveToDevice(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c struct {
		Sender    string                                `json:"sender"`
		Type      string                                `json:"type"`
		MessageID string                                `json:"message_id"`
		Messages  map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return errors.Join(errIgnored, err)
	}
	if err := userOf(origin, c.Sender); err != nil {
		return err
	}
	if c.Type == "" || c.MessageID == "" {
		return errors.Join(errIgnored, errors.New("to-device EDU without type or message_id"))
	}
	return a.e2ee.ReceiveToDevice(ctx, string(origin), c.Sender, c.Type, c.MessageID, c.Messages)
}

// m.device_list_update: {user_id, device_id, stream_id, prev_id, deleted, keys}.
// Applied to the remote device list, resynced through GET /user/devices
// when stream ids have a gap.
func (a *API) receiveDeviceListUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c e2ee.DeviceListUpdate
	if err := json.Unmarshal(content, &c); err != nil {
		return errors.Join(errIgnored, err)
	}
	if err := userOf(origin, c.UserID); err != nil {
		return err
	}
	if c.DeviceID == "" {
		return errors.Join(errIgnored, errors.New("device_list_update without device_id"))
	}
	return a.e2ee.ReceiveDeviceListUpdate(ctx, string(origin), c)
}

// m.signing_key_update: {user_id, master_key, self_signing_key}.
func (a *API) receiveSigningKeyUpdate(ctx context.Context, origin spec.ServerName, content json.RawMessage) error {
	var c e2ee.SigningKeyUpdate
	if err := json.Unmarshal(content, &c); err != nil {
		return errors.Join(errIgnored, err)
	}
	if err := userOf(origin, c.UserID); err != nil {
		return err
	}
	return a.e2ee.ReceiveSigningKeyUpdate(ctx, c)
}

// Outbound EDUs: a local user's typing, public read receipts and presence
// go to every other server in the rooms concerned.

// roomServers are the servers with a joined member in roomID.
func (a *API) roomServers(ctx context.Context, roomID string) ([]spec.ServerName, error) {
	return a.rooms.ServersInRoom(ctx, roomID)
}

// queueEDU queues an EDU for servers; failures are logged, as the client's
// request has succeeded locally either way.
func (a *API) queueEDU(ctx context.Context, servers []spec.ServerName, eduType string, content any) {
	b, err := json.Marshal(content)
	if err == nil {
		err = a.queue.SendEDU(ctx, servers, gomatrixserverlib.EDU{Type: eduType, Content: b})
	}
	if err != nil {
		a.log.Warn("queueing EDU", "type", eduType, "err", err)
	}
}

// SendTyping tells the room's other servers that a local user started or
// stopped typing.
func (a *API) SendTyping(ctx context.Context, roomID, userID string, typing bool) {
	servers, err := a.roomServers(ctx, roomID)
	if err != nil {
		a.log.Warn("listing servers for typing", "room", roomID, "err", err)
		return
	}
	a.queueEDU(ctx, servers, spec.MTyping, map[string]any{"room_id": roomID, "user_id": userID, "typing": typing})
}

// SendReceipt tells the room's other servers of a local user's public read
// receipt (m.read; private receipts never leave the server).
func (a *API) SendReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string, ts int64) {
	if receiptType != "m.read" {
		return
	}
	servers, err := a.roomServers(ctx, roomID)
	if err != nil {
		a.log.Warn("listing servers for a receipt", "room", roomID, "err", err)
		return
	}
	data := map[string]any{"ts": ts}
	if threadID != "" {
		data["thread_id"] = threadID
	}
	a.queueEDU(ctx, servers, spec.MReceipt, map[string]any{
		roomID: map[string]any{receiptType: map[string]any{userID: map[string]any{"event_ids": []string{eventID}, "data": data}}},
	})
}

// SendPresence tells every server sharing a room with a local user of
// their presence.
func (a *API) SendPresence(ctx context.Context, userID string, st syncstream.PresenceState) {
	if senderServer(userID) != a.serverName {
		return
	}
	joined, err := storage.RoomsOfUser(ctx, a.db.Read(), userID, spec.Join)
	if err != nil {
		a.log.Warn("listing rooms for presence", "user_id", userID, "err", err)
		return
	}
	var servers []spec.ServerName
	for _, m := range joined {
		s, err := a.roomServers(ctx, m.RoomID)
		if err != nil {
			a.log.Warn("listing servers for presence", "room", m.RoomID, "err", err)
			return
		}
		servers = append(servers, s...)
	}
	p := map[string]any{"user_id": userID, "presence": st.Presence, "currently_active": st.CurrentlyActive}
	if st.StatusMsg != nil {
		p["status_msg"] = *st.StatusMsg
	}
	if !st.LastActive.IsZero() {
		p["last_active_ago"] = time.Since(st.LastActive).Milliseconds()
	}
	a.queueEDU(ctx, servers, spec.MPresence, map[string]any{"push": []any{p}})
}
