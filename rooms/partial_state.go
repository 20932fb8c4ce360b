package rooms

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/storage"
)

// Partial-state joins (MSC3706, MSC3902; server-server API, send_join
// with omit_members): the resident side's reduced answer.

// maxPartialHeroes is the number of heroes a client's room summary shows
// (client-server API, Calculating the display name for a room).
const maxPartialHeroes = 5

// partialJoinState answers a send_join with omit_members=true from the
// state before the join (read only): that state
// before the join without m.room.member events, except the joining user's
// own, those the join's auth events name, and, for a room with neither
// name nor canonical alias, the heroes' (joined or invited members, as
// sync picks them) so the joining server
// can name the room at once; and the auth chain of the join and of that
// state, less the events already in the state.
func (r *Rooms) partialJoinState(ctx context.Context, roomID string, join gomatrixserverlib.PDU, before State) (state, authChain map[string]json.RawMessage, err error) {
	// The join's own auth events stay too: a restricted join names the
	// membership of the user who authorised it, which the joining server
	// checks the join against.
	authOfJoin := map[string]bool{}
	for _, id := range join.AuthEventIDs() {
		authOfJoin[id] = true
	}
	keep := State{}
	for k, id := range before {
		if k.Type != spec.MRoomMember || (join.StateKey() != nil && k.StateKey == *join.StateKey()) || authOfJoin[id] {
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
	return r.servedState(ctx, keep, join.AuthEventIDs(), true)
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

// The joining side (MSC3902): send_join asks for partial state; the room is
// stored with what came and is usable at once; the full state is fetched
// in the background (resync) and the room's events placed on it again.

// partialJoinClient is the part of a JoinClient that asks for a
// partial-state answer (omit_members=true); federation's client has it.
type partialJoinClient interface {
	SendJoinPartialState(ctx context.Context, origin, s spec.ServerName, event gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error)
}

// StateFetcher is the part of a Remote that fetches the whole state before
// an event with its auth chain (/state), one request instead of one per
// event when a resync lacks many.
type StateFetcher interface {
	StateAt(ctx context.Context, server spec.ServerName, roomID, eventID string) (state, authChain []json.RawMessage, err error)
}

// partialAnswer is a partial send_join answer as the library's checks
// (PerformJoin, CheckSendJoinResponse) read it. The library checks every
// event of an answer in turn, on one CPU: the state of a big room without
// its members can still be tens of thousands of events. So it is handed
// the auth chain and, of the state, only what the join's auth rules read
// (the state it checks the join against), with the create event in
// auth_chain too (PerformJoin looks for it there; MSC3706 lets the
// resident leave out of auth_chain what state holds). checkRestOfState
// checks the rest of the state the same way, on every CPU.
type partialAnswer struct {
	gomatrixserverlib.SendJoinResponse
	auth, state gomatrixserverlib.EventJSONs
}

func newPartialAnswer(res gomatrixserverlib.SendJoinResponse, join gomatrixserverlib.PDU) partialAnswer {
	needed := map[storage.StateKey]bool{{Type: spec.MRoomCreate}: true}
	for _, t := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{join}).Tuples() {
		needed[storage.StateKey{Type: t.EventType, StateKey: t.StateKey}] = true
	}
	auth := append(gomatrixserverlib.EventJSONs{}, res.GetAuthEvents()...)
	var state gomatrixserverlib.EventJSONs
	for _, raw := range res.GetStateEvents() {
		k, _ := rawStateKey(raw)
		if !needed[k] {
			continue
		}
		state = append(state, raw)
		if k.Type == spec.MRoomCreate {
			auth = append(auth, raw)
		}
	}
	return partialAnswer{SendJoinResponse: res, auth: auth, state: state}
}

func (p partialAnswer) GetAuthEvents() gomatrixserverlib.EventJSONs  { return p.auth }
func (p partialAnswer) GetStateEvents() gomatrixserverlib.EventJSONs { return p.state }

// rawStateKey reads the type and state key of an event's JSON in one pass
// over its top level (each gjson.Get would scan it again); ok is false
// unless both are strings.
func rawStateKey(raw []byte) (k storage.StateKey, ok bool) {
	var haveType, haveKey bool
	gjson.ParseBytes(raw).ForEach(func(key, v gjson.Result) bool {
		switch key.Str {
		case "type":
			k.Type, haveType = v.Str, v.Type == gjson.String
		case "state_key":
			k.StateKey, haveKey = v.Str, v.Type == gjson.String
		}
		return !haveType || !haveKey
	})
	return k, haveType && haveKey
}

// deferredState reports whether a state event of a partial send_join
// answer is left for the resync, as the members are: state of a type
// outside the spec's m. namespace with a non-empty state key (a bridge's,
// a widget's or an application's state per user or item). Besides the
// members, that is what makes a big room's state big: checking tens of
// thousands of signatures before the join answers kept the user waiting
// seconds. MSC3902 has the joining server act on a partial state until
// the resync; what clients need to show and use the room (name, topic,
// encryption, power levels, ACLs, pinned events, space children) and
// MatrixRTC call memberships are stored with the join. Syncs show the
// deferred state once the room is complete (sync.go, sliding_sync.go).
func deferredState(k storage.StateKey) bool {
	return k.StateKey != "" && !strings.HasPrefix(k.Type, "m.") && k.Type != rtcMemberType
}

// LeftForResync reports whether a partial-state room may lack the state
// at k until its resync: members (MSC3706 omits them) and deferredState.
func LeftForResync(k storage.StateKey) bool {
	return k.Type == spec.MRoomMember || deferredState(k)
}

// rtcMemberType is MatrixRTC's call membership (MSC4143), still under
// its unstable name.
const rtcMemberType = "org.matrix.msc3401.call.member"

// checkRestOfState checks the state events of a partial send_join answer
// that the library did not (see partialAnswer), as its CheckStateResponse
// would: each must have a state key and no two the same key (else the
// answer is refused); one that does not parse, is of another room, has a
// bad signature or is not allowed by its auth events (found in the answer)
// is left out. checked are the events the library kept. The deferred
// state (deferredState) is left out of the result unchecked.
func (r *Rooms) checkRestOfState(ctx context.Context, ver gomatrixserverlib.IRoomVersion, roomID string, sent gomatrixserverlib.SendJoinResponse, checked []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	byID := make(map[string]gomatrixserverlib.PDU, len(sent.GetStateEvents())+len(checked))
	keys := map[storage.StateKey]bool{}
	for _, p := range checked {
		byID[p.EventID()] = p
	}
	// The deferred state is neither parsed nor checked now (the resync
	// fetches and checks it); its keys still count against duplicates.
	var raws []json.RawMessage
	for _, raw := range sent.GetStateEvents() {
		if k, ok := rawStateKey(raw); ok {
			if deferredState(k) {
				if keys[k] {
					return nil, fmt.Errorf("two state events for (%s, %s)", k.Type, k.StateKey)
				}
				keys[k] = true
				continue
			}
		}
		raws = append(raws, json.RawMessage(raw))
	}
	parsed, _ := parseAll(ver, raws)
	var rest []gomatrixserverlib.PDU
	for _, p := range parsed {
		if p == nil {
			continue
		}
		k, ok := stateKeyOf(p)
		if !ok {
			return nil, fmt.Errorf("state event %s has no state key", p.EventID())
		}
		if keys[k] {
			return nil, fmt.Errorf("two state events for (%s, %s)", k.Type, k.StateKey)
		}
		keys[k] = true
		if _, done := byID[p.EventID()]; done || p.RoomID().String() != roomID {
			continue
		}
		rest = append(rest, p)
	}
	kept := rest[:0]
	for i, err := range r.verifyAll(ctx, rest) {
		if err != nil {
			r.log.Info("join: dropping a state event with bad signatures", "event", rest[i].EventID(), "err", err)
			continue
		}
		kept = append(kept, rest[i])
	}
	for _, p := range kept {
		byID[p.EventID()] = p
	}
	ok := make([]bool, len(kept))
	inParallel(len(kept), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			var auth []gomatrixserverlib.PDU
			for _, id := range kept[i].AuthEventIDs() {
				if a, found := byID[id]; found {
					auth = append(auth, a)
				}
			}
			provider, err := gomatrixserverlib.NewAuthEvents(auth)
			ok[i] = err == nil && allowed(kept[i], provider) == nil
		}
	})
	out := make([]gomatrixserverlib.PDU, 0, len(kept))
	for i, p := range kept {
		if !ok[i] {
			r.log.Info("join: dropping a state event its auth events do not allow", "event", p.EventID())
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

// resyncer runs the background resyncs of one process.
type resyncer struct {
	mu      sync.Mutex
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	running map[string]bool
	// finishing holds the rooms whose completion this process is writing
	// or telling the hooks of: waiters wait for the hooks too.
	finishing map[string]bool
	// done has a channel per partial room this process waits on, closed
	// when the room's state is complete and the hooks are told.
	done map[string]chan struct{}
	// onComplete is told of each room whose state became complete.
	onComplete []func(StateCompletion)
}

// StateCompletion is what a partial-state room's resync found.
type StateCompletion struct {
	RoomID string
	// Pos is the event stream position eager syncs show the room from.
	Pos int64
	// Servers are those the send_join answer named (servers_in_room).
	Servers []string
	// DeviceListPos is the device-list stream head at the join.
	DeviceListPos int64
	// MembersChanged are the users whose current membership the full
	// state changed (one believed joined may not be, and the other way).
	MembersChanged []string
	// MembersChangedSinceJoin are the users whose membership differs
	// between the full state at the join and the full current state: their
	// servers may have been in the room while the state was partial.
	MembersChangedSinceJoin []string
}

// OnStateComplete registers fn to be told when a partial-state room's
// state is complete (sync wakes its users with it; device lists catch up).
func (r *Rooms) OnStateComplete(fn func(StateCompletion)) {
	r.resync.mu.Lock()
	defer r.resync.mu.Unlock()
	r.resync.onComplete = append(r.resync.onComplete, fn)
}

// StartResyncs resumes the resyncs of the rooms still partial (after a
// restart, or a kill -9 mid-resync) and lets new partial joins start theirs.
func (r *Rooms) StartResyncs(ctx context.Context) error {
	rs := &r.resync
	rs.mu.Lock()
	if rs.cancel == nil {
		rs.ctx, rs.cancel = context.WithCancel(context.WithoutCancel(ctx))
	}
	rs.mu.Unlock()
	pending, err := storage.PendingPartialStateRooms(ctx, r.db.Read())
	if err != nil {
		return err
	}
	for _, p := range pending {
		r.startResync(p.RoomID)
	}
	return nil
}

// StopResyncs stops the background resyncs and waits for them; a stopped
// resync resumes at the next start.
func (r *Rooms) StopResyncs() {
	rs := &r.resync
	rs.mu.Lock()
	cancel := rs.cancel
	rs.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	rs.wg.Wait()
}

// startResync starts the room's resync unless it runs already (or resyncs
// are not started: then the next start resumes it).
func (r *Rooms) startResync(roomID string) {
	rs := &r.resync
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.ctx == nil || rs.ctx.Err() != nil || rs.running[roomID] {
		return
	}
	if rs.running == nil {
		rs.running = map[string]bool{}
	}
	rs.running[roomID] = true
	rs.wg.Add(1)
	ctx := rs.ctx
	go func() {
		defer rs.wg.Done()
		defer func() {
			rs.mu.Lock()
			delete(rs.running, roomID)
			rs.mu.Unlock()
		}()
		wait := time.Second
		for {
			err := r.resyncRoom(ctx, roomID)
			if err == nil || ctx.Err() != nil {
				return
			}
			r.log.Warn("resyncing a partial-state room", "room", roomID, "err", err, "retry_in", wait)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			wait = min(2*wait, time.Minute)
		}
	}()
}

// IsPartialState reports whether the room's state is partial now.
func (r *Rooms) IsPartialState(ctx context.Context, roomID string) (bool, error) {
	return storage.IsPartialState(ctx, r.db.Read(), roomID)
}

// AwaitFullState blocks until the room's state is complete (MSC3902:
// requests that need the remote members wait for the resync), or ctx ends.
func (r *Rooms) AwaitFullState(ctx context.Context, roomID string) error {
	for {
		partial, err := r.IsPartialState(ctx, roomID)
		if err != nil {
			return err
		}
		rs := &r.resync
		rs.mu.Lock()
		if !partial && !rs.finishing[roomID] {
			rs.mu.Unlock()
			return nil
		}
		if rs.done == nil {
			rs.done = map[string]chan struct{}{}
		}
		ch, ok := rs.done[roomID]
		if !ok {
			ch = make(chan struct{})
			rs.done[roomID] = ch
		}
		rs.mu.Unlock()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ch:
		case <-time.After(time.Second): // another process may complete it
		}
	}
}

// resyncRoom fetches the full state before the join from the servers in
// the room, the resident first, and completes the room with it.
func (r *Rooms) resyncRoom(ctx context.Context, roomID string) error {
	ps, err := storage.GetPartialStateRoom(ctx, r.db.Read(), roomID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && ps.CompletedPos != nil) {
		return nil
	}
	if err != nil {
		return err
	}
	join, err := r.Event(ctx, ps.JoinEventID)
	if err != nil {
		return err
	}
	ver, err := r.roomVersion(ctx, r.db.Read(), roomID)
	if err != nil {
		return err
	}
	lastErr := errors.New("no other server to resync from")
	for _, s := range ps.Servers {
		server := spec.ServerName(s)
		if server == r.serverName {
			continue
		}
		st, err := r.fullStateBefore(ctx, server, ver, join)
		if err != nil {
			lastErr = fmt.Errorf("from %s: %w", server, err)
			r.log.Info("resyncing a partial-state room", "room", roomID, "server", server, "err", err)
			continue
		}
		return r.completeState(ctx, roomID, join, st)
	}
	return lastErr
}

// fetchOneByOne is how many missing events are fetched with /event before
// one /state request is cheaper.
const fetchOneByOne = 10

// fullStateBefore asks server for the state before the join: for each of
// its prev events P the state before P (state_ids, then the events we
// lack, by /state or /event), plus P, resolved together. Fetched events are
// checked (signatures, allowed by their auth events) and stored as
// outliers; a rejected one is left out of the state.
func (r *Rooms) fullStateBefore(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.IRoomVersion, join *Event) (State, error) {
	roomID := join.RoomID
	var sets []map[storage.StateKey]string
	for _, prevID := range join.PDU.PrevEventIDs() {
		if p, err := r.knownInDAG(ctx, []string{prevID}); err != nil {
			return nil, err
		} else if ev, ok := p[prevID]; ok {
			s, err := r.snapshotState(ctx, r.db.Read(), ev.SnapshotAfter)
			if err != nil {
				return nil, err
			}
			sets = append(sets, s.state)
			continue
		}
		stateIDs, authIDs, err := r.remote.StateIDsAt(ctx, server, roomID, prevID)
		if err != nil {
			return nil, fmt.Errorf("state_ids at %s: %w", prevID, err)
		}
		need := slices.Concat(stateIDs, authIDs, []string{prevID})
		evs, err := r.fetchChecked(ctx, server, ver, roomID, prevID, need)
		if err != nil {
			return nil, err
		}
		st := map[storage.StateKey]string{}
		for _, id := range append(stateIDs, prevID) {
			if ev, ok := evs[id]; ok && ev.StateKey != nil && !ev.Rejected {
				st[storage.StateKey{Type: ev.Type, StateKey: *ev.StateKey}] = id
			}
		}
		sets = append(sets, st)
	}
	return r.resolveStates(ctx, r.db.Read(), ver, sets)
}

// fetchChecked returns the events of ids, fetching from server (and
// storing as outliers) those we lack; events server cannot produce are
// absent from the result.
func (r *Rooms) fetchChecked(ctx context.Context, server spec.ServerName, ver gomatrixserverlib.IRoomVersion, roomID, at string, ids []string) (map[string]*Event, error) {
	have, err := r.known(ctx, ids)
	if err != nil {
		return nil, err
	}
	wanted := map[string]bool{}
	for _, id := range ids {
		if _, ok := have[id]; !ok {
			wanted[id] = true
		}
	}
	if len(wanted) == 0 {
		return have, nil
	}
	parsed := map[string]gomatrixserverlib.PDU{}
	if sf, ok := r.remote.(StateFetcher); ok && len(wanted) > fetchOneByOne {
		state, chain, err := sf.StateAt(ctx, server, roomID, at)
		if err != nil {
			r.log.Info("resync: /state failed, fetching events one by one", "room", roomID, "server", server, "err", err)
		}
		pdus, _ := parseAll(ver, slices.Concat(state, chain))
		for _, p := range pdus {
			if p != nil && wanted[p.EventID()] {
				parsed[p.EventID()] = p
			}
		}
	}
	var pdus []gomatrixserverlib.PDU
	for id := range wanted {
		p, ok := parsed[id]
		if !ok {
			raw, err := r.remote.Event(ctx, server, id)
			if err != nil {
				r.log.Info("resync: an event is unavailable", "event", id, "server", server, "err", err)
				continue
			}
			if p, err = parsePDU(ver, raw); err != nil || p.EventID() != id {
				r.log.Info("resync: dropping a broken event", "event", id, "server", server, "err", err)
				continue
			}
		}
		if p.RoomID().String() != roomID {
			continue
		}
		pdus = append(pdus, p)
	}
	kept := pdus[:0]
	for i, err := range r.verifyAll(ctx, pdus) {
		if err != nil {
			r.log.Info("resync: dropping an event with bad signatures", "event", pdus[i].EventID(), "err", err)
			continue
		}
		kept = append(kept, pdus[i])
	}
	evs, err := r.storeResyncedOutliers(ctx, kept, have)
	if err != nil {
		return nil, err
	}
	maps.Copy(have, evs)
	return have, nil
}

// completeState makes a partial-state room whole: the join gets the full
// state before it, every later event of the room its state again from its
// prev events (and its auth checked against it: an event the full state
// refuses is rejected now; one rejected by its own auth events stays
// so, one the partial state refused may be accepted), the current state
// is resolved from the forward extremities, and the room is marked
// complete, all in one transaction under the room's lock.
func (r *Rooms) completeState(ctx context.Context, roomID string, join *Event, full State) error {
	unlock := r.locks.lock(roomID)
	defer unlock()
	rs := &r.resync
	rs.mu.Lock()
	if rs.finishing == nil {
		rs.finishing = map[string]bool{}
	}
	rs.finishing[roomID] = true
	rs.mu.Unlock()
	defer func() {
		rs.mu.Lock()
		delete(rs.finishing, roomID)
		if ch, ok := rs.done[roomID]; ok {
			close(ch)
			delete(rs.done, roomID)
		}
		rs.mu.Unlock()
	}()
	var snaps []*snapshot
	var changed []string
	var sc StateCompletion
	done := false
	err := r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		ps, err := storage.GetPartialStateRoom(ctx, tx, roomID)
		if err != nil || ps.CompletedPos != nil || ps.JoinEventID != join.EventID {
			done = err == nil
			return err
		}
		room, err := r.db.LockRoom(ctx, tx, roomID)
		if err != nil {
			return err
		}
		w, err := r.newRoomWrite(ctx, tx, &room)
		if err != nil {
			return err
		}
		joinRow, err := storage.GetEvent(ctx, tx, join.EventID)
		if err != nil {
			return err
		}
		rows, err := storage.RoomEventsFrom(ctx, tx, roomID, joinRow.StreamPos)
		if err != nil {
			return err
		}
		after := map[string]*snapshot{}
		for _, row := range rows {
			ev, err := r.parseEvent(ctx, tx, row)
			if err != nil {
				return err
			}
			var before *snapshot
			if row.EventID == join.EventID {
				if before, err = r.snapshotFor(ctx, tx, roomID, w.cur, full, &w.snaps); err != nil {
					return err
				}
			} else {
				var sets []map[storage.StateKey]string
				var base *snapshot
				for _, p := range ev.PDU.PrevEventIDs() {
					if s, ok := after[p]; ok {
						sets, base = append(sets, s.state), s
					}
				}
				if len(sets) == 0 || len(sets) < len(ev.PDU.PrevEventIDs()) {
					// A prev event before the join or never had (or none:
					// history that get_missing_events brought after the
					// join): the event's state came from elsewhere
					// (state_ids for a hole); it stays.
					s, err := r.snapshotState(ctx, tx, row.SnapshotAfter)
					if err != nil {
						return err
					}
					after[row.EventID] = s
					continue
				}
				st, err := r.resolveStates(ctx, tx, w.ver, sets)
				if err != nil {
					return err
				}
				if before, err = r.snapshotFor(ctx, tx, roomID, base, st, &w.snaps); err != nil {
					return err
				}
			}
			// Checked again whatever it was: an event its own auth
			// events refuse stays rejected, one the partial state
			// refused may be allowed by the full state.
			rejected := row.Rejected
			if row.EventID != join.EventID {
				why, err := r.rejection(ctx, tx, ev.PDU, before.state)
				if err != nil {
					return err
				}
				if rejected = why != ""; rejected {
					r.log.Info("resync: rejecting an event the full state does not allow", "event", row.EventID, "why", why)
				}
			}
			a := before
			if k, ok := stateKeyOf(ev.PDU); ok && !rejected {
				if a, err = r.newSnapshot(ctx, tx, roomID, before, State{k: row.EventID}); err != nil {
					return err
				}
				w.snaps = append(w.snaps, a)
			}
			after[row.EventID] = a
			if before.id != row.SnapshotBefore || a.id != row.SnapshotAfter || rejected != row.Rejected {
				if err := storage.SetEventState(ctx, tx, row.EventID, before.id, a.id, rejected); err != nil {
					return err
				}
				changed = append(changed, row.EventID)
			}
		}
		var sets []map[storage.StateKey]string
		base := w.cur
		for _, id := range room.Extremities {
			s, ok := after[id]
			if !ok {
				row, err := storage.GetEvent(ctx, tx, id)
				if err != nil {
					continue
				}
				if s, err = r.snapshotState(ctx, tx, row.SnapshotAfter); err != nil {
					return err
				}
			}
			sets, base = append(sets, s.state), s
		}
		st, err := r.resolveStates(ctx, tx, w.ver, sets)
		if err != nil {
			return err
		}
		cur, err := r.snapshotFor(ctx, tx, roomID, base, st, &w.snaps)
		if err != nil {
			return err
		}
		sc = StateCompletion{RoomID: roomID, Servers: ps.Servers, DeviceListPos: ps.DeviceListPos,
			MembersChanged:          changedMembers(w.cur.state, cur.state),
			MembersChangedSinceJoin: changedMembers(after[join.EventID].state, cur.state)}
		if err := r.updateCurrentState(ctx, tx, roomID, w.cur.state, cur.state); err != nil {
			return err
		}
		if err := storage.UpdateRoomHead(ctx, tx, roomID, room.Extremities, room.MaxDepth, cur.id); err != nil {
			return err
		}
		// The position eager syncs show the room from: a new one, even
		// when the resync stored nothing.
		if err := r.db.LockEventStream(ctx, tx); err != nil {
			return err
		}
		if sc.Pos, err = storage.TakeStreamPos(ctx, tx, roomID); err != nil {
			return err
		}
		snaps = w.snaps
		return storage.CompletePartialStateRoom(ctx, tx, roomID, sc.Pos)
	})
	if err != nil {
		return fmt.Errorf("completing the state: %w", err)
	}
	if done {
		return nil
	}
	r.cache(nil, snaps)
	if len(changed) > 0 {
		r.ForgetEvents(changed...)
	}
	r.log.Info("the partial-state room is complete", "room", roomID, "state_events", len(full), "events_replaced", len(changed))
	rs.mu.Lock()
	hooks := slices.Clone(rs.onComplete)
	rs.mu.Unlock()
	for _, fn := range hooks {
		fn(sc)
	}
	return nil
}

// changedMembers lists the users whose m.room.member entry differs
// between two states.
func changedMembers(a, b map[storage.StateKey]string) []string {
	var out []string
	for k, id := range b {
		if k.Type == spec.MRoomMember && a[k] != id {
			out = append(out, k.StateKey)
		}
	}
	for k := range a {
		if _, ok := b[k]; k.Type == spec.MRoomMember && !ok {
			out = append(out, k.StateKey)
		}
	}
	slices.Sort(out)
	return out
}

// partialAuthState is the state a live event of a partial-state room is
// checked against (MSC3902): the partial state before it, with the
// event's own auth events for what it lacks (the members, mostly).
func (r *Rooms) partialAuthState(ctx context.Context, q storage.Reader, pdu gomatrixserverlib.PDU, st State) (State, error) {
	auth, err := r.Events(ctx, q, pdu.AuthEventIDs())
	if err != nil {
		return nil, err
	}
	out := st
	cloned := false
	for _, ev := range auth {
		if ev.StateKey == nil || ev.Rejected {
			continue
		}
		k := storage.StateKey{Type: ev.Type, StateKey: *ev.StateKey}
		if _, ok := st[k]; ok {
			continue
		}
		if !cloned {
			out, cloned = State{}, true
			maps.Copy(out, st)
		}
		out[k] = ev.EventID
	}
	return out, nil
}
