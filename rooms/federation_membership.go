package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Leaves and knocks that other servers make through us (server-server API,
// Leaving Rooms (Rejecting Invites) and Knocking upon a room).

// MakeLeave answers GET /make_leave: a leave template for a user of the
// requesting server, after checking the leave would be allowed.
func (r *Rooms) MakeLeave(ctx context.Context, origin spec.ServerName, roomID, userID string) (*gomatrixserverlib.HandleMakeLeaveResponse, error) {
	ver, rid, uid, err := r.membershipRequest(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	local, err := r.CanJoinLocally(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.HandleMakeLeave(gomatrixserverlib.HandleMakeLeaveInput{
		UserID: *uid, SenderID: spec.SenderID(userID), RoomID: *rid, RoomVersion: ver.Version(),
		RequestOrigin: origin, LocalServerName: r.serverName, LocalServerInRoom: local, UserIDQuerier: userIDForSender,
		BuildEventTemplate: func(proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
			return r.buildTemplate(ctx, ver, proto)
		},
	})
}

// MakeKnock answers GET /make_knock: a knock template for a user of the
// requesting server, if the room's version allows knocking, the requesting
// server supports that version, and the auth rules would allow the knock.
func (r *Rooms) MakeKnock(ctx context.Context, origin spec.ServerName, roomID, userID string, remoteVersions []gomatrixserverlib.RoomVersion) (*gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error) {
	ver, _, uid, err := r.membershipRequest(ctx, roomID, userID)
	if err != nil {
		return nil, "", err
	}
	if uid.Domain() != origin {
		return nil, "", mxhttp.Forbidden("The knock must be made by the server of the user")
	}
	if !slices.Contains(remoteVersions, ver.Version()) {
		return nil, "", &mxhttp.Error{Status: 400, ErrCode: "M_INCOMPATIBLE_ROOM_VERSION",
			Message: fmt.Sprintf("Your server does not support room version %s", ver.Version()), Extra: map[string]any{"room_version": ver.Version()}}
	}
	if local, err := r.CanJoinLocally(ctx, roomID); err != nil {
		return nil, "", err
	} else if !local {
		return nil, "", mxhttp.NotFound("This server is not in room %s", roomID)
	}
	stateKey := userID
	proto := &gomatrixserverlib.ProtoEvent{SenderID: userID, RoomID: roomID, Type: spec.MRoomMember, StateKey: &stateKey}
	if err := proto.SetContent(map[string]any{"membership": spec.Knock}); err != nil {
		return nil, "", err
	}
	pdu, state, err := r.buildTemplate(ctx, ver, proto)
	if err != nil {
		return nil, "", err
	}
	provider, err := gomatrixserverlib.NewAuthEvents(state)
	if err != nil {
		return nil, "", err
	}
	if err := allowed(pdu, provider); err != nil {
		return nil, "", mxhttp.Forbidden("You may not knock on this room: %v", err)
	}
	return proto, ver.Version(), nil
}

// membershipRequest parses the room and user of a make_ request.
func (r *Rooms) membershipRequest(ctx context.Context, roomID, userID string) (gomatrixserverlib.IRoomVersion, *spec.RoomID, *spec.UserID, error) {
	ver, err := r.Version(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil, nil, mxhttp.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, nil, nil, err
	}
	rid, err := spec.NewRoomID(roomID)
	if err != nil {
		return nil, nil, nil, mxhttp.InvalidParam("Invalid room ID")
	}
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, nil, nil, mxhttp.InvalidParam("Invalid user ID")
	}
	return ver, rid, uid, nil
}

// SendLeave answers PUT /v2/send_leave: it checks the leave and persists it.
func (r *Rooms) SendLeave(ctx context.Context, origin spec.ServerName, roomID, eventID string, raw json.RawMessage) error {
	_, err := r.receiveMembership(ctx, origin, roomID, eventID, raw, spec.Leave)
	return err
}

// SendKnock answers PUT /v1/send_knock: it checks the knock, persists it
// and returns the room state the knocker may see (knock_room_state: the
// same events as an invite's, the create event whole, MSC4311).
func (r *Rooms) SendKnock(ctx context.Context, origin spec.ServerName, roomID, eventID string, raw json.RawMessage) ([]json.RawMessage, error) {
	if _, err := r.receiveMembership(ctx, origin, roomID, eventID, raw, spec.Knock); err != nil {
		return nil, err
	}
	keys := make([]storage.StateKey, 0, len(inviteStateTypes))
	for _, typ := range inviteStateTypes {
		keys = append(keys, storage.StateKey{Type: typ})
	}
	cur, err := r.CurrentStateIDs(ctx, roomID, keys...)
	if err != nil {
		return nil, err
	}
	return r.inviteStrippedState(ctx, cur)
}

// receiveMembership checks a leave or knock a remote server sends through
// us — signed by it, about its own user, of the expected membership, for
// this room and event ID, allowed by current state — and persists it like
// any received PDU.
func (r *Rooms) receiveMembership(ctx context.Context, origin spec.ServerName, roomID, eventID string, raw json.RawMessage, membership string) (gomatrixserverlib.PDU, error) {
	ver, err := r.Version(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, err
	}
	pdu, err := r.parseRemote(ctx, ver, raw)
	if err != nil {
		return nil, mxhttp.BadJSON("%v", err)
	}
	switch {
	case pdu.RoomID().String() != roomID || pdu.EventID() != eventID:
		return nil, mxhttp.BadJSON("The event does not match the room and event ID of the path")
	case pdu.Type() != spec.MRoomMember || pdu.StateKey() == nil || *pdu.StateKey() != string(pdu.SenderID()):
		return nil, mxhttp.BadJSON("Not a membership event about its sender")
	}
	if m, err := pdu.Membership(); err != nil || m != membership {
		return nil, mxhttp.BadJSON("The membership must be %s", membership)
	}
	if _, domain, err := gomatrixserverlib.SplitID('@', string(pdu.SenderID())); err != nil || domain != origin {
		return nil, mxhttp.Forbidden("The sender is not a user of the requesting server")
	}
	if have, err := r.Event(ctx, eventID); err == nil && !have.Outlier {
		if have.Rejected || have.SoftFailed {
			return nil, mxhttp.Forbidden("The %s was rejected", membership)
		}
		return pdu, nil // a retry
	}
	// The keys the auth rules read, not the room's whole state (the room
	// is known: Version found it).
	var keys []storage.StateKey
	for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{pdu}).Tuples() {
		keys = append(keys, storage.StateKey{Type: t.EventType, StateKey: t.StateKey})
	}
	cur, err := r.CurrentStateIDs(ctx, roomID, keys...)
	if err != nil {
		return nil, err
	}
	provider, err := r.stateProvider(ctx, r.db.Read(), cur, pdu, nil)
	if err != nil {
		return nil, err
	}
	if err := allowed(pdu, provider); err != nil {
		return nil, mxhttp.Forbidden("The %s is not allowed: %v", membership, err)
	}
	budget := maxFetchedEvents
	if err := r.ingest(ctx, origin, ver, pdu, &budget, fetchHoles); err != nil {
		return nil, err
	}
	stored, err := r.Event(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if stored.Rejected || stored.SoftFailed {
		return nil, mxhttp.Forbidden("The %s was rejected", membership)
	}
	return pdu, nil
}
