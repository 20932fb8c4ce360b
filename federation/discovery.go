package federation

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
)

// Room discovery over federation: the space hierarchy
// (GET /v1/hierarchy/{roomId}) and jumping to a date
// (GET /v1/timestamp_to_event/{roomId}), served and asked.

// GET /v1/hierarchy/{roomId}?suggested_only=
func (a *API) hierarchy(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	suggested := false
	switch r.URL.Query().Get("suggested_only") {
	case "", "false":
	case "true":
		suggested = true
	default:
		return nil, mxhttp.InvalidParam("suggested_only must be true or false")
	}
	h, err := a.rooms.HierarchyForServer(r.Context(), origin, roomID, suggested)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// GET /v1/timestamp_to_event/{roomId}?ts=&dir=
func (a *API) timestampToEvent(r *http.Request, origin spec.ServerName) (any, error) {
	roomID := pathParam(r, "roomId")
	q := r.URL.Query()
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return nil, mxhttp.InvalidParam("ts must be a timestamp in milliseconds")
	}
	dir := q.Get("dir")
	if dir != "f" && dir != "b" {
		return nil, mxhttp.InvalidParam("dir must be f or b")
	}
	ev, err := a.rooms.EventNearTimestampForServer(r.Context(), origin, roomID, ts, dir == "f")
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": ev.EventID, "origin_server_ts": ev.OriginTS}, nil
}

// TimestampToEvent asks the other servers in the room, in turn, and checks
// the event a server names before it is handed on.
func (a *API) TimestampToEvent(ctx context.Context, roomID string, ts int64, dir string) (string, int64, error) {
	servers, err := a.rooms.ServersInRoom(ctx, roomID)
	if err != nil {
		return "", 0, err
	}
	path := fmt.Sprintf("/_matrix/federation/v1/timestamp_to_event/%s?ts=%d&dir=%s", url.PathEscape(roomID), ts, url.QueryEscape(dir))
	tried := 0
	for _, s := range servers {
		if s == a.serverName || tried == 3 {
			continue
		}
		tried++
		var res struct {
			EventID string `json:"event_id"`
		}
		if err := a.query(ctx, s, path, &res); err != nil || res.EventID == "" {
			continue
		}
		ev, err := a.rooms.FetchHistoricalEvent(ctx, s, roomID, res.EventID)
		if err != nil {
			a.log.Info("timestamp_to_event: a server named a bad event", "server", s, "event", res.EventID, "err", err)
			continue
		}
		if dir == "f" && ev.OriginTS < ts || dir == "b" && ev.OriginTS > ts {
			continue // not in the direction asked
		}
		return ev.EventID, ev.OriginTS, nil
	}
	return "", 0, errors.New("no server in the room knows an event there")
}

// Hierarchy asks up to three of via for a room of a space.
func (a *API) Hierarchy(ctx context.Context, roomID string, via []string, suggestedOnly bool) (*rooms.ServerHierarchy, error) {
	path := "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID) + "?suggested_only=" + strconv.FormatBool(suggestedOnly)
	var lastErr error = errors.New("no server to ask")
	for i, s := range via {
		if i == 3 {
			break
		}
		if spec.ServerName(s) == a.serverName {
			continue
		}
		var h rooms.ServerHierarchy
		if lastErr = a.query(ctx, spec.ServerName(s), path, &h); lastErr != nil {
			continue
		}
		if h.Room.RoomID != roomID {
			lastErr = fmt.Errorf("%s answered about room %s", s, h.Room.RoomID)
			continue
		}
		return &h, nil
	}
	return nil, lastErr
}
