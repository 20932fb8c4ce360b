package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/rtc"
	"github.com/hearth-matrix/hearth/storage"
)

// Sending and reading events (client-server API, Events).

// readContent reads an event content body: a JSON object, at most the PDU
// size limit (the whole event is checked against it once built). A larger
// body is refused as it arrives, never held.
func readContent(r *http.Request) (json.RawMessage, error) {
	body, err := mxhttp.ReadBody(r, mxhttp.MaxEventContentBytes)
	if err != nil {
		return nil, err // 413 M_TOO_LARGE, or a body that broke off
	}
	var obj map[string]json.RawMessage
	if err := mxhttp.DecodeJSON(body, &obj); err != nil {
		return nil, err
	}
	if err := checkCanonicalNumbers(body); err != nil {
		return nil, err
	}
	if mxhttp.HasLoneSurrogate(body) {
		return nil, mxhttp.BadJSON("Event content holds half a UTF-16 surrogate pair")
	}
	if key, bad := mxhttp.BadObjectKey(body); bad {
		return nil, mxhttp.BadJSON("Event content has the key %s: keys may not hold quotes, backslashes or control characters", key)
	}
	if mxhttp.JSONDepth(body) > mxhttp.MaxJSONDepth {
		return nil, mxhttp.BadJSON("Event content nests deeper than %d levels", mxhttp.MaxJSONDepth)
	}
	return json.RawMessage(bytes.TrimSpace(body)), nil
}

// checkCanonicalNumbers refuses numbers canonical JSON cannot hold: floats
// and integers outside [-(2^53)+1, (2^53)-1] (appendices, Canonical JSON).
func checkCanonicalNumbers(body []byte) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return mxhttp.BadJSON("Invalid JSON: %v", err)
		}
		n, ok := tok.(json.Number)
		if !ok {
			continue
		}
		i, err := n.Int64()
		if err != nil {
			return mxhttp.BadJSON("Number %s is not an integer; canonical JSON allows only integers", n)
		}
		if i > 1<<53-1 || i < -(1<<53-1) || n == "-0" {
			return mxhttp.BadJSON("Number %s is outside the range canonical JSON allows", n)
		}
	}
}

// requireJoined fails unless the user is joined to the room: 404 for an
// unknown room, 403 for a room the user is not in.
func (a *API) requireJoined(r *http.Request, roomID, userID string) error {
	m, _, err := a.rooms.MembershipOf(r.Context(), roomID, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return err
	}
	if m != spec.Join {
		return mxhttp.Forbidden("You are not joined to %s", roomID)
	}
	return nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}
func (a *API) sendMessage(r *http.Request, c accounts.Caller) (any, error) {
	roomID, evType, txnID := pathParam(r, "roomId"), pathParam(r, "eventType"), pathParam(r, "txnId")
	delay, delayed, err := a.delayed.ParseDelay(r)
	if err != nil {
		return nil, err
	}
	if delayed {
		// A retry of the transaction answers the first delay_id, whatever
		// its body (MSC4140's Complement tests retry without one).
		if id, ok, err := a.delayed.ByTxn(r.Context(), c.UserID, c.DeviceID, delayedTxn(roomID, evType, txnID)); err != nil || ok {
			if err != nil {
				return nil, err
			}
			return map[string]string{"delay_id": id}, nil
		}
	}
	banned, err := a.limitMessage(r, c)
	if err != nil {
		return nil, err
	}
	ts, err := massagedTS(r, c)
	if err != nil {
		return nil, err
	}
	content, err := readContent(r)
	if err != nil {
		return nil, err
	}
	if len(evType) > 255 {
		return nil, mxhttp.BadJSON("Event type is longer than 255 bytes")
	}
	if c.Suspended && !(evType == spec.MRoomRedaction && a.ownEvent(r, c, roomID, redactsOf(content))) {
		if err := a.refuseSuspended(r, c, roomID); err != nil {
			return nil, err
		}
	}
	if delayed {
		return a.scheduleDelayed(r, c, rtc.Request{UserID: c.UserID, DeviceID: c.DeviceID, Txn: delayedTxn(roomID, evType, txnID),
			RoomID: roomID, Type: evType, Content: content, DelayMS: delay})
	}
	if banned {
		return map[string]string{"event_id": fakeEventID()}, nil
	}
	p := rooms.Proto{
		Sender: c.UserID, Type: evType, Content: content,
		Device: c.DeviceID, TxnScope: "send:" + roomID + ":" + evType, TxnID: txnID, Timestamp: ts,
	}
	if evType == spec.MRoomRedaction {
		// Redactions through /send work in every room version (v1.18):
		// before v11 the target goes in the top-level redacts. The
		// redact power check is the server's, as for /redact.
		p.Redacts = redactsOf(content)
		if err := a.checkRedactOthers(r, c, roomID, p.Redacts); err != nil {
			return nil, err
		}
	}
	evs, err := a.rooms.Send(r.Context(), roomID, p)
	if err != nil {
		return nil, a.roomError(r, roomID, err)
	}
	return map[string]string{"event_id": evs[0].EventID}, nil
}

// roomError turns an auth failure in an unknown room into 404 rather than 403.
func (a *API) roomError(r *http.Request, roomID string, err error) error {
	if _, verr := a.rooms.Version(r.Context(), roomID); errors.Is(verr, storage.ErrNotFound) {
		return mxhttp.NotFound("Unknown room %s", roomID)
	}
	return err
}

// PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
func (a *API) putState(r *http.Request, c accounts.Caller) (any, error) {
	roomID, evType, stateKey := pathParam(r, "roomId"), pathParam(r, "eventType"), pathParam(r, "stateKey")
	delay, delayed, err := a.delayed.ParseDelay(r)
	if err != nil {
		return nil, err
	}
	ts, err := massagedTS(r, c)
	if err != nil {
		return nil, err
	}
	content, err := readContent(r)
	if err != nil {
		return nil, err
	}
	if len(evType) > 255 || len(stateKey) > 255 {
		return nil, mxhttp.BadJSON("Event type and state key must be at most 255 bytes")
	}
	if c.Suspended && !(evType == spec.MRoomMember && stateKey == c.UserID && membershipOf(content) == spec.Leave) {
		if err := a.refuseSuspended(r, c, roomID); err != nil {
			return nil, err
		}
	}
	if evType == spec.MRoomMember {
		// Membership changes have their own endpoints, but the spec allows
		// setting one's own member event here (e.g. profile changes).
		var m struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(content, &m)
		if m.Membership == "" {
			return nil, mxhttp.BadJSON("m.room.member content needs a membership")
		}
		if m.Membership == spec.Invite && stateKey != c.UserID && strings.HasSuffix(stateKey, ":"+a.conf().ServerName) {
			if v, err := a.rooms.InvitePermission(r.Context(), stateKey, c.UserID); err != nil || v == rooms.InviteBlocked {
				if err == nil {
					err = rooms.ErrInviteBlocked(stateKey)
				}
				return nil, err
			}
		}
	}
	if evType == spec.MRoomCreate {
		return nil, mxhttp.BadJSON("A room has exactly one m.room.create event; it cannot be sent again")
	}
	if evType == spec.MRoomCanonicalAlias {
		if err := a.checkCanonicalAlias(r, roomID, content); err != nil {
			return nil, err
		}
	}
	if delayed {
		return a.scheduleDelayed(r, c, rtc.Request{UserID: c.UserID, DeviceID: c.DeviceID,
			RoomID: roomID, Type: evType, StateKey: &stateKey, Content: content, DelayMS: delay})
	}
	if shadowBanned(c) {
		return map[string]string{"event_id": fakeEventID()}, nil
	}
	// Sending the same state again is a no-op that returns the existing event.
	if id, err := a.rooms.CurrentStateID(r.Context(), roomID, storage.StateKey{Type: evType, StateKey: stateKey}); err == nil && id != "" {
		if ev, err := a.rooms.Event(r.Context(), id); err == nil && ev.Sender == c.UserID && jsonEqual(ev.PDU.Content(), content) {
			return map[string]string{"event_id": id}, nil
		}
	}
	evs, err := a.rooms.Send(r.Context(), roomID, rooms.Proto{Sender: c.UserID, Type: evType, StateKey: &stateKey, Content: content, Timestamp: ts})
	if err != nil {
		return nil, a.roomError(r, roomID, err)
	}
	return map[string]string{"event_id": evs[0].EventID}, nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	xa, _ := json.Marshal(x)
	ya, _ := json.Marshal(y)
	return bytes.Equal(xa, ya)
}

// visibleState returns the room state the user may see: the current state
// when joined, else the state at the moment they left (or were kicked or
// banned), else, for world_readable rooms, the current state.
func (a *API) visibleState(r *http.Request, roomID, userID string) (rooms.State, error) {
	current, at, err := a.stateVisible(r, roomID, userID)
	if err != nil {
		return nil, err
	}
	if current {
		return a.rooms.CurrentState(r.Context(), roomID)
	}
	return a.rooms.StateAt(r.Context(), at)
}

// visibleStateKeys is visibleState for the given keys only: point lookups,
// where the whole state of a big room is tens of thousands of entries.
func (a *API) visibleStateKeys(r *http.Request, roomID, userID string, keys ...storage.StateKey) (rooms.State, error) {
	current, at, err := a.stateVisible(r, roomID, userID)
	if err != nil {
		return nil, err
	}
	if current {
		return a.rooms.CurrentStateIDs(r.Context(), roomID, keys...)
	}
	return a.rooms.StateIDsAt(r.Context(), at, keys...)
}

// stateVisible says which state of the room the user may see (as
// visibleState): the current state, else the snapshot after their leave or
// ban.
func (a *API) stateVisible(r *http.Request, roomID, userID string) (current bool, snapshot int64, err error) {
	m, memberEventID, err := a.rooms.MembershipOf(r.Context(), roomID, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, 0, mxhttp.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return false, 0, err
	}
	if m == spec.Join {
		return true, 0, nil
	}
	// The room is known (MembershipOf found it): a missing key is absent.
	hvID, err := a.rooms.CurrentStateID(r.Context(), roomID, storage.StateKey{Type: spec.MRoomHistoryVisibility})
	if err != nil {
		return false, 0, err
	}
	if hvID != "" {
		if ev, err := a.rooms.Event(r.Context(), hvID); err == nil {
			if hv, _ := ev.PDU.HistoryVisibility(); hv == "world_readable" {
				return true, 0, nil
			}
		}
	}
	if m == spec.Leave || m == spec.Ban {
		if forgotten, err := storage.IsForgotten(r.Context(), a.db.Read(), userID, roomID); err != nil {
			return false, 0, err
		} else if forgotten {
			return false, 0, mxhttp.Forbidden("You forgot room %s", roomID)
		}
		// The state as the user left it, their leave included.
		ev, err := a.rooms.Event(r.Context(), memberEventID)
		if err != nil {
			return false, 0, err
		}
		return false, ev.SnapshotAfter, nil
	}
	return false, 0, mxhttp.Forbidden("You are not in room %s", roomID)
}

// GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
func (a *API) getState(r *http.Request, c accounts.Caller) (any, error) {
	roomID, evType, stateKey := pathParam(r, "roomId"), pathParam(r, "eventType"), pathParam(r, "stateKey")
	k := storage.StateKey{Type: evType, StateKey: stateKey}
	st, err := a.visibleStateKeys(r, roomID, c.UserID, k)
	if err != nil {
		return nil, err
	}
	id, ok := st[k]
	if !ok && rooms.LeftForResync(k) {
		// A partial-state room may learn it with its resync (MSC3902);
		// AwaitFullState answers at once for a room that is not partial.
		if err := a.rooms.AwaitFullState(r.Context(), roomID); err != nil {
			return nil, err
		}
		if st, err = a.visibleStateKeys(r, roomID, c.UserID, k); err != nil {
			return nil, err
		}
		id, ok = st[k]
	}
	if !ok {
		return nil, mxhttp.NotFound("No %s state with key %q in %s", evType, stateKey, roomID)
	}
	ev, err := a.rooms.Event(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if r.URL.Query().Get("format") == "event" {
		return ev.ClientEvent(rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID}, nil), nil
	}
	content := ev.PDU.Content()
	if len(content) == 0 {
		content = []byte("{}")
	}
	return json.RawMessage(content), nil
}

// GET /_matrix/client/v3/rooms/{roomId}/state
func (a *API) getAllState(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	// Only a user who may see the state waits for it: a partial-state
	// room's whole state is known once its resync is done (MSC3902;
	// Synapse waits too).
	if _, _, err := a.stateVisible(r, roomID, c.UserID); err != nil {
		return nil, err
	}
	if err := a.rooms.AwaitFullState(r.Context(), roomID); err != nil {
		return nil, err
	}
	st, err := a.visibleState(r, roomID, c.UserID)
	if err != nil {
		return nil, err
	}
	evs, err := a.rooms.StateEvents(r.Context(), st)
	if err != nil {
		return nil, err
	}
	out, err := a.rooms.Format(r.Context(), evs, rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}
func (a *API) getEvent(r *http.Request, c accounts.Caller) (any, error) {
	roomID, eventID := pathParam(r, "roomId"), pathParam(r, "eventId")
	ev, err := a.rooms.Event(r.Context(), eventID)
	if err != nil || ev.RoomID != roomID || ev.Rejected || ev.Outlier {
		if err == nil || errors.Is(err, storage.ErrNotFound) {
			err = mxhttp.NotFound("Event not found")
		}
		return nil, err
	}
	vis, err := a.rooms.Visible(r.Context(), c.UserID, []*rooms.Event{ev})
	if err != nil {
		return nil, err
	}
	if len(vis) == 0 {
		return nil, mxhttp.NotFound("Event not found")
	}
	out, err := a.rooms.Format(r.Context(), vis, rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID})
	if err != nil {
		return nil, err
	}
	return out[0], nil
}

// PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}
func (a *API) redact(r *http.Request, c accounts.Caller) (any, error) {
	roomID, eventID, txnID := pathParam(r, "roomId"), pathParam(r, "eventId"), pathParam(r, "txnId")
	var body struct {
		Reason string `json:"reason"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if err := a.requireJoined(r, roomID, c.UserID); err != nil {
		return nil, err
	}
	if c.Suspended && !a.ownEvent(r, c, roomID, eventID) {
		if err := a.refuseSuspended(r, c, roomID); err != nil {
			return nil, err
		}
	}
	if err := a.checkRedactOthers(r, c, roomID, eventID); err != nil {
		return nil, err
	}
	ver, err := a.rooms.Version(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	content := map[string]any{}
	if body.Reason != "" {
		content["reason"] = body.Reason
	}
	p := rooms.Proto{Sender: c.UserID, Type: spec.MRoomRedaction, Device: c.DeviceID, TxnScope: "redact:" + roomID, TxnID: txnID}
	if rooms.RedactsInContent(ver.Version()) {
		content["redacts"] = eventID
	}
	p.Redacts = eventID
	p.Content, _ = json.Marshal(content)
	evs, err := a.rooms.Send(r.Context(), roomID, p)
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": evs[0].EventID}, nil
}

// redactsOf is the event a redaction's content names (room v11+ carry it
// there); "" when absent.
func redactsOf(content json.RawMessage) string {
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(content, &c)
	return c.Redacts
}

// membershipOf is an m.room.member content's membership; "" when absent.
func membershipOf(content json.RawMessage) string {
	var m struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(content, &m)
	return m.Membership
}

// checkRedactOthers refuses redacting someone else's event without the
// redact power level: the auth rules defer this check to the server (room
// v3+).
func (a *API) checkRedactOthers(r *http.Request, c accounts.Caller, roomID, eventID string) error {
	target, err := a.rooms.Event(r.Context(), eventID)
	if err != nil || target.RoomID != roomID || target.Sender == c.UserID {
		return nil
	}
	if ok, err := a.rooms.CanRedactOthers(r.Context(), roomID, c.UserID); err != nil {
		return err
	} else if !ok {
		return mxhttp.Forbidden("You may only redact your own events")
	}
	return nil
}
