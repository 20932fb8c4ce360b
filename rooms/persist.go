package rooms

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/storage"
)

// One road for every event. Whichever way an event reaches us, it is
// persisted by persistEvent, which does each step once; how the event
// arrived decides which steps apply:
//
//	step                        local   live    backfill  outlier  join    out of room
//	already stored: skip        -       in DAG  in DAG    any      in DAG  any
//	auth (own auth events)      (*)     yes     yes       yes      (†)     (‡)
//	auth (state before)         error   yes     yes       -        (†)     (‡)
//	soft fail (current state)   -       yes     -         -        -       -
//	snapshots, prev_content     yes     yes     yes       -        yes     -
//	relation fields             yes     yes     yes       -        yes     -
//	stream position             top     top     below     top      top     top
//	redaction applied           yes     yes     yes       -        -       -
//	search index (timeline)     yes     yes     yes       -        yes     -
//	current state, extremities  head    moved   -         -        reset   own key
//	caches / observers          both    both    cache     -        both    both
//
// (*) a local event's auth events are chosen from the state before it, so
// one check covers both, and a refusal is the sender's error: nothing is
// stored. (†) PerformJoin checked the join against the state it came
// with. (‡) there is no state of the room here to check against.
// Rejected events are stored with their state before but change no state;
// soft-failed ones get their state after but are neither extremities nor
// current state (server-server API, Checks performed on receipt of a PDU).
//
// Differences the old separate roads had that were not kept: outliers and
// out-of-room memberships now take the event stream lock like every other
// insert (a reader could otherwise see their stream position before a
// lower one committed), a live event that becomes the only extremity makes
// its state after the current state instead of copying it into a new
// snapshot, and a join's stub room row records when it was made.

// arrival is how an event reached this server.
type arrival int

const (
	// arriveLocal: built here by a local user's send on the room's head.
	arriveLocal arrival = iota
	// arriveLive: a remote event placed in the DAG (pushed, pulled to fill
	// a hole, our invite signed by the invitee's server, a join another
	// server authorised): it may move the room's head and current state.
	arriveLive
	// arriveBackfill: remote history before the start of our copy: below
	// everything sync has handed out, with the state before it, touching
	// neither current state nor forward extremities nor observers.
	arriveBackfill
	// arriveOutlier: an auth or state event fetched on its own, checked
	// against its own auth events; no state, not in the timeline.
	arriveOutlier
	// arriveJoin: the join of a send_join answer, our first event of the
	// room, with the room's state and auth chain stored as outliers.
	arriveJoin
	// arriveOutOfRoom: a local user's membership of a room we are not in
	// (an invite received, a knock sent, a leave that ends either): an
	// outlier with a stream position, so sync shows it, and the user's
	// membership in current state.
	arriveOutOfRoom
)

// inDAG reports whether events arriving this way are placed in the room's
// DAG, with a state before and after them.
func (a arrival) inDAG() bool {
	return a == arriveLocal || a == arriveLive || a == arriveBackfill || a == arriveJoin
}

// incoming is an event on its way to persistEvent.
type incoming struct {
	arrival arrival
	pdu     gomatrixserverlib.PDU
	// prevs are the event's prev events held in the DAG (live, backfill);
	// stateBefore, when not nil, is the state before the event instead of
	// what their states resolve to: prev events are missing, or it is the
	// state a send_join answer gave.
	prevs       map[string]*Event
	stateBefore State
	// joinState is a send_join answer's state and auth chain, each event
	// after its auth events.
	joinState []gomatrixserverlib.PDU
	// stripped is the state shown with an out-of-room invite or knock.
	stripped []byte
	// version is the room's version when the event may be the first we
	// hear of the room (join, out of room); pdu.Version() is the base
	// version for MSC3757 rooms (owned.go).
	version gomatrixserverlib.RoomVersion
	// partialServers, for a join whose answer omitted the members
	// (MSC3706), are the servers to resync the room's state from, the
	// resident first (partial_state.go).
	partialServers []string
	// device and txnID record a local send's transaction.
	device, txnID *string
	// policyRefused: the room's policy server did not sign the event
	// (check 7), which soft-fails a live one.
	policyRefused bool
}

// roomWrite is a room while events are persisted in one transaction: its
// locked row and head (updated in place), the state after the head, and
// the events and snapshots written so far, for the caches and observers
// once committed. Outliers are written without the room (room is nil).
type roomWrite struct {
	room     *storage.Room
	ver      gomatrixserverlib.IRoomVersion
	cur      *snapshot
	pending  map[string]*Event
	appended []*Event
	snaps    []*snapshot
	now      time.Time
	// streamLocked: the transaction holds the event stream lock.
	streamLocked bool
	// headMoved: room's extremities or current state changed; the caller
	// stores the head once for the transaction.
	headMoved bool
	// partial: the room's state is partial (MSC3902), known for live
	// events only.
	partial bool
}

// newRoomWrite starts writing events to a room whose row the transaction
// has locked (or just inserted).
func (r *Rooms) newRoomWrite(ctx context.Context, tx *sql.Tx, room *storage.Room) (*roomWrite, error) {
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
	if err != nil {
		return nil, err
	}
	cur, err := r.snapshotState(ctx, tx, room.CurrentSnapshot)
	if err != nil {
		return nil, err
	}
	return &roomWrite{room: room, ver: ver, cur: cur, pending: map[string]*Event{}, now: time.Now()}, nil
}

// writeMark is what restore needs to undo the writes after it.
type writeMark struct {
	room                    storage.Room
	cur                     *snapshot
	appended, snapsLen      int
	streamLocked, headMoved bool
}

func (w *roomWrite) save() writeMark {
	return writeMark{room: *w.room, cur: w.cur, appended: len(w.appended), snapsLen: len(w.snaps),
		streamLocked: w.streamLocked, headMoved: w.headMoved}
}

// restore forgets the events written since m, whose rows were rolled back
// to a savepoint (with any lock taken after it).
func (w *roomWrite) restore(m writeMark) {
	*w.room, w.cur = m.room, m.cur
	for _, ev := range w.appended[m.appended:] {
		delete(w.pending, ev.EventID)
	}
	w.appended, w.snaps = w.appended[:m.appended], w.snaps[:m.snapsLen]
	w.streamLocked, w.headMoved = m.streamLocked, m.headMoved
}

// persist stores one event that arrived on its own, in its own
// transaction under the room's lock, then hands it to the caches and
// observers as its arrival calls for. It returns the event as stored, or
// the stored copy when we already had it.
func (r *Rooms) persist(ctx context.Context, in incoming) (*Event, error) {
	roomID := in.pdu.RoomID().String()
	if in.arrival != arriveOutlier {
		// An outlier touches nothing of the room but its own row.
		unlock := r.locks.lock(roomID)
		defer unlock()
	}
	var w *roomWrite
	var ev *Event
	err := r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		var err error
		if w, err = r.beginWrite(ctx, tx, roomID, in); err != nil {
			return err
		}
		if ev, err = r.persistEvent(ctx, tx, w, in); err != nil {
			return err
		}
		if in.arrival != arriveOutlier && in.arrival != arriveBackfill {
			if err := r.runTxHook(ctx, tx, w.appended); err != nil {
				return err
			}
		}
		if !w.headMoved {
			return nil
		}
		return storage.UpdateRoomHead(ctx, tx, roomID, w.room.Extremities, w.room.MaxDepth, w.room.CurrentSnapshot)
	})
	if in.arrival == arriveOutlier && errors.Is(err, storage.ErrConflict) {
		return nil, nil // stored meanwhile by another fetch of it
	}
	if err != nil {
		return nil, err
	}
	switch {
	case ev == nil && in.arrival == arriveOutlier:
		return nil, nil
	case ev == nil:
		return r.Event(ctx, in.pdu.EventID())
	case in.arrival == arriveBackfill:
		r.cache(w.appended, w.snaps)
	case in.arrival != arriveOutlier:
		r.committed(w.appended, w.snaps)
	}
	return ev, nil
}

// beginWrite locks the room of an event that arrived on its own. A join
// or an out-of-room membership may be the first we hear of the room: it
// gets a stub row.
func (r *Rooms) beginWrite(ctx context.Context, tx *sql.Tx, roomID string, in incoming) (*roomWrite, error) {
	if in.arrival == arriveOutlier {
		return &roomWrite{pending: map[string]*Event{}, now: time.Now()}, nil
	}
	room, err := r.db.LockRoom(ctx, tx, roomID)
	if errors.Is(err, storage.ErrNotFound) && (in.arrival == arriveJoin || in.arrival == arriveOutOfRoom) {
		v := in.version
		if v == "" {
			v = in.pdu.Version()
		}
		room = storage.Room{RoomID: roomID, Version: string(v), Extremities: []string{}, CreatedTS: time.Now().UnixMilli()}
		err = storage.InsertRoom(ctx, tx, room)
	}
	if err != nil {
		return nil, err
	}
	w, err := r.newRoomWrite(ctx, tx, &room)
	if err == nil && in.arrival == arriveLive {
		w.partial, err = storage.IsPartialState(ctx, tx, roomID)
	}
	return w, err
}

// persistEvent is the one road: it authorises an event, works out the
// state before and after it, stores it with its stream position, applies
// it (redaction, current state, the room's head) and records it in w for
// the caches and observers, each step as in.arrival calls for (see the
// table above). It returns nil when the event was already stored. An
// event the auth rules refuse is stored as rejected, except a local one,
// which is an error.
func (r *Rooms) persistEvent(ctx context.Context, tx *sql.Tx, w *roomWrite, in incoming) (*Event, error) {
	pdu, a := in.pdu, in.arrival
	roomID := pdu.RoomID().String()
	if a != arriveLocal {
		// Stored already: nothing to do, unless it is held as an outlier
		// and now placed in the DAG (promoted: its row is replaced).
		existing, err := storage.GetEvent(ctx, tx, pdu.EventID())
		if err == nil && (!existing.Outlier || !a.inDAG()) {
			return nil, nil
		}
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
	}
	if a == arriveJoin {
		// First: the join's prev_content and snapshots name these.
		rows := make([]storage.Event, len(in.joinState))
		for i, p := range in.joinState {
			rows[i] = eventRow(p)
		}
		if err := storage.InsertOutliers(ctx, tx, rows); err != nil {
			return nil, err
		}
		if in.partialServers != nil {
			if err := storage.PutPartialStateRoom(ctx, tx, roomID, pdu.EventID(), in.partialServers, time.Now().UnixMilli()); err != nil {
				return nil, err
			}
		}
	}
	_, sentJoin := r.sentJoins.Load(pdu.EventID())
	ev := &Event{PDU: pdu, Event: eventRow(pdu), Distributed: a == arriveJoin || sentJoin}
	ev.SenderDevice, ev.TxnID = in.device, in.txnID
	ev.Outlier = !a.inDAG()

	var before, after *snapshot
	if a.inDAG() {
		var err error
		if before, err = r.stateBefore(ctx, tx, w, in); err != nil {
			return nil, fmt.Errorf("state before %s: %w", pdu.EventID(), err)
		}
		after = before
	}
	if err := r.authorise(ctx, tx, w, a, ev, before); err != nil {
		return nil, err
	}
	if in.policyRefused && a == arriveLive && !ev.Rejected {
		ev.SoftFailed = true
	}
	if a.inDAG() {
		ev.SnapshotBefore, ev.SnapshotAfter = before.id, before.id
		if k, ok := stateKeyOf(pdu); ok && !ev.Rejected {
			if old, ok := before.state[k]; ok {
				if err := r.fillPrevState(ctx, tx, ev, old, w.pending); err != nil {
					return nil, err
				}
			}
			var err error
			if after, err = r.newSnapshot(ctx, tx, roomID, before, State{k: ev.EventID}); err != nil {
				return nil, err
			}
			w.snaps = append(w.snaps, after)
			ev.SnapshotAfter = after.id
		}
		fillRelation(ev)
	}

	if a.inDAG() && a != arriveLocal {
		if err := storage.DeleteOutlier(ctx, tx, pdu.EventID()); err != nil {
			return nil, err
		}
	}
	if !w.streamLocked {
		if err := r.db.LockEventStream(ctx, tx); err != nil {
			return nil, err
		}
		w.streamLocked = true
	}
	var err error
	if a == arriveBackfill {
		ev.StreamPos, err = storage.InsertHistoricalEvent(ctx, tx, ev.Event)
	} else {
		ev.StreamPos, err = storage.InsertEvent(ctx, tx, ev.Event)
	}
	if err != nil {
		return nil, err
	}
	if err := r.db.IndexForSearch(ctx, tx, ev.Event); err != nil {
		return nil, err
	}

	if pdu.Type() == spec.MRoomRedaction && pdu.Redacts() != "" && a.inDAG() && !ev.Rejected && !ev.SoftFailed {
		if err := r.applyRedaction(ctx, tx, roomID, pdu, w.pending); err != nil {
			return nil, err
		}
	}
	switch {
	case a == arriveOutOfRoom:
		user := *pdu.StateKey()
		if err := storage.SetCurrentState(ctx, tx, roomID, storage.StateKey{Type: spec.MRoomMember, StateKey: user}, ev.EventID, ev.Membership); err != nil {
			return nil, err
		}
		if in.stripped != nil {
			if err := storage.PutRemoteInvite(ctx, tx, roomID, user, ev.EventID, in.stripped); err != nil {
				return nil, err
			}
		}
	case a == arriveLocal || a == arriveLive || a == arriveJoin:
		if !ev.Rejected && !ev.SoftFailed {
			if err := r.advanceHead(ctx, tx, w, a, ev, after); err != nil {
				return nil, err
			}
		}
	}
	w.pending[ev.EventID] = ev
	w.appended = append(w.appended, ev)
	return ev, nil
}

// eventRow fills the columns the PDU itself gives.
func eventRow(pdu gomatrixserverlib.PDU) storage.Event {
	row := storage.Event{
		EventID: pdu.EventID(), RoomID: pdu.RoomID().String(), Type: pdu.Type(), StateKey: pdu.StateKey(),
		Sender: string(pdu.SenderID()), Depth: pdu.Depth(), OriginTS: int64(pdu.OriginServerTS()), JSON: pdu.JSON(),
	}
	if pdu.Type() == spec.MRoomMember {
		if m, err := pdu.Membership(); err == nil {
			row.Membership = &m
		}
	}
	return row
}

func stateKeyOf(pdu gomatrixserverlib.PDU) (storage.StateKey, bool) {
	if pdu.StateKey() == nil {
		return storage.StateKey{}, false
	}
	return storage.StateKey{Type: pdu.Type(), StateKey: *pdu.StateKey()}, true
}

// stateBefore is the snapshot of the state before an event placed in the
// DAG: the head for a local event, else what the states after its prev
// events resolve to, or the state it came with. An unchanged state reuses
// its snapshot; a new one is a delta on a prev event's or the head's.
func (r *Rooms) stateBefore(ctx context.Context, tx *sql.Tx, w *roomWrite, in incoming) (*snapshot, error) {
	if in.arrival == arriveLocal {
		return w.cur, nil
	}
	base, st := w.cur, in.stateBefore
	if st == nil {
		var sets []map[storage.StateKey]string
		for _, p := range in.prevs {
			// Read again under the room's lock: a partial-state room's
			// resync may have given the prev event its full state since
			// it was looked up (partial_state.go).
			row, err := storage.GetEvent(ctx, tx, p.EventID)
			if err != nil {
				return nil, err
			}
			s, err := r.snapshotState(ctx, tx, row.SnapshotAfter)
			if err != nil {
				return nil, err
			}
			sets = append(sets, s.state)
			base = s
		}
		var err error
		if st, err = r.resolveStates(ctx, tx, w.ver, sets); err != nil {
			return nil, fmt.Errorf("resolving: %w", err)
		}
	}
	if w.partial {
		// MSC3902: what the partial state lacks comes from the event's
		// auth events, until the resync places it again.
		var err error
		if st, err = r.partialAuthState(ctx, tx, in.pdu, st); err != nil {
			return nil, err
		}
	}
	return r.snapshotFor(ctx, tx, w.room.RoomID, base, st, &w.snaps)
}

// authorise applies the checks on receipt of a PDU that its arrival
// calls for, marking ev rejected or soft-failed (see the table above).
func (r *Rooms) authorise(ctx context.Context, tx *sql.Tx, w *roomWrite, a arrival, ev *Event, before *snapshot) error {
	pdu := ev.PDU
	switch a {
	case arriveLocal:
		p, err := r.stateProvider(ctx, tx, before.state, pdu, w.pending)
		if err != nil {
			return fmt.Errorf("loading auth events: %w", err)
		}
		if err := allowed(pdu, p); err != nil {
			return authError(err)
		}
		return nil
	case arriveLive, arriveBackfill, arriveOutlier:
		var st map[storage.StateKey]string
		if before != nil {
			st = before.state
		}
		why, err := r.rejection(ctx, tx, pdu, st)
		if err != nil {
			return err
		}
		if why != "" {
			ev.Rejected = true
			r.log.Info("rejecting a remote event", "event", pdu.EventID(), "why", why)
			return nil
		}
	}
	if a == arriveLive && !w.partial {
		// Check 6 (MSC3902: not while the state is partial): the current state allows it, else it is soft-failed:
		// kept in the DAG but not shown, and not an extremity.
		p, err := r.stateProvider(ctx, tx, w.cur.state, pdu, w.pending)
		if err != nil {
			return err
		}
		ev.SoftFailed = allowed(pdu, p) != nil
	}
	return nil
}

// rejection applies checks 4 and 5 of the checks on receipt of a PDU: the
// event's own auth events (none of them rejected) allow it, and so does
// stateBefore unless it is nil. It says why the event is rejected, or ""
// when it is not.
func (r *Rooms) rejection(ctx context.Context, q storage.Reader, pdu gomatrixserverlib.PDU, stateBefore map[storage.StateKey]string) (string, error) {
	authEvs, err := r.Events(ctx, q, pdu.AuthEventIDs())
	if err != nil {
		return "", err
	}
	if len(authEvs) < len(pdu.AuthEventIDs()) {
		return "some of its auth events are unavailable", nil
	}
	var auth []gomatrixserverlib.PDU
	for _, ev := range authEvs {
		// Auth rules, "Considering the event's auth_events".
		if ev.Rejected {
			return "its auth event " + ev.EventID + " is rejected", nil
		}
		auth = append(auth, ev.PDU)
	}
	p, err := gomatrixserverlib.NewAuthEvents(auth)
	if err != nil {
		return "its auth events are invalid: " + err.Error(), nil
	}
	if err := allowed(pdu, p); err != nil {
		return "its auth events do not allow it: " + err.Error(), nil
	}
	if stateBefore == nil {
		return "", nil
	}
	sp, err := r.stateProvider(ctx, q, stateBefore, pdu, nil)
	if err != nil {
		return "", err
	}
	if err := allowed(pdu, sp); err != nil {
		return "the state before it does not allow it: " + err.Error(), nil
	}
	return "", nil
}

// advanceHead makes an accepted event part of the room's head. A local
// event (built on the head) and a join (our first event of the room)
// become the only extremity, their state after the current state. A live
// event replaces the extremities it cites; when others remain, the
// states after all of them are resolved into the current state.
func (r *Rooms) advanceHead(ctx context.Context, tx *sql.Tx, w *roomWrite, a arrival, ev *Event, after *snapshot) error {
	roomID, pdu := w.room.RoomID, ev.PDU
	ext := []string{ev.EventID}
	if a == arriveLive {
		for _, id := range w.room.Extremities {
			if !slices.Contains(pdu.PrevEventIDs(), id) {
				ext = append(ext, id)
			}
		}
	}
	cur := after
	if len(ext) > 1 {
		sets := []map[storage.StateKey]string{after.state}
		others, err := r.Events(ctx, tx, ext[1:])
		if err != nil {
			return err
		}
		for _, id := range ext[1:] {
			if x, ok := others[id]; ok {
				s, err := r.snapshotState(ctx, tx, x.SnapshotAfter)
				if err != nil {
					return err
				}
				sets = append(sets, s.state)
			}
		}
		st, err := r.resolveStates(ctx, tx, w.ver, sets)
		if err != nil {
			return fmt.Errorf("resolving the current state: %w", err)
		}
		if cur, err = r.snapshotFor(ctx, tx, roomID, w.cur, st, &w.snaps); err != nil {
			return err
		}
	}
	if a == arriveLocal {
		// On top of the head: only the event's own key changes.
		if k, ok := stateKeyOf(pdu); ok {
			if err := storage.SetCurrentState(ctx, tx, roomID, k, ev.EventID, ev.Membership); err != nil {
				return err
			}
		}
	} else if err := r.updateCurrentState(ctx, tx, roomID, w.cur.state, cur.state); err != nil {
		return err
	}
	w.room.Extremities, w.room.MaxDepth, w.room.CurrentSnapshot = ext, max(w.room.MaxDepth, pdu.Depth()), cur.id
	w.cur, w.headMoved = cur, true
	return nil
}

// storeResyncedOutliers stores the events a resync of a partial-state room
// fetched (partial_state.go), signatures checked: outliers, each checked
// against its auth events (found among them or in have) in auth order and
// stored rejected when they refuse it, all in one transaction.
func (r *Rooms) storeResyncedOutliers(ctx context.Context, pdus []gomatrixserverlib.PDU, have map[string]*Event) (map[string]*Event, error) {
	ordered := authOrder(pdus)
	out := make(map[string]*Event, len(ordered))
	rows := make([]storage.Event, 0, len(ordered))
	for _, p := range ordered {
		ev := &Event{PDU: p, Event: eventRow(p)}
		ev.Outlier = true
		var auth []gomatrixserverlib.PDU
		for _, id := range p.AuthEventIDs() {
			a, ok := out[id]
			if !ok {
				a, ok = have[id]
			}
			if !ok || a.Rejected {
				ev.Rejected = true
				break
			}
			auth = append(auth, a.PDU)
		}
		if !ev.Rejected {
			provider, err := gomatrixserverlib.NewAuthEvents(auth)
			ev.Rejected = err != nil || allowed(p, provider) != nil
		}
		if ev.Rejected {
			r.log.Info("resync: a fetched state event is rejected", "event", p.EventID())
		}
		out[p.EventID()] = ev
		rows = append(rows, ev.Event)
	}
	if len(rows) == 0 {
		return out, nil
	}
	err := r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if err := r.db.LockEventStream(ctx, tx); err != nil {
			return err
		}
		return storage.InsertOutliers(ctx, tx, rows)
	})
	return out, err
}
