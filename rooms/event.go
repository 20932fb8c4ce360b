package rooms

import (
	"context"
	"fmt"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/storage"
)

// Event is a persisted event: its row and its parsed PDU. When the event has
// been redacted, PDU is the redacted form. Events are shared between
// goroutines and must not be mutated.
type Event struct {
	storage.Event
	PDU gomatrixserverlib.PDU
	// Distributed marks a local event another server already sends to the
	// room (our joins: the resident server answering send_join does), so
	// our federation queue need not. Not stored.
	Distributed bool
}

// IsState reports whether the event is a state event.
func (e *Event) IsState() bool { return e.StateKey != nil }

// versionCache remembers each room's version; it never changes.
type versionCache struct {
	mu sync.RWMutex
	m  map[string]gomatrixserverlib.IRoomVersion
}

func (r *Rooms) roomVersion(ctx context.Context, q storage.Reader, roomID string) (gomatrixserverlib.IRoomVersion, error) {
	r.versions.mu.RLock()
	v, ok := r.versions.m[roomID]
	r.versions.mu.RUnlock()
	if ok {
		return v, nil
	}
	room, err := storage.GetRoom(ctx, q, roomID)
	if err != nil {
		return nil, err
	}
	v, err = gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
	if err != nil {
		return nil, err
	}
	r.versions.mu.Lock()
	if r.versions.m == nil {
		r.versions.m = map[string]gomatrixserverlib.IRoomVersion{}
	}
	r.versions.m[roomID] = v
	r.versions.mu.Unlock()
	return v, nil
}

// parseEvent turns a row into an Event, applying a recorded redaction.
func (r *Rooms) parseEvent(ctx context.Context, q storage.Reader, row storage.Event) (*Event, error) {
	ver, err := r.roomVersion(ctx, q, row.RoomID)
	if err != nil {
		return nil, err
	}
	pdu, err := ver.NewEventFromTrustedJSONWithEventID(row.EventID, row.JSON, false)
	if err != nil {
		return nil, fmt.Errorf("parsing stored event %s: %w", row.EventID, err)
	}
	if row.RedactedBy != nil {
		pdu.Redact()
	}
	pdu.EventID() // computed lazily; compute once before sharing (GOMATRIXSERVERLIB.md)
	return &Event{Event: row, PDU: pdu}, nil
}

// Events loads events by ID through the cache; missing IDs are absent from
// the result.
func (r *Rooms) Events(ctx context.Context, q storage.Reader, ids []string) (map[string]*Event, error) {
	out := make(map[string]*Event, len(ids))
	var missing []string
	committed := q == storage.Reader(r.db.Read())
	for _, id := range ids {
		if ev, ok := r.pdus.get(id); ok {
			out[id] = ev
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	loaded, err := r.loadEvents(ctx, q, missing, committed)
	if err != nil {
		return nil, err
	}
	for _, ev := range loaded {
		row := ev.Event
		out[row.EventID] = ev
		if !committed {
			continue // only committed rows are cached
		}
		if _, ok := r.pdus.get(row.EventID); ok && ev.Outlier {
			// The cached copy is as new or newer: a read that began
			// before an outlier's promotion must not put it back.
			continue
		}
		r.pdus.put(row.EventID, ev)
	}
	return out, nil
}

// loadEvents reads and parses the rows of ids; from the read pool (pooled
// connections, so concurrent reads) a big read is split over the CPUs.
func (r *Rooms) loadEvents(ctx context.Context, q storage.Reader, ids []string, pooled bool) ([]*Event, error) {
	load := func(chunk []string) ([]*Event, error) {
		rows, err := storage.GetEvents(ctx, q, chunk)
		if err != nil {
			return nil, err
		}
		evs := make([]*Event, 0, len(rows))
		for _, row := range rows {
			ev, err := r.parseEvent(ctx, q, row)
			if err != nil {
				return nil, err
			}
			evs = append(evs, ev)
		}
		return evs, nil
	}
	if !pooled {
		return load(ids)
	}
	return readInParts(ids, load)
}

// Event loads one event, or storage.ErrNotFound.
func (r *Rooms) Event(ctx context.Context, eventID string) (*Event, error) {
	evs, err := r.Events(ctx, r.db.Read(), []string{eventID})
	if err != nil {
		return nil, err
	}
	ev, ok := evs[eventID]
	if !ok {
		return nil, storage.ErrNotFound
	}
	return ev, nil
}
