package rooms

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// MembershipOf returns a user's current membership of a room ("" if none)
// and the membership event's ID.
func (r *Rooms) MembershipOf(ctx context.Context, roomID, userID string) (membership, eventID string, err error) {
	if _, err := r.roomVersion(ctx, r.db.Read(), roomID); err != nil {
		return "", "", err // storage.ErrNotFound for unknown rooms
	}
	return storage.CurrentMembership(ctx, r.db.Read(), roomID, userID)
}

// ChangeMembership is one membership change requested by a local user.
type ChangeMembership struct {
	Sender     string
	Target     string
	Membership string // join, invite, leave, ban, knock
	Reason     string
	IsDirect   bool
	Extra      map[string]json.RawMessage // extra content fields (e.g. join_authorised_via_users_server)
}

// SetMembership sends the membership event for c after the auth rules
// allow it; it returns the event. A join by a user already joined, or a
// leave by one already left, changes nothing and returns no event.
func (r *Rooms) SetMembership(ctx context.Context, roomID string, c ChangeMembership) (*Event, error) {
	if c.Membership == spec.Join || c.Membership == spec.Invite || c.Membership == spec.Knock {
		if err := r.CheckNotBlocked(ctx, roomID); err != nil {
			return nil, err
		}
	}
	current, _, err := r.MembershipOf(ctx, roomID, c.Target)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, err
	}
	if c.Sender == c.Target && current == c.Membership && (current == spec.Join || current == spec.Leave) && c.Reason == "" && len(c.Extra) == 0 {
		return nil, nil
	}
	if c.Membership == spec.Leave && c.Sender == c.Target && current == "" {
		return nil, mxhttp.Forbidden("You are not a member of %s", roomID)
	}
	if c.Membership == spec.Leave && c.Sender == c.Target && (current == spec.Invite || current == spec.Knock) {
		// Rejecting an invite to, or rescinding a knock on, a room whose
		// live copy is elsewhere goes through a server in the room.
		if local, err := r.CanJoinLocally(ctx, roomID); err != nil {
			return nil, err
		} else if !local {
			return r.leaveRemote(ctx, roomID, c, nil)
		}
	}
	if c.Membership == spec.Invite && !r.isLocal(c.Target) {
		return r.inviteRemote(ctx, roomID, c)
	}
	if c.Membership == spec.Invite && c.Sender != c.Target {
		if err := r.checkInvite(ctx, c.Target, c.Sender); err != nil {
			return nil, err
		}
	}
	content, err := r.memberContent(ctx, c.Target, c.Membership)
	if err != nil {
		return nil, err
	}
	if c.Reason != "" {
		content["reason"] = c.Reason
	}
	if c.IsDirect {
		content["is_direct"] = true
	}
	for k, v := range c.Extra {
		content[k] = v
	}
	b, _ := json.Marshal(content)
	target := c.Target
	evs, err := r.Send(ctx, roomID, Proto{Sender: c.Sender, Type: spec.MRoomMember, StateKey: &target, Content: b})
	if err != nil {
		return nil, err
	}
	return evs[0], nil
}

// CheckNotBlocked refuses, with 403 M_FORBIDDEN, a room a server admin
// blocked (admin API): nobody joins, is invited to or knocks on it here.
func (r *Rooms) CheckNotBlocked(ctx context.Context, roomID string) error {
	blocked, _, err := storage.RoomBlocked(ctx, r.db.Read(), roomID)
	if err != nil {
		return err
	}
	if blocked {
		return mxhttp.Forbidden("This room has been blocked on this server")
	}
	return nil
}

// JoinedRooms lists the rooms a user is joined to.
func (r *Rooms) JoinedRooms(ctx context.Context, userID string) ([]string, error) {
	ms, err := storage.RoomsOfUser(ctx, r.db.Read(), userID, spec.Join)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.RoomID)
	}
	return out, nil
}

// ProfileChanged sends a new join event with the user's current profile in
// every room they are joined to (client-server API, Events on Change of
// Profile Information). A room that refuses it (e.g. power levels) is
// logged and skipped.
func (r *Rooms) ProfileChanged(ctx context.Context, userID string) error {
	joined, err := r.JoinedRooms(ctx, userID)
	if err != nil {
		return err
	}
	content, err := r.memberContent(ctx, userID, spec.Join)
	if err != nil {
		return err
	}
	b, _ := json.Marshal(content)
	for _, roomID := range joined {
		target := userID
		if _, err := r.Send(ctx, roomID, Proto{Sender: userID, Type: spec.MRoomMember, StateKey: &target, Content: b}); err != nil {
			r.log.Warn("updating membership after a profile change", "room", roomID, "user", userID, "err", err)
		}
	}
	return nil
}

// LeaveAll makes a user leave every room they are joined to, invited to
// or knocking on (account deactivation: the leave rejects invites and
// retracts knocks too). A room that refuses the leave is logged and
// skipped, so one broken room does not keep the user in all the others.
func (r *Rooms) LeaveAll(ctx context.Context, userID string) error {
	ms, err := storage.RoomsOfUser(ctx, r.db.Read(), userID, spec.Join, spec.Invite, spec.Knock)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if _, err := r.SetMembership(ctx, m.RoomID, ChangeMembership{Sender: userID, Target: userID, Membership: spec.Leave}); err != nil {
			r.log.Warn("a deactivated user could not leave a room", "user", userID, "room", m.RoomID, "err", err)
		}
	}
	return nil
}

// CanJoinLocally reports whether a join can go through our own copy of the
// room: we know the room, and either one of our users is in it (our copy is
// live) or no other server's user is (nobody else could tell us more).
func (r *Rooms) CanJoinLocally(ctx context.Context, roomID string) (bool, error) {
	if _, err := r.Version(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if id, err := r.CurrentStateID(ctx, roomID, storage.StateKey{Type: spec.MRoomCreate}); err != nil {
		return false, err
	} else if id == "" {
		return false, nil // a stub for an invite to a room we are not in
	}
	// Two probes, not the member list: a big room has tens of thousands.
	local, remote, err := storage.JoinedHere(ctx, r.db.Read(), roomID, string(r.serverName))
	if err != nil {
		return false, err
	}
	return local || !remote, nil
}
