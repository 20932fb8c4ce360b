package rooms

import (
	"context"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/storage"
)

// Partial-state joins (MSC3706, MSC3902; server-server API, send_join
// with omit_members): the resident side's reduced answer.

// maxPartialHeroes is the number of heroes a client's room summary shows
// (client-server API, Calculating the display name for a room).
const maxPartialHeroes = 5

// partialJoinState answers a send_join with omit_members=true: the state
// before the join without m.room.member events, except the joining user's
// own and, for a room with neither name nor canonical alias, the heroes'
// (joined or invited members, as sync picks them) so the joining server
// can name the room at once; and the auth chain of the join and of that
// state, less the events already in the state.
func (r *Rooms) partialJoinState(ctx context.Context, roomID string, join gomatrixserverlib.PDU, snapshotID int64) (state, authChain []gomatrixserverlib.PDU, err error) {
	before, err := r.StateAt(ctx, snapshotID)
	if err != nil {
		return nil, nil, err
	}
	keep := State{}
	for k, id := range before {
		if k.Type != spec.MRoomMember || (join.StateKey() != nil && k.StateKey == *join.StateKey()) {
			keep[k] = id
		}
	}
	_, named := before[storage.StateKey{Type: spec.MRoomName}]
	_, aliased := before[storage.StateKey{Type: spec.MRoomCanonicalAlias}]
	if !named && !aliased {
		heroes, err := r.heroesIn(ctx, roomID, join, before)
		if err != nil {
			return nil, nil, err
		}
		for _, k := range heroes {
			keep[k] = before[k]
		}
	}
	evs, err := r.StateEvents(ctx, keep)
	if err != nil {
		return nil, nil, err
	}
	inState := make(map[string]bool, len(evs))
	for _, ev := range evs {
		state = append(state, ev.PDU)
		inState[ev.EventID] = true
	}
	chain, err := r.authChain(ctx, r.db.Read(), append([]gomatrixserverlib.PDU{join}, state...))
	if err != nil {
		return nil, nil, err
	}
	// "Any events returned within state can be omitted from auth_chain."
	for _, ev := range chain {
		if !inState[ev.EventID] {
			authChain = append(authChain, ev.PDU)
		}
	}
	return state, authChain, nil
}

// heroesIn picks the heroes of the state before a join from the room's
// member list (which carries memberships, so no member event is loaded):
// joined or invited users other than the joining one, by user ID, whose
// membership in before is the one the list names.
func (r *Rooms) heroesIn(ctx context.Context, roomID string, join gomatrixserverlib.PDU, before State) ([]storage.StateKey, error) {
	members, err := storage.MembersOfRoom(ctx, r.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	sort.Slice(members, func(i, j int) bool { return members[i].UserID < members[j].UserID })
	var out []storage.StateKey
	for _, m := range members {
		if len(out) == maxPartialHeroes {
			break
		}
		k := storage.StateKey{Type: spec.MRoomMember, StateKey: m.UserID}
		if (m.Membership != spec.Join && m.Membership != spec.Invite) || m.EventID != before[k] ||
			(join.StateKey() != nil && m.UserID == *join.StateKey()) {
			continue
		}
		out = append(out, k)
	}
	return out, nil
}

// ServersBeforeJoin lists the servers in the room before a remote user's
// join (MSC3706 servers_in_room): the joining server only if another of
// its users was joined already.
func (r *Rooms) ServersBeforeJoin(ctx context.Context, roomID, joiningUser string) ([]spec.ServerName, error) {
	ms, err := storage.MembersOfRoom(ctx, r.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	seen := map[spec.ServerName]bool{}
	out := []spec.ServerName{}
	for _, m := range ms {
		if m.Membership != spec.Join || m.UserID == joiningUser {
			continue
		}
		_, domain, err := gomatrixserverlib.SplitID('@', m.UserID)
		if err != nil || seen[domain] {
			continue
		}
		seen[domain] = true
		out = append(out, domain)
	}
	return out, nil
}
