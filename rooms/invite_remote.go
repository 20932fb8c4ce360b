package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// InviteClient sends an invite to the invitee's server, which signs it
// (server-server API, Inviting to a room); federation implements it.
type InviteClient interface {
	InviteV2(ctx context.Context, destination spec.ServerName, event gomatrixserverlib.PDU, stripped []gomatrixserverlib.InviteStrippedState) (json.RawMessage, error)
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
	provider, err := r.stateProvider(ctx, r.db.Read(), cur.state, pdu)
	if err != nil {
		return nil, err
	}
	if err := gomatrixserverlib.Allowed(pdu, provider, userIDForSender); err != nil {
		return nil, mxhttp.Forbidden("%v", err)
	}
	stripped, err := r.inviteStrippedState(ctx, cur.state)
	if err != nil {
		return nil, err
	}
	raw, err := r.invites.InviteV2(ctx, domain, pdu, stripped)
	if err != nil {
		return nil, mxhttp.Forbidden("The invitee's server refused or could not be reached: %v", err)
	}
	signed, err := ver.NewEventFromUntrustedJSON(raw)
	if err != nil || signed.EventID() != pdu.EventID() {
		return nil, mxhttp.Forbidden("The invitee's server returned a different event")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, r.verifier, userIDForSender); err != nil {
		return nil, mxhttp.Forbidden("The invitee's server signed the invite badly: %v", err)
	}
	prevs, err := r.known(ctx, signed.PrevEventIDs())
	if err != nil {
		return nil, err
	}
	if err := r.persistRemote(ctx, ver, signed, prevs, nil); err != nil {
		return nil, err
	}
	return r.Event(ctx, signed.EventID())
}

// inviteStrippedState is the state an invitee sees before joining.
func (r *Rooms) inviteStrippedState(ctx context.Context, st map[storage.StateKey]string) ([]gomatrixserverlib.InviteStrippedState, error) {
	var ids []string
	for _, typ := range []string{spec.MRoomCreate, spec.MRoomJoinRules, spec.MRoomName, "m.room.avatar", spec.MRoomCanonicalAlias, "m.room.encryption", spec.MRoomTopic} {
		if id, ok := st[storage.StateKey{Type: typ}]; ok {
			ids = append(ids, id)
		}
	}
	evs, err := r.Events(ctx, r.db.Read(), ids)
	if err != nil {
		return nil, err
	}
	out := make([]gomatrixserverlib.InviteStrippedState, 0, len(evs))
	for _, id := range ids {
		if ev, ok := evs[id]; ok {
			out = append(out, gomatrixserverlib.NewInviteStrippedState(ev.PDU))
		}
	}
	return out, nil
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
	// The invite needs our signature too before its signatures check out
	// (the invitee's server signs invites), so it is checked once signed.
	pdu, err := ver.NewEventFromUntrustedJSON(raw)
	if err != nil {
		return nil, mxhttp.BadJSON("invalid event: %v", err)
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
	if _, domain, err := gomatrixserverlib.SplitID('@', string(pdu.SenderID())); err != nil || domain != origin {
		return nil, mxhttp.Forbidden("The inviter is not a user of the requesting server")
	}
	signed := pdu.Sign(string(r.serverName), r.key.ID, r.key.Private)
	if r.verifier == nil {
		return nil, mxhttp.BadJSON("federation is not configured")
	}
	if err := gomatrixserverlib.VerifyEventSignatures(ctx, signed, r.verifier, userIDForSender); err != nil {
		return nil, mxhttp.BadJSON("bad signatures: %v", err)
	}
	signed.EventID()
	roomID := signed.RoomID().String()
	if live, _ := r.CanJoinLocally(ctx, roomID); live {
		budget := maxFetchedEvents
		if err := r.ingest(ctx, origin, ver, signed, &budget, true); err != nil {
			return nil, err
		}
		return signed, nil
	}
	if err := r.storeRemoteInvite(ctx, ver, signed, stripped); err != nil {
		return nil, err
	}
	return signed, nil
}

// storeRemoteInvite records an invite to a room we are not in: a stub room
// row, the invite as an outlier, the invitee's membership in current state
// and the stripped state.
func (r *Rooms) storeRemoteInvite(ctx context.Context, ver gomatrixserverlib.IRoomVersion, pdu gomatrixserverlib.PDU, stripped json.RawMessage) error {
	roomID := pdu.RoomID().String()
	var list []json.RawMessage
	if len(stripped) > 0 && json.Unmarshal(stripped, &list) != nil {
		list = nil
	}
	strippedJSON, _ := json.Marshal(list)
	unlock := r.locks.lock(roomID)
	defer unlock()
	var out []*Event
	err := r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if _, err := r.db.LockRoom(ctx, tx, roomID); errors.Is(err, storage.ErrNotFound) {
			if err := storage.InsertRoom(ctx, tx, storage.Room{RoomID: roomID, Version: string(ver.Version()), Extremities: []string{}, CreatedTS: time.Now().UnixMilli()}); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		row := remoteRow(pdu)
		row.Outlier = true
		if _, err := storage.GetEvent(ctx, tx, pdu.EventID()); err == nil {
			return nil
		}
		var err error
		if row.StreamPos, err = storage.InsertEvent(ctx, tx, row); err != nil {
			return err
		}
		invitee := *pdu.StateKey()
		if err := storage.SetCurrentState(ctx, tx, roomID, storage.StateKey{Type: spec.MRoomMember, StateKey: invitee}, pdu.EventID(), row.Membership); err != nil {
			return err
		}
		if err := storage.PutRemoteInvite(ctx, tx, roomID, invitee, pdu.EventID(), strippedJSON); err != nil {
			return err
		}
		out = append(out, &Event{Event: row, PDU: pdu})
		return nil
	})
	if err != nil {
		return err
	}
	r.committed(out, nil)
	return nil
}

// RemoteInviteState returns the stripped state a remote server sent with
// an invite to a room we are not in (nil if there is none).
func (r *Rooms) RemoteInviteState(ctx context.Context, roomID, userID string) ([]StrippedEvent, error) {
	b, err := storage.RemoteInviteState(ctx, r.db.Read(), roomID, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []StrippedEvent
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, nil // a malformed stripped state is shown as none
	}
	return out, nil
}
