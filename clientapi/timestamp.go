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
// /v1/rooms/{roomId}/timestamp_to_event). Only events this server has are
// searched; asking other servers comes with federation.

// GET /v1/rooms/{roomId}/timestamp_to_event?ts=&dir=f|b
func (a *API) timestampToEvent(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID := pathParam(r, "roomId")
	q := r.URL.Query()
	if q.Get("ts") == "" || q.Get("dir") == "" {
		mxhttp.WriteError(w, r, mxhttp.MissingParam("ts and dir are required"))
		return
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("ts must be a timestamp in milliseconds"))
		return
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("dir must be f or b"))
		return
	}
	if err := a.requireCanSee(r, roomID, c.UserID); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	// Skip events the caller may not see, a bounded number of times.
	for range 20 {
		row, err := storage.EventNearTimestamp(r.Context(), a.db.Read(), roomID, ts, dir == "f")
		if errors.Is(err, storage.ErrNotFound) {
			break
		}
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		ev, err := a.rooms.Event(r.Context(), row.EventID)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		vis, err := a.rooms.Visible(r.Context(), c.UserID, []*rooms.Event{ev})
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		if len(vis) == 1 {
			mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"event_id": ev.EventID, "origin_server_ts": ev.OriginTS})
			return
		}
		if dir == "f" {
			ts = ev.OriginTS + 1
		} else {
			ts = ev.OriginTS - 1
		}
	}
	mxhttp.WriteError(w, r, mxhttp.NotFound("No event found from %d in direction %s", ts, dir))
}
