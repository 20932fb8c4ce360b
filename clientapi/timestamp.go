package clientapi

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Jumping to a date (client-server API, GET
// /v1/rooms/{roomId}/timestamp_to_event): the events this server has, and
// when none fits, the servers in the room (federation timestamp_to_event).

// GET /v1/rooms/{roomId}/timestamp_to_event?ts=&dir=f|b
func (a *API) timestampToEvent(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	q := r.URL.Query()
	if q.Get("ts") == "" || q.Get("dir") == "" {
		return nil, mxhttp.MissingParam("ts and dir are required")
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return nil, mxhttp.InvalidParam("ts must be a timestamp in milliseconds")
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		return nil, mxhttp.InvalidParam("dir must be f or b")
	}
	if err := a.requireCanSee(r, roomID, c.UserID); err != nil {
		return nil, err
	}
	ev, err := a.rooms.EventNearTimestamp(r.Context(), roomID, ts, dir == "f", func(ev *rooms.Event) (bool, error) {
		vis, err := a.rooms.Visible(r.Context(), c.UserID, []*rooms.Event{ev})
		return len(vis) == 1, err
	})
	if err == nil && dir == "f" && a.fed != nil {
		// The event found may follow a gap: history before this server
		// joined, which the servers in the room have. If one of them knows
		// a closer event, that is the answer.
		if gap, gerr := a.followsGap(r, ev); gerr == nil && gap {
			if id, originTS, ferr := a.fed.TimestampToEvent(r.Context(), roomID, ts, dir); ferr == nil && originTS >= ts && originTS < ev.OriginTS {
				return map[string]any{"event_id": id, "origin_server_ts": originTS}, nil
			}
		}
	}
	if err == nil {
		return map[string]any{"event_id": ev.EventID, "origin_server_ts": ev.OriginTS}, nil
	}
	if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if a.fed != nil {
		if id, originTS, err := a.fed.TimestampToEvent(r.Context(), roomID, ts, dir); err == nil {
			return map[string]any{"event_id": id, "origin_server_ts": originTS}, nil
		}
	}
	return nil, mxhttp.NotFound("No event found from %d in direction %s", ts, dir)
}

// followsGap reports whether one of the event's prev_events is not in this
// server's timeline (unknown, or known only as state): events may be
// missing just before it.
func (a *API) followsGap(r *http.Request, ev *rooms.Event) (bool, error) {
	prevs := ev.PDU.PrevEventIDs()
	known, err := a.rooms.Events(r.Context(), a.db.Read(), prevs)
	if err != nil {
		return false, err
	}
	for _, id := range prevs {
		if p, ok := known[id]; !ok || p.Outlier {
			return true, nil
		}
	}
	return false, nil
}
