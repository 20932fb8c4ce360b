package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/filter"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Timeline pagination (client-server API, Getting events for a room:
// /messages and /context).

// parseRoomEventFilter parses the filter query parameter of /messages and
// /context (a RoomEventFilter as JSON).
func parseRoomEventFilter(s string) (*filter.RoomEventFilter, error) {
	f := &filter.RoomEventFilter{}
	if s == "" {
		return f, nil
	}
	if err := json.Unmarshal([]byte(s), f); err != nil {
		return nil, mxhttp.BadJSON("filter is not a valid RoomEventFilter: %v", err)
	}
	return f, nil
}

// GET /rooms/{roomId}/messages
func (a *API) messages(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	q := r.URL.Query()
	if err := a.requireCanSee(r, roomID, c.UserID); err != nil {
		return nil, err
	}
	dir := q.Get("dir")
	if dir == "" {
		dir = "b"
	}
	if dir != "b" && dir != "f" {
		return nil, mxhttp.InvalidParam("dir must be b or f")
	}
	backwards := dir == "b"
	limit := 10
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, mxhttp.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(n, 1000)
	}
	filter, err := parseRoomEventFilter(q.Get("filter"))
	if err != nil {
		return nil, err
	}
	if filter.Limit != nil && *filter.Limit > 0 {
		limit = min(*filter.Limit, 1000)
	}
	from, to, err := a.pageBounds(r, roomID, backwards)
	if err != nil {
		return nil, err
	}
	chunk, next, err := a.paginate(r, roomID, c.UserID, from, to, backwards, limit, filter)
	if err != nil {
		return nil, err
	}
	viewer := rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID}
	formatted, err := a.rooms.Format(r.Context(), chunk, viewer)
	if err != nil {
		return nil, err
	}
	resp := map[string]any{"start": from.String(), "chunk": formatted}
	if next != nil {
		resp["end"] = next.String()
	} else if len(chunk) > 0 {
		// At the end of the timeline, but clients (and Synapse) expect an
		// end token whenever events were returned; paging on from it gives
		// an empty chunk without one.
		last := chunk[len(chunk)-1]
		if backwards {
			resp["end"] = rooms.Before(last).String()
		} else {
			resp["end"] = rooms.After(last).String()
		}
	}
	if filter.LazyLoadMembers {
		members, err := a.lazyMembers(r, chunk, viewer)
		if err != nil {
			return nil, err
		}
		resp["state"] = members
	}
	return resp, nil
}

// paginate collects up to limit visible, filter-matching events from a
// boundary, stopping at to. next is the token to continue from, nil at the
// end of the timeline.
func (a *API) paginate(r *http.Request, roomID, userID string, from rooms.TopoToken, to *rooms.TopoToken, backwards bool, limit int, f *filter.RoomEventFilter) ([]*rooms.Event, *rooms.TopoToken, error) {
	var out []*rooms.Event
	cur := from
	ignored := a.ignoredUsers(r.Context(), userID)
	// Filters and history visibility may drop events: read more pages, but
	// a bounded number, and hand back a token to go on from.
	for round := 0; round < 10 && len(out) < limit; round++ {
		page, atEnd, err := a.rooms.Page(r.Context(), roomID, cur, backwards, max(limit-len(out), 10))
		if err != nil {
			return nil, nil, err
		}
		stop := atEnd
		if to != nil {
			for i, ev := range page {
				if pastBound(*to, ev, backwards) {
					page, stop = page[:i], true
					break
				}
			}
		}
		visible, err := a.rooms.Visible(r.Context(), userID, page)
		if err != nil {
			return nil, nil, err
		}
		for _, ev := range visible {
			if len(out) == limit {
				break
			}
			if f.AllowsEvent(ev.Type, ev.Sender, ev.PDU.Content()) && (ev.IsState() || !ignored[ev.Sender]) {
				out = append(out, ev)
			}
		}
		if len(page) > 0 {
			if backwards {
				cur = rooms.Before(page[len(page)-1])
			} else {
				cur = rooms.After(page[len(page)-1])
			}
		}
		if len(out) == limit && len(out) > 0 {
			// Continue right after the last event handed out.
			last := out[len(out)-1]
			if backwards {
				cur = rooms.Before(last)
			} else {
				cur = rooms.After(last)
			}
			return out, &cur, nil
		}
		if stop {
			return out, nil, nil
		}
	}
	return out, &cur, nil
}

// pastBound reports whether paging in the given direction has come to the
// bound to with ev (ev is not to be returned).
func pastBound(to rooms.TopoToken, ev *rooms.Event, backwards bool) bool {
	if to.Stream != 0 {
		return backwards == (ev.StreamPos < to.Stream)
	}
	return (backwards && !tokenLess(to, rooms.Before(ev))) || (!backwards && !tokenLess(rooms.Before(ev), to))
}

func tokenLess(a, b rooms.TopoToken) bool {
	return a.Depth < b.Depth || a.Depth == b.Depth && a.Pos < b.Pos
}

// pageBounds reads the from and to query parameters of a paginated room
// endpoint; without from, backwards paging starts at the room's end and
// forwards paging at its start.
func (a *API) pageBounds(r *http.Request, roomID string, backwards bool) (from rooms.TopoToken, to *rooms.TopoToken, err error) {
	q := r.URL.Query()
	if f := q.Get("from"); f != "" {
		if from, err = a.parsePaginationToken(r, roomID, f); err != nil {
			return from, nil, err
		}
	} else if backwards {
		if from, err = a.rooms.End(r.Context(), roomID); err != nil {
			return from, nil, err
		}
	}
	if t := q.Get("to"); t != "" {
		tt, err := a.parsePaginationToken(r, roomID, t)
		if err != nil {
			return from, nil, err
		}
		to = &tt
	}
	return from, to, nil
}

// parsePaginationToken accepts our topological tokens (sync's prev_batch
// is one) and sync's next_batch tokens (and sliding sync's pos, which
// carries one), which name a point in the event stream: the boundary after
// the room's last event at or before it.
func (a *API) parsePaginationToken(r *http.Request, roomID, s string) (rooms.TopoToken, error) {
	if t, err := rooms.ParseTopoToken(s); err == nil {
		return t, nil
	}
	tok := s
	if streams, ok := slidingPosStreams(s); ok {
		tok = streams
	}
	pos, err := syncstream.ParseToken(tok)
	if err != nil {
		return rooms.TopoToken{}, mxhttp.InvalidParam("Invalid pagination token %q", s)
	}
	return a.rooms.TokenAtStream(r.Context(), roomID, pos.Events)
}

// requireCanSee fails with 403 for rooms whose history the user can never
// see (never joined, not world_readable) and for unknown rooms alike, so
// the answer does not tell whether a room exists.
func (a *API) requireCanSee(r *http.Request, roomID, userID string) error {
	_, _, err := a.stateVisible(r, roomID, userID)
	var me *mxhttp.Error
	if errors.As(err, &me) && me.ErrCode == "M_NOT_FOUND" {
		return mxhttp.Forbidden("You are not in room %s", roomID)
	}
	return err
}

// lazyMembers returns the membership events of the senders of evs, as of
// each event (lazy-loading members).
func (a *API) lazyMembers(r *http.Request, evs []*rooms.Event, viewer rooms.Viewer) ([]rooms.ClientEvent, error) {
	seen := map[string]bool{}
	var ids []string
	for _, ev := range evs {
		if seen[ev.Sender] {
			continue
		}
		seen[ev.Sender] = true
		st, err := a.rooms.StateAt(r.Context(), ev.SnapshotAfter)
		if err != nil {
			return nil, err
		}
		if id, ok := st[storage.StateKey{Type: spec.MRoomMember, StateKey: ev.Sender}]; ok {
			ids = append(ids, id)
		}
	}
	loaded, err := a.rooms.Events(r.Context(), a.db.Read(), ids)
	if err != nil {
		return nil, err
	}
	var members []*rooms.Event
	for _, id := range ids {
		if ev, ok := loaded[id]; ok {
			members = append(members, ev)
		}
	}
	return a.rooms.Format(r.Context(), members, viewer)
}

// GET /rooms/{roomId}/context/{eventId}
func (a *API) eventContext(r *http.Request, c accounts.Caller) (any, error) {
	roomID, eventID := pathParam(r, "roomId"), pathParam(r, "eventId")
	q := r.URL.Query()
	limit := 10
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return nil, mxhttp.InvalidParam("limit must be a non-negative integer")
		}
		limit = min(n, 100)
	}
	filter, err := parseRoomEventFilter(q.Get("filter"))
	if err != nil {
		return nil, err
	}
	if err := a.requireCanSee(r, roomID, c.UserID); err != nil {
		return nil, err
	}
	ev, err := a.rooms.Event(r.Context(), eventID)
	if err != nil || ev.RoomID != roomID {
		return nil, mxhttp.NotFound("Event not found")
	}
	if vis, err := a.rooms.Visible(r.Context(), c.UserID, []*rooms.Event{ev}); err != nil || len(vis) == 0 {
		return nil, mxhttp.NotFound("Event not found")
	}
	before, _, err := a.paginate(r, roomID, c.UserID, rooms.Before(ev), nil, true, limit/2, filter)
	if err != nil {
		return nil, err
	}
	after, _, err := a.paginate(r, roomID, c.UserID, rooms.After(ev), nil, false, limit-limit/2, filter)
	if err != nil {
		return nil, err
	}
	start, end := rooms.Before(ev), rooms.After(ev)
	if len(before) > 0 {
		start = rooms.Before(before[len(before)-1])
	}
	if len(after) > 0 {
		end = rooms.After(after[len(after)-1])
	}
	viewer := rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID}
	all := append(append([]*rooms.Event{ev}, before...), after...)
	formatted, err := a.rooms.Format(r.Context(), all, viewer)
	if err != nil {
		return nil, err
	}
	st, err := a.rooms.StateAt(r.Context(), ev.SnapshotAfter)
	if err != nil {
		return nil, err
	}
	var state []rooms.ClientEvent
	if filter.LazyLoadMembers {
		state, err = a.lazyMembers(r, all, viewer)
	} else {
		var stEvs []*rooms.Event
		if stEvs, err = a.rooms.StateEvents(r.Context(), st); err == nil {
			state, err = a.rooms.Format(r.Context(), stEvs, viewer)
		}
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"event":         formatted[0],
		"events_before": formatted[1 : 1+len(before)],
		"events_after":  formatted[1+len(before):],
		"start":         start.String(),
		"end":           end.String(),
		"state":         state,
	}, nil
}

// stateAtToken returns the member-visible state at a pagination token (the
// state after the last event before it), for /members?at=.
func (a *API) stateAtToken(r *http.Request, roomID, token string, visible rooms.State) (rooms.State, error) {
	t, err := a.parsePaginationToken(r, roomID, token)
	if err != nil {
		return nil, err
	}
	page, _, err := a.rooms.PageLocal(r.Context(), roomID, t, true, 1)
	if err != nil || len(page) == 0 {
		return visible, err
	}
	return a.rooms.StateAt(r.Context(), page[0].SnapshotAfter)
}
