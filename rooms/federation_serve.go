package rooms

import (
	"context"
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

// What the room core serves to other servers (server-server API): join
// templates and joins, state, backfill and missing events, each within what
// the requesting server may see.

// MakeJoin answers GET /make_join: a join event template for a remote
// user, built on our current head, after checking the join would be
// allowed (restricted rooms get join_authorised_via_users_server).
func (r *Rooms) MakeJoin(ctx context.Context, origin spec.ServerName, roomID, userID string, remoteVersions []gomatrixserverlib.RoomVersion) (*gomatrixserverlib.HandleMakeJoinResponse, error) {
	ver, err := r.Version(ctx, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, err
	}
	rid, err := spec.NewRoomID(roomID)
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid room ID")
	}
	uid, err := spec.NewUserID(userID, true)
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid user ID")
	}
	local, err := r.CanJoinLocally(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.HandleMakeJoin(gomatrixserverlib.HandleMakeJoinInput{
		Context: ctx, UserID: *uid, SenderID: spec.SenderID(userID), RoomID: *rid,
		RoomVersion: ver.Version(), RemoteVersions: remoteVersions, RequestOrigin: origin,
		LocalServerName: r.serverName, LocalServerInRoom: local,
		RoomQuerier: restrictedQuerier{r}, UserIDQuerier: userIDForSender,
		BuildEventTemplate: func(proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
			return r.buildTemplate(ctx, ver, proto)
		},
	})
}

// buildTemplate fills prev_events, depth and auth_events of proto from the
// room's head and builds it (signed by us, though the remote server will
// sign its own copy), returning the state events its auth used.
func (r *Rooms) buildTemplate(ctx context.Context, ver gomatrixserverlib.IRoomVersion, proto *gomatrixserverlib.ProtoEvent) (gomatrixserverlib.PDU, []gomatrixserverlib.PDU, error) {
	room, err := storage.GetRoom(ctx, r.db.Read(), proto.RoomID)
	if err != nil {
		return nil, nil, err
	}
	cur, err := r.snapshotState(ctx, r.db.Read(), room.CurrentSnapshot)
	if err != nil {
		return nil, nil, err
	}
	prev := room.Extremities
	if len(prev) > maxPrevEvents {
		prev = prev[len(prev)-maxPrevEvents:]
	}
	proto.PrevEvents = append([]string{}, prev...)
	proto.Depth = room.MaxDepth + 1
	provider, err := r.authProvider(ctx, r.db.Read(), cur.state, proto, nil)
	if err != nil {
		return nil, nil, err
	}
	builder := ver.NewEventBuilderFromProtoEvent(proto)
	if err := builder.AddAuthEvents(provider); err != nil {
		return nil, nil, err
	}
	proto.AuthEvents = builder.AuthEvents
	pdu, err := builder.Build(time.Now(), r.serverName, r.key.ID, r.key.Private)
	if err != nil {
		return nil, nil, err
	}
	var state []gomatrixserverlib.PDU
	evs, err := r.Events(ctx, r.db.Read(), pdu.AuthEventIDs())
	if err != nil {
		return nil, nil, err
	}
	for _, ev := range evs {
		state = append(state, ev.PDU)
	}
	return pdu, state, nil
}

// restrictedQuerier answers gomatrixserverlib's questions about restricted
// joins from our copy of the room.
type restrictedQuerier struct{ r *Rooms }

func (q restrictedQuerier) CurrentStateEvent(ctx context.Context, roomID spec.RoomID, eventType, stateKey string) (gomatrixserverlib.PDU, error) {
	id, err := q.r.CurrentStateID(ctx, roomID.String(), storage.StateKey{Type: eventType, StateKey: stateKey})
	if err != nil || id == "" {
		return nil, err
	}
	ev, err := q.r.Event(ctx, id)
	if err != nil {
		return nil, err
	}
	return ev.PDU, nil
}

func (q restrictedQuerier) InvitePending(ctx context.Context, roomID spec.RoomID, senderID spec.SenderID) (bool, error) {
	m, _, err := q.r.MembershipOf(ctx, roomID.String(), string(senderID))
	return m == spec.Invite, err
}

func (q restrictedQuerier) RestrictedRoomJoinInfo(ctx context.Context, roomID spec.RoomID, senderID spec.SenderID, local spec.ServerName) (*gomatrixserverlib.RestrictedRoomJoinInfo, error) {
	info := &gomatrixserverlib.RestrictedRoomJoinInfo{}
	m, _, err := q.r.MembershipOf(ctx, roomID.String(), string(senderID))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	info.UserJoinedToRoom = m == spec.Join
	members, err := storage.MembersOfRoom(ctx, q.r.db.Read(), roomID.String())
	if err != nil {
		return nil, err
	}
	var ids []string
	// Only our own joined users may authorise a join (the library picks
	// one of JoinedUsers for join_authorised_via_users_server, which we
	// then countersign for).
	for _, mm := range members {
		if mm.Membership == spec.Join && strings.HasSuffix(mm.UserID, ":"+string(local)) {
			info.LocalServerInRoom = true
			ids = append(ids, mm.EventID)
		}
	}
	evs, err := q.r.Events(ctx, q.r.db.Read(), ids)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		info.JoinedUsers = append(info.JoinedUsers, ev.PDU)
	}
	return info, nil
}

// SendJoin answers PUT /send_join (v2): it checks the join (format, origin,
// signatures, then the auth rules against our current state — the library
// checks only the first three), persists it, and returns the state before
// it with its auth chain.
//
// With omitMembers (MSC3706, the omit_members query parameter) the state
// is partial: see partialJoinState.
func (r *Rooms) SendJoin(ctx context.Context, origin spec.ServerName, roomID, eventID string, raw json.RawMessage, omitMembers bool) (join gomatrixserverlib.PDU, state, authChain map[string]json.RawMessage, err error) {
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
	res, err := gomatrixserverlib.HandleSendJoin(gomatrixserverlib.HandleSendJoinInput{
		Context: ctx, RoomID: *rid, EventID: eventID, JoinEvent: spec.RawJSON(raw), RoomVersion: ver.Version(),
		RequestOrigin: origin, LocalServerName: r.serverName, KeyID: r.key.ID, PrivateKey: r.key.Private,
		Verifier: r.keyRing, MembershipQuerier: membershipQuerier{r}, UserIDQuerier: userIDForSender,
		StoreSenderIDFromPublicID: func(context.Context, spec.SenderID, string, spec.RoomID) error { return nil },
	})
	if err != nil {
		return nil, nil, nil, err
	}
	// HandleSendJoin signed it with the library's Sign, which loses the
	// version 12 event type: parse the signed JSON again.
	if join, err = ver.NewEventFromTrustedJSON(res.JoinEvent.JSON(), false); err != nil {
		return nil, nil, nil, fmt.Errorf("re-parsing the signed join: %w", err)
	}
	join.EventID()
	// checked is the state the join was checked against: usually the state
	// before it, which is then not looked up again (storing the join cached
	// the state after it, which in a big room can push this one out).
	var checked *snapshot
	if !res.AlreadyJoined {
		room, err := storage.GetRoom(ctx, r.db.Read(), roomID)
		if err != nil {
			return nil, nil, nil, err
		}
		cur, err := r.snapshotState(ctx, r.db.Read(), room.CurrentSnapshot)
		if err != nil {
			return nil, nil, nil, err
		}
		provider, err := r.stateProvider(ctx, r.db.Read(), cur.state, join, nil)
		if err != nil {
			return nil, nil, nil, err
		}
		if err := allowed(join, provider); err != nil {
			return nil, nil, nil, mxhttp.Forbidden("The join is not allowed: %v", err)
		}
		budget := maxFetchedEvents
		if err := r.ingest(ctx, origin, ver, join, &budget, fetchHoles); err != nil {
			return nil, nil, nil, err
		}
		checked = cur
	}
	stored, err := r.Event(ctx, join.EventID())
	if err != nil {
		return nil, nil, nil, err
	}
	if stored.Rejected || stored.SoftFailed {
		return nil, nil, nil, mxhttp.Forbidden("The join was rejected")
	}
	before := checked
	if before == nil || before.id != stored.SnapshotBefore {
		if before, err = r.snapshotState(ctx, r.db.Read(), stored.SnapshotBefore); err != nil {
			return nil, nil, nil, err
		}
	}
	if omitMembers {
		state, authChain, err = r.partialJoinState(ctx, roomID, join, before.state)
	} else {
		state, authChain, err = r.servedState(ctx, before.state, nil, false)
	}
	return join, state, authChain, err
}

type membershipQuerier struct{ r *Rooms }

func (q membershipQuerier) CurrentMembership(ctx context.Context, roomID spec.RoomID, senderID spec.SenderID) (string, error) {
	m, _, err := q.r.MembershipOf(ctx, roomID.String(), string(senderID))
	if m == "" {
		m = spec.Leave
	}
	return m, err
}

// stateAndChain returns a snapshot's events and their auth chain.
func (r *Rooms) stateAndChain(ctx context.Context, snapshotID int64) (state, authChain map[string]json.RawMessage, err error) {
	st, err := r.snapshotState(ctx, r.db.Read(), snapshotID)
	if err != nil {
		return nil, nil, err
	}
	return r.servedState(ctx, st.state, nil, false) // read only: no copy
}

// StateForServer answers /state and /state_ids: the state before eventID
// and its auth chain, if server may see the event.
func (r *Rooms) StateForServer(ctx context.Context, server spec.ServerName, roomID, eventID string) (state, authChain map[string]json.RawMessage, err error) {
	ev, err := r.eventForServer(ctx, server, roomID, eventID)
	if err != nil {
		return nil, nil, err
	}
	return r.stateAndChain(ctx, ev.SnapshotBefore)
}

// EventForServer answers /event: the event if server may see it.
func (r *Rooms) EventForServer(ctx context.Context, server spec.ServerName, eventID string) (*Event, error) {
	ev, err := r.Event(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown event")
	}
	if err != nil {
		return nil, err
	}
	return r.eventForServer(ctx, server, ev.RoomID, eventID)
}

func (r *Rooms) eventForServer(ctx context.Context, server spec.ServerName, roomID, eventID string) (*Event, error) {
	ev, err := r.Event(ctx, eventID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && ev.RoomID != roomID) {
		return nil, mxhttp.NotFound("Unknown event")
	}
	if err != nil {
		return nil, err
	}
	ok, err := r.ServerMaySee(ctx, server, ev)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, mxhttp.Forbidden("Server %s may not see this event", server)
	}
	return ev, nil
}

// ServerMaySee applies history visibility to a server (server-server API,
// history visibility for servers): a server may see an event when it is
// world_readable, or when one of its users could (joined at the event, or
// invited with visibility invited or shared).
func (r *Rooms) ServerMaySee(ctx context.Context, server spec.ServerName, ev *Event) (bool, error) {
	if ev.Outlier && ev.SnapshotAfter == 0 {
		return true, nil // auth and state events we hold only as outliers
	}
	s, err := r.snapshotState(ctx, r.db.Read(), ev.SnapshotAfter)
	if err != nil {
		return false, err
	}
	visibility := gomatrixserverlib.HistoryVisibilityShared
	if id, ok := s.state[storage.StateKey{Type: spec.MRoomHistoryVisibility}]; ok {
		if hv, err := r.Event(ctx, id); err == nil {
			if v, err := hv.PDU.HistoryVisibility(); err == nil {
				visibility = v
			}
		}
	}
	if visibility == gomatrixserverlib.HistoryVisibilityWorldReadable {
		return true, nil
	}
	if visibility == gomatrixserverlib.HistoryVisibilityShared {
		// Shared history is for anyone in the room now, as for users: a
		// server that joined later may backfill what came before.
		if in, err := storage.ServerJoinedNow(ctx, r.db.Read(), ev.RoomID, string(server)); err != nil || in {
			return in, err
		}
	}
	suffix := ":" + string(server)
	var ids []string
	for k, id := range s.state {
		if k.Type == spec.MRoomMember && strings.HasSuffix(k.StateKey, suffix) {
			ids = append(ids, id)
		}
	}
	evs, err := r.Events(ctx, r.db.Read(), ids)
	if err != nil {
		return false, err
	}
	for _, m := range evs {
		membership, _ := m.PDU.Membership()
		switch {
		case membership == spec.Join:
			return true, nil
		case membership == spec.Invite && (visibility == gomatrixserverlib.HistoryVisibilityInvited || visibility == gomatrixserverlib.HistoryVisibilityShared):
			return true, nil
		}
	}
	return false, nil
}

// redactedCopy returns ev with its content redacted, leaving the cached
// event untouched.
func (r *Rooms) redactedCopy(ev *Event) (*Event, error) {
	ver, err := gomatrixserverlib.GetRoomVersion(ev.PDU.Version())
	if err != nil {
		return nil, err
	}
	redacted, err := ver.RedactEventJSON(ev.PDU.JSON())
	if err != nil {
		return nil, err
	}
	pdu, err := ver.NewEventFromTrustedJSONWithEventID(ev.EventID, redacted, true)
	if err != nil {
		return nil, err
	}
	c := *ev
	c.PDU = pdu
	return &c, nil
}

// Backfill answers /backfill: up to limit events walking back through
// prev_events from the given events (included), that server may see.
func (r *Rooms) Backfill(ctx context.Context, server spec.ServerName, roomID string, from []string, limit int) ([]*Event, error) {
	return r.walkBack(ctx, server, roomID, from, nil, limit, 0, true)
}

// MissingEvents answers /get_missing_events: events before latest (not
// included) back to earliest (not included), at most limit, at or above
// minDepth, oldest first.
func (r *Rooms) MissingEvents(ctx context.Context, server spec.ServerName, roomID string, earliest, latest []string, limit int, minDepth int64) ([]*Event, error) {
	evs, err := r.walkBack(ctx, server, roomID, latest, earliest, limit, minDepth, false)
	if err != nil {
		return nil, err
	}
	for i, j := 0, len(evs)-1; i < j; i, j = i+1, j-1 {
		evs[i], evs[j] = evs[j], evs[i]
	}
	return evs, nil
}

// walkBack does a breadth-first walk over prev_events.
func (r *Rooms) walkBack(ctx context.Context, server spec.ServerName, roomID string, start, stop []string, limit int, minDepth int64, includeStart bool) ([]*Event, error) {
	seen := map[string]bool{}
	for _, id := range stop {
		seen[id] = true
	}
	var queue []string
	if includeStart {
		queue = append(queue, start...)
	} else {
		starts, err := r.Events(ctx, r.db.Read(), start)
		if err != nil {
			return nil, err
		}
		for _, ev := range starts {
			if ev.RoomID == roomID {
				seen[ev.EventID] = true
				queue = append(queue, ev.PDU.PrevEventIDs()...)
			}
		}
	}
	var out []*Event
	for len(queue) > 0 && len(out) < limit {
		batch := queue
		queue = nil
		var load []string
		for _, id := range batch {
			if !seen[id] {
				seen[id] = true
				load = append(load, id)
			}
		}
		evs, err := r.Events(ctx, r.db.Read(), load)
		if err != nil {
			return nil, err
		}
		for _, id := range load {
			ev, ok := evs[id]
			if !ok || ev.RoomID != roomID || ev.Depth < minDepth || ev.Outlier {
				continue
			}
			// Events the server may not see go out redacted, so the DAG it
			// receives has no holes (server-server API, history visibility).
			if ok, err := r.ServerMaySee(ctx, server, ev); err != nil {
				return nil, err
			} else if !ok {
				if ev, err = r.redactedCopy(ev); err != nil {
					return nil, err
				}
			}
			out = append(out, ev)
			if len(out) == limit {
				break
			}
			queue = append(queue, ev.PDU.PrevEventIDs()...)
		}
	}
	return out, nil
}

// EventAuth answers /event_auth: the auth chain of an event.
func (r *Rooms) EventAuth(ctx context.Context, server spec.ServerName, roomID, eventID string) ([]gomatrixserverlib.PDU, error) {
	ev, err := r.eventForServer(ctx, server, roomID, eventID)
	if err != nil {
		return nil, err
	}
	chain, err := r.authChain(ctx, r.db.Read(), []gomatrixserverlib.PDU{ev.PDU})
	if err != nil {
		return nil, err
	}
	out := make([]gomatrixserverlib.PDU, 0, len(chain))
	for _, e := range chain {
		out = append(out, e.PDU)
	}
	return out, nil
}

// ServersInRoom lists the servers with a joined member, for fan-out;
// while the room's state is partial, with the servers the send_join
// answer named (MSC3706 servers_in_room). Otherwise the list is kept per
// room with the current snapshot it was read at (joins and leaves move
// it), so each send's fan-out reads one row, not every member.
func (r *Rooms) ServersInRoom(ctx context.Context, roomID string) ([]spec.ServerName, error) {
	seen := map[spec.ServerName]bool{}
	var out []spec.ServerName
	ps, err := storage.GetPartialStateRoom(ctx, r.db.Read(), roomID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	partial := err == nil && ps.CompletedPos == nil
	if partial {
		for _, s := range ps.Servers {
			if !seen[spec.ServerName(s)] {
				seen[spec.ServerName(s)] = true
				out = append(out, spec.ServerName(s))
			}
		}
	}
	joined, err := r.joinedServers(ctx, roomID, !partial)
	if err != nil {
		return nil, err
	}
	for _, s := range joined {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out, nil
}

// joinedServers are the servers of a room's joined members, from the
// cache when it holds them for the room's current snapshot (and cache
// is set).
func (r *Rooms) joinedServers(ctx context.Context, roomID string, cache bool) ([]spec.ServerName, error) {
	if cache {
		if v, ok := r.serversAt.Load(roomID); ok {
			e := v.(serversEntry)
			if snap, err := storage.RoomSnapshot(ctx, r.db.Read(), roomID); err == nil && snap == e.snapshot {
				return e.servers, nil
			}
		}
	}
	snap, members, err := storage.JoinedAtSnapshot(ctx, r.db.Read(), roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	seen := map[spec.ServerName]bool{}
	var out []spec.ServerName
	for _, u := range members {
		_, domain, err := gomatrixserverlib.SplitID('@', u)
		if err != nil || seen[domain] {
			continue
		}
		seen[domain] = true
		out = append(out, domain)
	}
	if cache && snap != 0 {
		r.serversAt.Store(roomID, serversEntry{snapshot: snap, servers: out})
	}
	return out, nil
}

// serversEntry is a room's joined servers at a state snapshot.
type serversEntry struct {
	snapshot int64
	servers  []spec.ServerName
}
