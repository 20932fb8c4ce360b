package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// MembershipClient does the make_/send_ handshakes for leaving and knocking
// through another server, and fetches history (backfill); the federation
// package implements it over its signing client.
type MembershipClient interface {
	MakeLeave(ctx context.Context, s spec.ServerName, roomID, userID string) (gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error)
	SendLeave(ctx context.Context, s spec.ServerName, event gomatrixserverlib.PDU) error
	MakeKnock(ctx context.Context, s spec.ServerName, roomID, userID string, versions []gomatrixserverlib.RoomVersion) (gomatrixserverlib.ProtoEvent, gomatrixserverlib.RoomVersion, error)
	// SendKnock returns the knock_room_state the resident server answered.
	SendKnock(ctx context.Context, s spec.ServerName, event gomatrixserverlib.PDU) ([]json.RawMessage, error)
	// Backfill returns up to limit events before (and including) from.
	Backfill(ctx context.Context, s spec.ServerName, roomID string, from []string, limit int) ([]json.RawMessage, error)
}

// SetMembershipClient plugs in the federation client for remote leaves,
// knocks and backfill.
func (r *Rooms) SetMembershipClient(c MembershipClient) { r.members = c }

// signTemplate turns an event template a remote server handed us
// (make_leave, make_knock) into our signed membership event. The template
// only decides prev_events, auth_events and depth: type, room, sender,
// state key and the whole content are ours, and a template that names
// anything else is refused, so a hostile server cannot make us sign an
// event of its choosing (GHSA-22fw-4jq7-g8r8).
func (r *Rooms) signTemplate(proto gomatrixserverlib.ProtoEvent, roomVersion gomatrixserverlib.RoomVersion, roomID, userID, membership string, content map[string]any) (gomatrixserverlib.PDU, error) {
	if roomVersion == "" {
		roomVersion = gomatrixserverlib.RoomVersionV1 // the spec's default when the answer has none
	}
	if !IsSupported(string(roomVersion)) {
		return nil, fmt.Errorf("room %s has version %q, which this server does not support", roomID, roomVersion)
	}
	ver := gomatrixserverlib.MustGetRoomVersion(roomVersion)
	switch {
	case proto.Type != "" && proto.Type != spec.MRoomMember:
		return nil, fmt.Errorf("the template is a %q event, not a membership", proto.Type)
	case proto.RoomID != "" && proto.RoomID != roomID:
		return nil, fmt.Errorf("the template is for room %s, not %s", proto.RoomID, roomID)
	case proto.SenderID != "" && proto.SenderID != userID:
		return nil, fmt.Errorf("the template is sent by %s, not %s", proto.SenderID, userID)
	case proto.StateKey != nil && *proto.StateKey != userID:
		return nil, fmt.Errorf("the template is about %s, not %s", *proto.StateKey, userID)
	case proto.Redacts != "":
		return nil, errors.New("the template redacts an event")
	}
	var tc struct {
		Membership string `json:"membership"`
	}
	if len(proto.Content) > 0 && json.Unmarshal(proto.Content, &tc) == nil && tc.Membership != "" && tc.Membership != membership {
		return nil, fmt.Errorf("the template's membership is %q, not %q", tc.Membership, membership)
	}
	stateKey := userID
	proto.Type, proto.RoomID, proto.SenderID, proto.StateKey = spec.MRoomMember, roomID, userID, &stateKey
	proto.Signature, proto.Unsigned, proto.PrevStateEvents = nil, nil, nil
	if content == nil {
		content = map[string]any{}
	}
	content["membership"] = membership
	if err := proto.SetContent(content); err != nil {
		return nil, err
	}
	if proto.Depth < 1 || proto.PrevEvents == nil {
		return nil, errors.New("the template has no depth or prev_events")
	}
	return ver.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), r.serverName, r.key.ID, r.key.Private)
}

// membershipServers are the servers to ask about a room we are not in: the
// given ones, the sender's server of the user's current membership event
// (the inviter), then the room ID's server; ours never, each once.
func (r *Rooms) membershipServers(ctx context.Context, roomID, userID string, given []spec.ServerName) []spec.ServerName {
	list := append([]spec.ServerName{}, given...)
	if _, evID, err := storage.CurrentMembership(ctx, r.db.Read(), roomID, userID); err == nil && evID != "" {
		if ev, err := r.Event(ctx, evID); err == nil {
			if _, d, err := gomatrixserverlib.SplitID('@', ev.Sender); err == nil {
				list = append(list, d)
			}
		}
	}
	if _, d, err := gomatrixserverlib.SplitID('!', roomID); err == nil {
		list = append(list, d)
	}
	seen := map[spec.ServerName]bool{r.serverName: true, "": true}
	var out []spec.ServerName
	for _, s := range list {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// leaveRemote leaves (rejects an invite to, or rescinds a knock on) a room
// we are not in, through make_leave/send_leave on a server that is. If no
// server can be reached the leave is still recorded here, signed by us on
// top of the user's membership event, so the invite or knock goes away for
// the user (the resident servers keep it until they hear otherwise).
func (r *Rooms) leaveRemote(ctx context.Context, roomID string, c ChangeMembership, servers []spec.ServerName) (*Event, error) {
	content := map[string]any{}
	if c.Reason != "" {
		content["reason"] = c.Reason
	}
	if r.members != nil {
		for _, s := range r.membershipServers(ctx, roomID, c.Target, servers) {
			proto, ver, err := r.members.MakeLeave(ctx, s, roomID, c.Target)
			if err != nil {
				r.log.Info("make_leave failed", "room", roomID, "via", s, "err", err)
				continue
			}
			pdu, err := r.signTemplate(proto, ver, roomID, c.Target, spec.Leave, content)
			if err != nil {
				r.log.Warn("refusing a make_leave template", "room", roomID, "via", s, "err", err)
				continue
			}
			if err := r.members.SendLeave(ctx, s, pdu); err != nil {
				r.log.Info("send_leave failed", "room", roomID, "via", s, "err", err)
				continue
			}
			return r.persist(ctx, incoming{arrival: arriveOutOfRoom, pdu: pdu})
		}
	}
	// Nobody could be asked: record the leave locally.
	_, memberID, err := storage.CurrentMembership(ctx, r.db.Read(), roomID, c.Target)
	if err != nil {
		return nil, err
	}
	member, err := r.Event(ctx, memberID)
	if err != nil {
		return nil, err
	}
	proto := gomatrixserverlib.ProtoEvent{Depth: member.Depth + 1}
	switch member.PDU.Version() {
	case gomatrixserverlib.RoomVersionV1, gomatrixserverlib.RoomVersionV2:
		ref := []any{memberID, map[string]string{}}
		proto.PrevEvents, proto.AuthEvents = []any{ref}, []any{ref}
	default:
		proto.PrevEvents, proto.AuthEvents = []string{memberID}, []string{memberID}
	}
	pdu, err := r.signTemplate(proto, member.PDU.Version(), roomID, c.Target, spec.Leave, content)
	if err != nil {
		return nil, err
	}
	return r.persist(ctx, incoming{arrival: arriveOutOfRoom, pdu: pdu})
}

// KnockRemote knocks on a room we are not in through make_knock/send_knock
// on one of servers (server-server API, Knocking upon a room). The knock is
// kept like an invite to such a room: an outlier, the user's membership,
// and the stripped state the resident server answered with.
func (r *Rooms) KnockRemote(ctx context.Context, roomID, userID, reason string, servers []spec.ServerName) (*Event, error) {
	if r.members == nil {
		return nil, mxhttp.NotFound("Room %s is not known to this server and federation is not available", roomID)
	}
	if err := r.CheckNotBlocked(ctx, roomID); err != nil {
		return nil, err
	}
	content, err := r.memberContent(ctx, userID, spec.Knock)
	if err != nil {
		return nil, err
	}
	if reason != "" {
		content["reason"] = reason
	}
	var lastErr error
	for _, s := range r.membershipServers(ctx, roomID, userID, servers) {
		proto, ver, err := r.members.MakeKnock(ctx, s, roomID, userID, KnownVersions())
		if err != nil {
			lastErr = err
			r.log.Info("make_knock failed", "room", roomID, "via", s, "err", err)
			continue
		}
		pdu, err := r.signTemplate(proto, ver, roomID, userID, spec.Knock, content)
		if err != nil {
			lastErr = err
			r.log.Warn("refusing a make_knock template", "room", roomID, "via", s, "err", err)
			continue
		}
		stripped, err := r.members.SendKnock(ctx, s, pdu)
		if err != nil {
			lastErr = err
			r.log.Info("send_knock failed", "room", roomID, "via", s, "err", err)
			continue
		}
		verImpl, err := gomatrixserverlib.GetRoomVersion(ver)
		if err != nil {
			return nil, err
		}
		b, _ := json.Marshal(r.validKnockState(ctx, verImpl, roomID, stripped))
		return r.persist(ctx, incoming{arrival: arriveOutOfRoom, pdu: pdu, stripped: b, version: ver})
	}
	if lastErr == nil {
		return nil, mxhttp.NotFound("No server to knock on %s through", roomID)
	}
	return nil, remoteRefusal("knock on", roomID, lastErr)
}

// remoteRefusal turns a remote server's error answer into ours: its 403 and
// 404 keep their meaning, anything else is a 403 naming the cause.
func remoteRefusal(what, roomID string, err error) error {
	var he interface{ HTTPStatus() int }
	if errors.As(err, &he) && he.HTTPStatus() == 404 {
		return mxhttp.NotFound("Could not %s %s: %v", what, roomID, err)
	}
	return mxhttp.Forbidden("Could not %s %s: %v", what, roomID, err)
}
