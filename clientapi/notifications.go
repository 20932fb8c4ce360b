package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// GET /notifications (client-server API, Push Notifications: Listing
// Notifications; notifications.yaml): the user's notifications, newest
// first; from is the next_token of a previous page (the stream position
// of its last notification).
func (a *API) getNotifications(r *http.Request, c accounts.Caller) (any, error) {
	q := r.URL.Query()
	var before int64
	if f := q.Get("from"); f != "" {
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n < 1 {
			return nil, mxhttp.InvalidParam("Invalid from token %q", f)
		}
		before = n
	}
	limit := 20
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, mxhttp.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(n, 100)
	}
	ctx := r.Context()
	out := []map[string]any{}
	resp := map[string]any{}
	if limit > 0 {
		ns, err := storage.ListNotifications(ctx, a.db.Read(), c.UserID, before, limit, q.Get("only") == "highlight")
		if err != nil {
			return nil, err
		}
		ids := make([]string, len(ns))
		for i, n := range ns {
			ids[i] = n.EventID
		}
		byID, err := a.rooms.Events(ctx, a.db.Read(), ids)
		if err != nil {
			return nil, err
		}
		for _, n := range ns {
			ev, ok := byID[n.EventID]
			if !ok {
				continue
			}
			formatted, err := a.rooms.Format(ctx, []*rooms.Event{ev}, rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID})
			if err != nil || len(formatted) == 0 {
				if err != nil {
					return nil, err
				}
				continue
			}
			read, err := a.push.IsRead(ctx, c.UserID, n.RoomID, n.ThreadID, n.StreamPos)
			if err != nil {
				return nil, err
			}
			out = append(out, map[string]any{"actions": json.RawMessage(n.Actions), "event": formatted[0],
				"read": read, "room_id": n.RoomID, "ts": n.TS})
		}
		if len(ns) == limit {
			resp["next_token"] = strconv.FormatInt(ns[len(ns)-1].StreamPos, 10)
		}
	}
	resp["notifications"] = out
	return resp, nil
}
