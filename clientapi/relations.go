package clientapi

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Relationships between events (client-server API, Forming relationships
// between events; Threading): GET /v1/rooms/{roomId}/relations/... and
// GET /v1/rooms/{roomId}/threads. Bundled aggregations are added by
// rooms.Format wherever events leave the server.

const (
	defaultRelationsLimit = 50
	maxRelationsLimit     = 1000
	// relationsRecursion is how many levels recurse=true follows (the spec
	// asks for at least 3).
	relationsRecursion = 3
)

// queryLimit parses a limit query parameter: def when absent, at most max.
func queryLimit(r *http.Request, def, max int) (int, error) {
	l := r.URL.Query().Get("limit")
	if l == "" {
		return def, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 0 {
		return 0, mxhttp.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, max), nil
}

// visibleEvent loads an event of roomID that userID may see, or 404.
func (a *API) visibleEvent(r *http.Request, roomID, eventID, userID string) (*rooms.Event, error) {
	ev, err := a.rooms.Event(r.Context(), eventID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && (ev.RoomID != roomID || ev.Rejected || ev.Outlier) {
		return nil, mxhttp.NotFound("Event not found")
	}
	if err != nil {
		return nil, err
	}
	vis, err := a.rooms.Visible(r.Context(), userID, []*rooms.Event{ev})
	if err != nil {
		return nil, err
	}
	if len(vis) == 0 {
		return nil, mxhttp.NotFound("Event not found")
	}
	return ev, nil
}

// GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]
func (a *API) relations(r *http.Request, c accounts.Caller) (any, error) {
	roomID, eventID := pathParam(r, "roomId"), pathParam(r, "eventId")
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir == "" {
		dir = "b"
	}
	if dir != "b" && dir != "f" {
		return nil, mxhttp.InvalidParam("dir must be b or f")
	}
	backwards := dir == "b"
	limit, err := queryLimit(r, defaultRelationsLimit, maxRelationsLimit)
	if err != nil {
		return nil, err
	}
	recurse := false
	switch q.Get("recurse") {
	case "", "false":
	case "true":
		recurse = true
	default:
		return nil, mxhttp.InvalidParam("recurse must be true or false")
	}
	if _, err := a.visibleEvent(r, roomID, eventID, c.UserID); err != nil {
		return nil, err
	}
	from, to, err := a.pageBounds(r, roomID, backwards)
	if err == nil && from.Stream != 0 {
		// Relations page topologically only: a point in the stream (sync's
		// prev_batch) becomes the boundary after the room's last event
		// before it.
		from, err = a.rooms.TokenAtStream(r.Context(), roomID, from.Stream-1)
	}
	if err != nil {
		return nil, err
	}
	parents := []string{eventID}
	depth := 1
	if recurse {
		more, reached, err := a.rooms.Descendants(r.Context(), roomID, eventID, relationsRecursion-1)
		if err != nil {
			return nil, err
		}
		parents = append(parents, more...)
		depth = reached + 1
	}
	query := storage.RelationsQuery{
		RoomID: roomID, Parents: parents, RelType: pathParam(r, "relType"), EventType: pathParam(r, "eventType"),
		Depth: from.Depth, Pos: from.Pos, Backwards: backwards, Limit: limit,
	}
	page, err := a.rooms.Children(r.Context(), query)
	if err != nil {
		return nil, err
	}
	atEnd := len(page) < limit
	if to != nil {
		for i, ev := range page {
			if pastBound(*to, ev, backwards) {
				page, atEnd = page[:i], true
				break
			}
		}
	}
	resp := map[string]any{}
	if !atEnd && len(page) > 0 {
		last := page[len(page)-1]
		next := rooms.After(last)
		if backwards {
			next = rooms.Before(last)
		}
		resp["next_batch"] = next.String()
	}
	if f := q.Get("from"); f != "" {
		resp["prev_batch"] = f
	}
	if recurse {
		resp["recursion_depth"] = depth
	}
	visible, err := a.rooms.Visible(r.Context(), c.UserID, page)
	if err != nil {
		return nil, err
	}
	visible = a.withoutIgnored(r, c.UserID, visible)
	chunk, err := a.rooms.Format(r.Context(), visible, rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID})
	if err != nil {
		return nil, err
	}
	resp["chunk"] = chunk
	return resp, nil
}

// GET /v1/rooms/{roomId}/threads
func (a *API) threads(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	q := r.URL.Query()
	participant := ""
	switch q.Get("include") {
	case "", "all":
	case "participated":
		participant = c.UserID
	default:
		return nil, mxhttp.InvalidParam("include must be all or participated")
	}
	limit, err := queryLimit(r, defaultRelationsLimit, maxRelationsLimit)
	if err != nil {
		return nil, err
	}
	var before int64
	if f := q.Get("from"); f != "" {
		n, err := strconv.ParseInt(strings.TrimPrefix(f, "th"), 10, 64)
		if !strings.HasPrefix(f, "th") || err != nil || n <= 0 {
			return nil, mxhttp.InvalidParam("Unknown pagination token %q", f)
		}
		before = n
	}
	if err := a.requireCanSee(r, roomID, c.UserID); err != nil {
		var me *mxhttp.Error
		if errors.As(err, &me) && me.ErrCode == "M_NOT_FOUND" {
			err = mxhttp.Forbidden("You cannot view room %s", roomID)
		}
		return nil, err
	}
	resp := map[string]any{"chunk": []rooms.ClientEvent{}}
	if limit == 0 {
		return resp, nil
	}
	threads, err := storage.Threads(r.Context(), a.db.Read(), roomID, participant, before, limit)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(threads))
	for _, t := range threads {
		ids = append(ids, t.RootID)
	}
	loaded, err := a.rooms.Events(r.Context(), a.db.Read(), ids)
	if err != nil {
		return nil, err
	}
	var roots []*rooms.Event
	for _, id := range ids {
		if ev, ok := loaded[id]; ok && ev.RoomID == roomID && !ev.Rejected && !ev.Outlier {
			roots = append(roots, ev)
		}
	}
	visible, err := a.rooms.Visible(r.Context(), c.UserID, roots)
	if err != nil {
		return nil, err
	}
	visible = a.withoutIgnored(r, c.UserID, visible)
	chunk, err := a.rooms.Format(r.Context(), visible, rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID})
	if err != nil {
		return nil, err
	}
	resp["chunk"] = chunk
	if len(threads) == limit {
		resp["next_batch"] = "th" + strconv.FormatInt(threads[len(threads)-1].LatestPos, 10)
	}
	return resp, nil
}
