package rooms

import (
	"context"
	"fmt"
	"slices"

	"github.com/hearth-matrix/hearth/storage"
)

// Page reads up to limit timeline events of a room from a boundary in
// topological order, and reports whether the end of the timeline in that
// direction was reached.
func (r *Rooms) Page(ctx context.Context, roomID string, from TopoToken, backwards bool, limit int) ([]*Event, bool, error) {
	return r.page(ctx, roomID, from, backwards, limit, true)
}

// PageLocal is Page without asking other servers for history (backfill):
// for a position in what we hold already (/members?at=).
func (r *Rooms) PageLocal(ctx context.Context, roomID string, from TopoToken, backwards bool, limit int) ([]*Event, bool, error) {
	return r.page(ctx, roomID, from, backwards, limit, false)
}

func (r *Rooms) page(ctx context.Context, roomID string, from TopoToken, backwards bool, limit int, fill bool) ([]*Event, bool, error) {
	rows, err := storage.RoomEventsTopological(ctx, r.db.Read(), roomID, from.Depth, from.Pos, from.Stream, backwards, limit)
	if err != nil {
		return nil, false, err
	}
	if backwards && fill && r.members != nil {
		// Holes in our copy: before the page's events (a join over
		// federation, a rejoin after a while away) or, at its start, before
		// the earliest events. Ask a server in the room for what lies
		// there, then read again.
		evs, err := r.fromRows(ctx, rows)
		if err != nil {
			return nil, false, err
		}
		// The event at the boundary too: sync's prev_batch sits just
		// before the first event after a hole.
		at, err := storage.RoomEventsTopological(ctx, r.db.Read(), roomID, from.Depth, from.Pos, from.Stream, false, 1)
		if err != nil {
			return nil, false, err
		}
		atEvs, err := r.fromRows(ctx, at)
		if err != nil {
			return nil, false, err
		}
		missing, err := r.missingPrevs(ctx, append(atEvs, evs...))
		if err != nil {
			return nil, false, err
		}
		if len(rows) < limit {
			earliest, err := r.backwardExtremities(ctx, roomID)
			if err != nil {
				return nil, false, err
			}
			missing = append(missing, earliest...)
		}
		if len(missing) > 0 {
			added, err := r.backfillRemote(ctx, roomID, missing, limit)
			if err != nil {
				r.log.Warn("backfill", "room", roomID, "err", err)
			}
			if added {
				if rows, err = storage.RoomEventsTopological(ctx, r.db.Read(), roomID, from.Depth, from.Pos, from.Stream, backwards, limit); err != nil {
					return nil, false, err
				}
			}
		}
	}
	out, err := r.fromRows(ctx, rows)
	return out, len(rows) < limit, err
}

// fromRows turns committed rows into Events, through the cache.
func (r *Rooms) fromRows(ctx context.Context, rows []storage.Event) ([]*Event, error) {
	out := make([]*Event, 0, len(rows))
	for _, row := range rows {
		ev, ok := r.pdus.get(row.EventID)
		if !ok || ev.RedactedBy == nil && row.RedactedBy != nil {
			var err error
			if ev, err = r.parseEvent(ctx, r.db.Read(), row); err != nil {
				return nil, err
			}
			r.pdus.put(row.EventID, ev)
		}
		out = append(out, ev)
	}
	return out, nil
}

// End returns the boundary after the newest event of a room.
func (r *Rooms) End(ctx context.Context, roomID string) (TopoToken, error) {
	room, err := storage.GetRoom(ctx, r.db.Read(), roomID)
	if err != nil {
		return TopoToken{}, err
	}
	return TopoToken{Depth: room.MaxDepth + 1}, nil
}

// Recent returns up to limit timeline events of a room with stream
// positions in (from, to], oldest first, and whether more were left out.
// Every event up to to must be committed (to is a sync's position, or a
// committed event's): the answer is shared by the syncs asking the same
// (see cache.go).
func (r *Rooms) Recent(ctx context.Context, roomID string, from, to int64, limit int) ([]*Event, bool, error) {
	key := recentKey{roomID, from, to, limit}
	gen := r.sharedGen.Load()
	if r.recents != nil {
		if e, ok := r.recents.get(key); ok && e.gen == gen {
			return slices.Clone(e.evs), e.limited, nil
		}
	}
	if r.recents == nil {
		return r.recent(ctx, roomID, from, to, limit)
	}
	// The syncs missing the same range at once (a room's members woken
	// together) wait for one reading.
	v, err, _ := r.flights.Do(fmt.Sprintf("recent\x00%s\x00%d\x00%d\x00%d\x00%d", roomID, from, to, limit, gen), func() (any, error) {
		// Not the first caller's context: the others wait on this read.
		evs, limited, err := r.recent(context.WithoutCancel(ctx), roomID, from, to, limit)
		if err != nil {
			return nil, err
		}
		e := recentEntry{gen, evs, limited}
		r.recents.put(key, e)
		return e, nil
	})
	if err != nil {
		return nil, false, err
	}
	e := v.(recentEntry)
	return slices.Clone(e.evs), e.limited, nil
}

func (r *Rooms) recent(ctx context.Context, roomID string, from, to int64, limit int) ([]*Event, bool, error) {
	rows, err := storage.RoomEventsStream(ctx, r.db.Read(), roomID, from, to, limit+1)
	if err != nil {
		return nil, false, err
	}
	limited := len(rows) > limit
	if limited {
		rows = rows[:limit]
	}
	for i, j := 0, len(rows)-1; i < j; i, j = i+1, j-1 {
		rows[i], rows[j] = rows[j], rows[i]
	}
	evs, err := r.fromRows(ctx, rows)
	if err != nil {
		return nil, false, err
	}
	// A hole in our copy (a remote event persisted without its prev
	// events: get_missing_events did not reach back far enough) ends what
	// sync may show as contiguous: the timeline starts after the latest
	// one and is limited, so the client paginates back from prev_batch
	// and /messages backfills the hole.
	gap, err := r.latestGap(ctx, evs)
	if err != nil {
		return nil, false, err
	}
	if gap >= 0 {
		evs, limited = evs[gap:], true
	}
	return evs, limited, nil
}

// latestGap returns the index of the last of evs (oldest first) with a
// prev event we lack in the DAG, or -1. Prev events are mostly recent and
// cached, so this rarely reads the store.
func (r *Rooms) latestGap(ctx context.Context, evs []*Event) (int, error) {
	if len(evs) == 0 {
		return -1, nil
	}
	inPage := make(map[string]bool, len(evs))
	for _, ev := range evs {
		inPage[ev.EventID] = true
	}
	var prevs []string
	for _, ev := range evs {
		for _, id := range ev.PDU.PrevEventIDs() {
			if !inPage[id] {
				prevs = append(prevs, id)
			}
		}
	}
	have, err := r.knownInDAG(ctx, prevs)
	if err != nil {
		return -1, err
	}
	for i := len(evs) - 1; i >= 0; i-- {
		for _, id := range evs[i].PDU.PrevEventIDs() {
			if _, ok := have[id]; !ok && !inPage[id] {
				return i, nil
			}
		}
	}
	return -1, nil
}

// SnapshotAtStream returns the state of a room as of stream position pos.
func (r *Rooms) SnapshotAtStream(ctx context.Context, roomID string, pos int64) (State, error) {
	id, err := storage.SnapshotAtStream(ctx, r.db.Read(), roomID, pos)
	if err != nil {
		return nil, err
	}
	return r.StateAt(ctx, id)
}

// TokenAtStream converts a stream position into a pagination boundary: just
// after the room's last timeline event at or before pos.
func (r *Rooms) TokenAtStream(ctx context.Context, roomID string, pos int64) (TopoToken, error) {
	rows, err := storage.RoomEventsStream(ctx, r.db.Read(), roomID, 0, pos, 1)
	if err != nil || len(rows) == 0 {
		return TopoToken{}, err
	}
	return TopoToken{Depth: rows[0].Depth, Pos: rows[0].StreamPos + 1}, nil
}
