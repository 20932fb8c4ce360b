package rooms

import (
	"context"
	"errors"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// EventNearTimestamp finds the timeline event closest to ts in a direction
// (timestamp_to_event, client and federation) among those visible
// approves, skipping a bounded number it does not; storage.ErrNotFound if
// there is none.
func (r *Rooms) EventNearTimestamp(ctx context.Context, roomID string, ts int64, forwards bool, visible func(*Event) (bool, error)) (*Event, error) {
	for range 20 {
		row, err := storage.EventNearTimestamp(ctx, r.db.Read(), roomID, ts, forwards)
		if err != nil {
			return nil, err
		}
		ev, err := r.Event(ctx, row.EventID)
		if err != nil {
			return nil, err
		}
		if ok, err := visible(ev); err != nil {
			return nil, err
		} else if ok {
			return ev, nil
		}
		if forwards {
			ts = ev.OriginTS + 1
		} else {
			ts = ev.OriginTS - 1
		}
	}
	return nil, storage.ErrNotFound
}

// EventNearTimestampForServer answers GET /v1/timestamp_to_event for
// another server, within what it may see.
func (r *Rooms) EventNearTimestampForServer(ctx context.Context, server spec.ServerName, roomID string, ts int64, forwards bool) (*Event, error) {
	if _, err := r.Version(ctx, roomID); errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown room %s", roomID)
	}
	ev, err := r.EventNearTimestamp(ctx, roomID, ts, forwards, func(ev *Event) (bool, error) { return r.ServerMaySee(ctx, server, ev) })
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("No event found")
	}
	return ev, err
}
