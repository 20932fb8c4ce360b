package rooms

import (
	"context"
	"database/sql"
	"maps"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/storage"
)

// maxChainLen bounds a snapshot's delta chain: every maxChainLen-th state
// change in a room stores the full state, so loading any snapshot reads at
// most maxChainLen+1 small deltas, and storage grows by one row per state
// event plus a full copy per maxChainLen of them.
const maxChainLen = 48

// State is a room's state at some point: (type, state_key) → event ID.
type State map[storage.StateKey]string

// snapshotState returns the state of a snapshot (cached; do not modify).
func (r *Rooms) snapshotState(ctx context.Context, q storage.Reader, id int64) (*snapshot, error) {
	if s, ok := r.snapshots.get(id); ok {
		return s, nil
	}
	// A snapshot is a delta on its parent, up to 48 deep: when an ancestor
	// is cached, only the deltas after it are read (a big room's new
	// snapshot is then a copy and a few rows, not tens of thousands).
	var chain []int64
	var info storage.SnapshotInfo
	if id != 0 {
		var err error
		if chain, info, err = storage.SnapshotChain(ctx, q, id); err != nil {
			return nil, err
		}
	}
	var state map[storage.StateKey]string
	for i, anc := range chain[min(1, len(chain)):] {
		if base, ok := r.snapshots.get(anc); ok {
			state = maps.Clone(base.state)
			if err := storage.ApplySnapshotDeltas(ctx, q, chain[:i+1], state); err != nil {
				return nil, err
			}
			break
		}
	}
	if state == nil {
		var err error
		if state, info, err = storage.LoadSnapshot(ctx, q, id); err != nil {
			return nil, err
		}
	}
	s := &snapshot{id: id, info: info, state: state}
	if q == storage.Reader(r.db.Read()) {
		r.snapshots.put(id, s)
	}
	return s, nil
}

// StateAt returns a copy of the state of a snapshot.
func (r *Rooms) StateAt(ctx context.Context, snapshotID int64) (State, error) {
	s, err := r.snapshotState(ctx, r.db.Read(), snapshotID)
	if err != nil {
		return nil, err
	}
	return maps.Clone(State(s.state)), nil
}

// StateIDsAt is StateAt for the given keys only (absent keys are left
// out), without copying the rest.
func (r *Rooms) StateIDsAt(ctx context.Context, snapshotID int64, keys ...storage.StateKey) (State, error) {
	s, err := r.snapshotState(ctx, r.db.Read(), snapshotID)
	if err != nil {
		return nil, err
	}
	out := State{}
	for _, k := range keys {
		if id, ok := s.state[k]; ok {
			out[k] = id
		}
	}
	return out, nil
}

// CurrentState returns a copy of a room's current state.
func (r *Rooms) CurrentState(ctx context.Context, roomID string) (State, error) {
	room, err := storage.GetRoom(ctx, r.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	return r.StateAt(ctx, room.CurrentSnapshot)
}

// CurrentStateID is the event ID of one key of the room's current state,
// or "" when it has none: a point lookup, where CurrentState copies the
// whole state (tens of thousands of entries in a big room).
func (r *Rooms) CurrentStateID(ctx context.Context, roomID string, k storage.StateKey) (string, error) {
	return storage.CurrentStateEventID(ctx, r.db.Read(), roomID, k.Type, k.StateKey)
}

// CurrentStateIDs is CurrentStateID for several keys (one indexed lookup each).
func (r *Rooms) CurrentStateIDs(ctx context.Context, roomID string, keys ...storage.StateKey) (State, error) {
	return storage.CurrentStateEventIDs(ctx, r.db.Read(), roomID, keys...)
}

// CurrentStateOfType is the part of the room's current state of one event
// type (m.space.child, say), read without the rest.
func (r *Rooms) CurrentStateOfType(ctx context.Context, roomID, eventType string) (State, error) {
	byKey, err := storage.RoomStateOfType(ctx, r.db.Read(), roomID, eventType)
	if err != nil {
		return nil, err
	}
	st := make(State, len(byKey))
	for k, id := range byKey {
		st[storage.StateKey{Type: eventType, StateKey: k}] = id
	}
	return st, nil
}

// StateEvents loads the events of a state.
func (r *Rooms) StateEvents(ctx context.Context, st State) ([]*Event, error) {
	ids := make([]string, 0, len(st))
	for _, id := range st {
		ids = append(ids, id)
	}
	evs, err := r.Events(ctx, r.db.Read(), ids)
	if err != nil {
		return nil, err
	}
	out := make([]*Event, 0, len(evs))
	for _, id := range ids {
		if ev, ok := evs[id]; ok {
			out = append(out, ev)
		}
	}
	return out, nil
}

// newSnapshot stores the state after applying changes to parent and returns
// its ID. The caller must add it to the cache only after commit.
func (r *Rooms) newSnapshot(ctx context.Context, tx *sql.Tx, roomID string, parent *snapshot, changes State) (*snapshot, error) {
	full := maps.Clone(parent.state)
	if full == nil {
		full = map[storage.StateKey]string{}
	}
	maps.Copy(full, changes)
	var id int64
	var err error
	info := storage.SnapshotInfo{Parent: parent.id, ChainLen: parent.info.ChainLen + 1}
	if parent.id == 0 || info.ChainLen > maxChainLen {
		info = storage.SnapshotInfo{}
		id, err = storage.InsertSnapshot(ctx, tx, roomID, 0, 0, full)
	} else {
		id, err = storage.InsertSnapshot(ctx, tx, roomID, parent.id, info.ChainLen, changes)
	}
	if err != nil {
		return nil, err
	}
	return &snapshot{id: id, info: info, state: full}, nil
}

// authProvider loads the events of st that an event's auth needs.
func (r *Rooms) authProvider(ctx context.Context, q storage.Reader, st map[storage.StateKey]string, proto *gomatrixserverlib.ProtoEvent, pending map[string]*Event) (*gomatrixserverlib.AuthEvents, error) {
	needed, err := gomatrixserverlib.StateNeededForProtoEvent(proto)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, t := range needed.Tuples() {
		if id, ok := st[storage.StateKey{Type: t.EventType, StateKey: t.StateKey}]; ok {
			ids = append(ids, id)
		}
	}
	return r.authEventsFor(ctx, q, ids, pending)
}

// authEventsFor builds an auth provider from event IDs, taking events
// created earlier in the same (uncommitted) batch from pending.
func (r *Rooms) authEventsFor(ctx context.Context, q storage.Reader, ids []string, pending map[string]*Event) (*gomatrixserverlib.AuthEvents, error) {
	var load []string
	var pdus []gomatrixserverlib.PDU
	for _, id := range ids {
		if ev, ok := pending[id]; ok {
			pdus = append(pdus, ev.PDU)
		} else {
			load = append(load, id)
		}
	}
	evs, err := r.Events(ctx, q, load)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		pdus = append(pdus, ev.PDU)
	}
	return gomatrixserverlib.NewAuthEvents(pdus)
}
