package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// InviteClient sends an invite to the invitee's server, which signs it
// (server-server API, Inviting to a room); federation implements it.
type InviteClient interface {
	// InviteV2 sends the invite with its invite_room_state: full PDUs, as
	// the server-server API asks since v1.16 (MSC4311). roomVersion is the
	// room's (an event of an MSC3757 room reports its base version).
	InviteV2(ctx context.Context, destination spec.ServerName, roomVersion gomatrixserverlib.RoomVersion, event gomatrixserverlib.PDU, roomState []json.RawMessage) (json.RawMessage, error)
}

// SetInviteClient plugs in the federation invite client.
func (r *Rooms) SetInviteClient(c InviteClient) { r.invites = c }

func (r *Rooms) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+string(r.serverName))
}

// inviteRemote invites a user of another server: the event is built on our
// head, signed by the invitee's server, then persisted like any event that
// arrives with known prev events.
func (r *Rooms) inviteRemote(ctx context.Context, roomID string, c ChangeMembership) (*Event, error) {
	if r.invites == nil {
		return nil, mxhttp.Forbidden("Inviting users of other servers needs federation, which is not available")
	}
	_, domain, err := gomatrixserverlib.SplitID('@', c.Target)
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid user ID %q", c.Target)
	}
	ver, err := r.Version(ctx, roomID)
	if err != nil {
		return nil, err
	}
	content := map[string]any{"membership": spec.Invite}
	if c.Reason != "" {
		content["reason"] = c.Reason
	}
	if c.IsDirect {
		content["is_direct"] = true
	}
	b, _ := json.Marshal(content)
	target := c.Target
	proto := &gomatrixserverlib.ProtoEvent{SenderID: c.Sender, RoomID: roomID, Type: spec.MRoomMember, StateKey: &target, Content: b, Version: ver}
	pdu, _, err := r.buildTemplate(ctx, ver, proto)
	if err != nil {
		return nil, err
	}
	// Check it is allowed before bothering the other server.
	room, err := storage.GetRoom(ctx, r.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	cur, err := r.snapshotState(ctx, r.db.Read(), room.CurrentSnapshot)
	if err != nil {
		return nil, err
	}
	provider, err := r.stateProvider(ctx, r.db.Read(), cur.state, pdu, nil)
	if err != nil {
		return nil, err
	}
	if err := allowed(pdu, provider); err != nil {
		return nil, mxhttp.Forbidden("%v", err)
	}
	stripped, err := r.inviteStrippedState(ctx, cur.state)
	if err != nil {
		return nil, err
	}
	if pdu, err = r.policySignOutgoing(ctx, pdu); err != nil {
		return nil, err
	}
	raw, err := r.invites.InviteV2(ctx, domain, ver.Version(), pdu, stripped)
	if err != nil {
		var he gomatrix.HTTPError
		var body struct {
			ErrCode string `json:"errcode"`
		}
		if errors.As(err, &he) && json.Unmarshal(he.Contents, &body) == nil && body.ErrCode == "M_INVITE_BLOCKED" {
			return nil, ErrInviteBlocked(c.Target)
		}
		return nil, mxhttp.Forbidden("The invitee's server refused or could not be reached: %v", err)
	}
	signed, err := parsePDU(ver, raw)
	if err != nil || signed.EventID() != pdu.EventID() {
		return nil, mxhttp.Forbidden("The invitee's server returned a different event")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, r.verifier, userIDForSender); err != nil {
		return nil, mxhttp.Forbidden("The invitee's server signed the invite badly: %v", err)
	}
	if signed, err = r.policySignOutgoing(ctx, signed); err != nil { // kept by the invitee's server, or asked again
		return nil, err
	}
	prevs, err := r.known(ctx, signed.PrevEventIDs())
	if err != nil {
		return nil, err
	}
	return r.persist(ctx, incoming{arrival: arriveLive, pdu: signed, prevs: prevs})
}

// inviteStateTypes are the types (empty state key) of inviteStrippedState.
var inviteStateTypes = []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar", spec.MRoomCanonicalAlias, "m.room.encryption", spec.MRoomTopic}

// inviteStrippedState is the state an invitee's server is sent to show
// the room before joining: the create event (required) and the
// recommended events, as full PDUs (server-server API, invite_room_state).
func (r *Rooms) inviteStrippedState(ctx context.Context, st map[storage.StateKey]string) ([]json.RawMessage, error) {
	var ids []string
	for _, typ := range inviteStateTypes {
		if id, ok := st[storage.StateKey{Type: typ}]; ok {
			ids = append(ids, id)
		}
	}
	evs, err := r.Events(ctx, r.db.Read(), ids)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(evs))
	for _, id := range ids {
		if ev, ok := evs[id]; ok {
			out = append(out, json.RawMessage(ev.PDU.JSON()))
		}
	}
	return out, nil
}

// checkInviteRoomState validates invite_room_state (server-server API,
// PUT /v2/invite, v1.16): it must hold the room's m.room.create, and every
// entry must be an event formatted for the room version, pass the hash
// and signature checks and belong to the invite's room. For room versions
// after 11 a failure is an error (the spec's SHOULD); for 1 to 11 it is
// logged, as the spec asks while servers migrate.
func (r *Rooms) checkInviteRoomState(ctx context.Context, ver gomatrixserverlib.IRoomVersion, roomID string, stripped json.RawMessage) error {
	err := r.inviteRoomStateError(ctx, ver, roomID, stripped)
	if err == nil {
		return nil
	}
	if n, convErr := strconv.Atoi(string(ver.Version())); convErr == nil && n >= 1 && n <= 11 {
		r.log.Warn("invite_room_state fails validation (accepted for this room version)", "room_id", roomID, "err", err.Message)
		return nil
	}
	return err
}

func (r *Rooms) inviteRoomStateError(ctx context.Context, ver gomatrixserverlib.IRoomVersion, roomID string, stripped json.RawMessage) *mxhttp.Error {
	var list []json.RawMessage
	if err := json.Unmarshal(stripped, &list); err != nil {
		return mxhttp.InvalidParam("invite_room_state must be a list of events")
	}
	haveCreate := false
	for i, raw := range list {
		isCreate, err := r.checkStateEntry(ctx, ver, roomID, raw)
		if err != nil {
			return mxhttp.InvalidParam("invite_room_state[%d] %s", i, err.Error())
		}
		haveCreate = haveCreate || isCreate
	}
	if !haveCreate {
		return mxhttp.InvalidParam("invite_room_state lacks the m.room.create event")
	}
	return nil
}

// checkStateEntry checks one entry of invite_room_state or
// knock_room_state (v1.16): an event formatted for the room version that
// passes the content hash and signature checks and is in the room. It
// reports whether the entry is the room's m.room.create.
func (r *Rooms) checkStateEntry(ctx context.Context, ver gomatrixserverlib.IRoomVersion, roomID string, raw json.RawMessage) (bool, error) {
	pdu, err := parsePDU(ver, raw)
	if err != nil {
		return false, fmt.Errorf("is not an event of room version %s: %w", ver.Version(), err)
	}
	if pdu.Redacted() {
		return false, errors.New("fails the content hash check")
	}
	if pdu.StateKey() == nil {
		return false, errors.New("is not a state event")
	}
	isCreate := pdu.Type() == spec.MRoomCreate && *pdu.StateKey() == ""
	inRoom := pdu.RoomID().String() == roomID
	if isCreate && ver.DomainlessRoomIDs() {
		// The room ID is the create event's reference hash.
		inRoom = "!"+strings.TrimPrefix(pdu.EventID(), "$") == roomID
	}
	if !inRoom {
		return false, fmt.Errorf("is not an event of room %s", roomID)
	}
	if r.verifier == nil {
		return false, errors.New("cannot be checked: federation is not configured")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, pdu, r.verifier, userIDForSender); err != nil {
		return false, fmt.Errorf("fails the signature check: %w", err)
	}
	return isCreate, nil
}

// validKnockState keeps the entries of knock_room_state that pass
// checkStateEntry: the spec (send_knock, v1.16) asks that improperly
// signed or formatted ones be removed before clients see them.
func (r *Rooms) validKnockState(ctx context.Context, ver gomatrixserverlib.IRoomVersion, roomID string, list []json.RawMessage) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(list))
	for i, raw := range list {
		if _, err := r.checkStateEntry(ctx, ver, roomID, raw); err != nil {
			r.log.Info("dropping a knock_room_state entry", "room_id", roomID, "index", i, "err", err)
			continue
		}
		out = append(out, raw)
	}
	return out
}

// ReceiveInvite handles PUT /v2/invite from another server: checks the
// event invites a user of ours and comes from the sender's server, signs it
// and records the invite. For a room we are not in, the invite and its
// stripped state are kept so the invitee's sync shows them.
func (r *Rooms) ReceiveInvite(ctx context.Context, origin spec.ServerName, roomVersion gomatrixserverlib.RoomVersion, raw json.RawMessage, stripped json.RawMessage) (gomatrixserverlib.PDU, error) {
	if !IsSupported(string(roomVersion)) {
		return nil, &mxhttp.Error{Status: 400, ErrCode: "M_INCOMPATIBLE_ROOM_VERSION", Message: fmt.Sprintf("Room version %q is not supported", roomVersion),
			Extra: map[string]any{"room_version": roomVersion}}
	}
	ver := gomatrixserverlib.MustGetRoomVersion(roomVersion)
	pdu, err := parsePDU(ver, raw)
	if err != nil {
		return nil, mxhttp.BadJSON("%v", err)
	}
	if pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil {
		return nil, mxhttp.BadJSON("Not a membership event")
	}
	if m, err := pdu.Membership(); err != nil || m != spec.Invite {
		return nil, mxhttp.BadJSON("Not an invite")
	}
	invitee := *pdu.StateKey()
	if !r.isLocal(invitee) {
		return nil, mxhttp.BadJSON("The invitee is not a user of this server")
	}
	if _, err := r.db.GetUser(ctx, invitee); err != nil {
		return nil, mxhttp.NotFound("Unknown user %s", invitee)
	}
	if err := r.checkInvite(ctx, invitee, string(pdu.SenderID())); err != nil {
		return nil, err
	}
	if _, domain, err := gomatrixserverlib.SplitID('@', string(pdu.SenderID())); err != nil || domain != origin {
		return nil, mxhttp.Forbidden("The inviter is not a user of the requesting server")
	}
	// The signature check wants the invitee's server's signature too:
	// ours, added before checking the sender's.
	signed, err := resign(ver, pdu, r)
	if err != nil {
		return nil, err
	}
	if r.verifier == nil {
		return nil, mxhttp.Forbidden("Federation is not configured")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, r.verifier, userIDForSender); err != nil {
		return nil, mxhttp.BadJSON("bad signatures: %v", err)
	}
	signed.EventID()
	roomID := signed.RoomID().String()
	if live, _ := r.CanJoinLocally(ctx, roomID); live {
		budget := maxFetchedEvents
		if err := r.ingest(ctx, origin, ver, signed, &budget, fetchHoles); err != nil {
			return nil, err
		}
		return signed, nil
	}
	if err := r.checkInviteRoomState(ctx, ver, roomID, stripped); err != nil {
		return nil, err
	}
	if err := r.storeRemoteInvite(ctx, roomVersion, signed, stripped); err != nil {
		return nil, err
	}
	return signed, nil
}

// storeRemoteInvite records an invite to a room we are not in, with the
// stripped state the inviting server sent.
func (r *Rooms) storeRemoteInvite(ctx context.Context, version gomatrixserverlib.RoomVersion, pdu gomatrixserverlib.PDU, stripped json.RawMessage) error {
	var list []json.RawMessage
	if len(stripped) > 0 && json.Unmarshal(stripped, &list) != nil {
		list = nil
	}
	strippedJSON, _ := json.Marshal(list)
	_, err := r.persist(ctx, incoming{arrival: arriveOutOfRoom, pdu: pdu, stripped: strippedJSON, version: version})
	return err
}

// RemoteInviteState returns the stripped state a remote server sent with
// an invite to a room we are not in (nil if there is none), pruned to the
// stripped form (clients must not see what federation passed through),
// except a room version 12 create event, which is kept whole (MSC4311).
func (r *Rooms) RemoteInviteState(ctx context.Context, roomID, userID string) ([]json.RawMessage, error) {
	b, err := storage.RemoteInviteState(ctx, r.db.Read(), roomID, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var list []json.RawMessage
	if err := json.Unmarshal(b, &list); err != nil {
		return nil, nil // a malformed stripped state is shown as none
	}
	ver, err := r.roomVersion(ctx, r.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	out := make([]json.RawMessage, 0, len(list))
	for _, raw := range list {
		var ev StrippedEvent
		if json.Unmarshal(raw, &ev) != nil || ev.Type == "" {
			continue
		}
		if ev.Type == spec.MRoomCreate && ev.StateKey == "" && ver.DomainlessRoomIDs() {
			if pdu, err := ver.NewEventFromUntrustedJSON(raw); err == nil && fullCreate(pdu) {
				out = append(out, json.RawMessage(pdu.JSON()))
				continue
			}
		}
		if len(ev.Content) == 0 {
			ev.Content = json.RawMessage("{}")
		}
		b, _ := json.Marshal(ev)
		out = append(out, b)
	}
	return out, nil
}

// resign adds our signature to pdu. The library's Sign returns its
// version 2 event type even for version 12 events, which then forget the
// create event implied by the room ID (AuthEventIDs, RoomID of the create
// event): the signed JSON is parsed again with the room version.
func resign(ver gomatrixserverlib.IRoomVersion, pdu gomatrixserverlib.PDU, r *Rooms) (gomatrixserverlib.PDU, error) {
	signed := pdu.Sign(string(r.serverName), r.key.ID, r.key.Private)
	out, err := ver.NewEventFromTrustedJSON(signed.JSON(), pdu.Redacted())
	if err != nil {
		return nil, fmt.Errorf("re-parsing a signed event: %w", err)
	}
	return out, nil
}
