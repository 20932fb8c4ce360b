package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/filter"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// More of the room admin API (Synapse's docs/admin_api/rooms.md and
// room_membership.md). An admin sees every event: no history visibility.

// roomIdentifier resolves the {roomId} parameter, a room ID or a local
// alias, to a room ID this server has state of.
func (a *API) roomIdentifier(r *http.Request, name string) (string, error) {
	id := pathParam(r, name)
	if strings.HasPrefix(id, "#") {
		if !strings.Contains(id, ":") {
			return "", mxhttp.InvalidParam("%q is not a valid room alias", id)
		}
		roomID, _, err := storage.ResolveAlias(r.Context(), a.db.Read(), id)
		if errors.Is(err, storage.ErrNotFound) {
			return "", mxhttp.NotFound("Room alias %s not found", id)
		}
		return roomID, err
	}
	if _, err := spec.NewRoomID(id); err != nil || !strings.HasPrefix(id, "!") {
		return "", mxhttp.InvalidParam("%s was not legal room ID or room alias", id)
	}
	if _, err := a.summarise(r.Context(), id); errors.Is(err, storage.ErrNotFound) {
		return "", mxhttp.NotFound("Room not found")
	} else if err != nil {
		return "", err
	}
	return id, nil
}

// POST /_synapse/admin/v1/join/{roomIdOrAlias} {"user_id"}: joins a local
// user to a room this server is in, through the room core as the user's
// own join would (an invite-only room needs an invite, as Synapse).
func (a *API) joinUser(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		UserID string `json:"user_id"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.UserID == "" {
		return nil, mxhttp.MissingParam("Missing user_id")
	}
	uid, err := spec.NewUserID(req.UserID, true)
	if err != nil {
		return nil, mxhttp.InvalidParam("Invalid user ID %q", req.UserID)
	}
	if string(uid.Domain()) != a.cfg.ServerName {
		return nil, mxhttp.InvalidParam("This endpoint can only be used with local users")
	}
	u, err := a.db.GetUser(r.Context(), req.UserID)
	if errors.Is(err, storage.ErrNotFound) || (err == nil && u.Deactivated) {
		return nil, mxhttp.NotFound("User not found")
	}
	if err != nil {
		return nil, err
	}
	roomID, err := a.roomIdentifier(r, "roomId")
	if err != nil {
		return nil, err
	}
	if _, err := a.rooms.SetMembership(r.Context(), roomID, rooms.ChangeMembership{Sender: req.UserID, Target: req.UserID, Membership: spec.Join}); err != nil {
		return nil, err
	}
	return map[string]string{"room_id": roomID}, nil
}

// POST /_synapse/admin/v1/rooms/{roomIdOrAlias}/make_room_admin
// {"user_id"}: the local member with the highest power level able to
// change power levels raises user_id (default: the caller) to their level,
// inviting them first when the room is not public. Both events go through
// the room core as that member's.
func (a *API) makeRoomAdmin(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		UserID string `json:"user_id"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	target := req.UserID
	if target == "" {
		target = c.UserID
	}
	if uid, err := spec.NewUserID(target, true); err != nil || string(uid.Domain()) != a.cfg.ServerName {
		return nil, mxhttp.InvalidParam("Only local users can be admins of rooms on this server")
	}
	roomID, err := a.roomIdentifier(r, "roomId")
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	pl, err := a.rooms.PowerLevels(ctx, roomID)
	if err != nil {
		return nil, err
	}
	s, err := a.summarise(ctx, roomID)
	if err != nil {
		return nil, err
	}
	needed := pl.EventLevel(spec.MRoomPowerLevels, true)
	var by string
	var level int64
	for _, m := range s.localMembers {
		if l := pl.UserLevel(spec.SenderID(m)); l >= needed && (by == "" || l > level) {
			by, level = m, l
		}
	}
	if by == "" {
		return nil, mxhttp.BadJSON("No local admin user in room with power to update power levels.")
	}
	if level == gomatrixserverlib.CreatorPowerLevel {
		// A creator (room version 12) outranks every level; the highest
		// a power levels event can give is what its users hold, at least 100.
		level = 100
		for u, l := range pl.Users {
			if l != gomatrixserverlib.CreatorPowerLevel && l > level && u != target {
				level = l
			}
		}
	}
	// The room is known: PowerLevels found its create event.
	plID, err := a.rooms.CurrentStateID(ctx, roomID, storage.StateKey{Type: spec.MRoomPowerLevels})
	if err != nil {
		return nil, err
	}
	content := map[string]any{}
	if plID != "" {
		ev, err := a.rooms.Event(ctx, plID)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(ev.PDU.Content(), &content); err != nil {
			return nil, err
		}
	}
	users, _ := content["users"].(map[string]any)
	if users == nil {
		users = map[string]any{}
	}
	if pl.UserLevel(spec.SenderID(target)) < level {
		users[target] = level
		content["users"] = users
		raw, err := json.Marshal(content)
		if err != nil {
			return nil, err
		}
		empty := ""
		if _, err := a.rooms.Send(ctx, roomID, rooms.Proto{Sender: by, Type: spec.MRoomPowerLevels, StateKey: &empty, Content: raw}); err != nil {
			return nil, err
		}
	}
	if s.JoinRules == nil || *s.JoinRules != spec.Public {
		m, _, err := a.rooms.MembershipOf(ctx, roomID, target)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		if m != spec.Join && m != spec.Invite {
			if _, err := a.rooms.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: by, Target: target, Membership: spec.Invite}); err != nil {
				return nil, err
			}
		}
	}
	return struct{}{}, nil
}

// GET /_synapse/admin/v1/rooms/{roomIdOrAlias}/forward_extremities.
func (a *API) forwardExtremities(r *http.Request, c accounts.Caller) (any, error) {
	roomID, err := a.roomIdentifier(r, "roomId")
	if err != nil {
		return nil, err
	}
	room, err := storage.GetRoom(r.Context(), a.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	evs, err := a.rooms.Events(r.Context(), a.db.Read(), room.Extremities)
	if err != nil {
		return nil, err
	}
	results := []map[string]any{}
	for _, id := range room.Extremities {
		ev, ok := evs[id]
		if !ok {
			continue
		}
		results = append(results, map[string]any{"event_id": id, "state_group": ev.SnapshotAfter, "depth": ev.Depth,
			"received_ts": ev.OriginTS})
	}
	return map[string]any{"count": len(results), "results": results}, nil
}

// eventsJSON formats events for an admin: every event, as a client sees
// it.
func (a *API) eventsJSON(r *http.Request, evs []*rooms.Event, c accounts.Caller) ([]rooms.ClientEvent, error) {
	out, err := a.rooms.Format(r.Context(), evs, rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID})
	if out == nil {
		out = []rooms.ClientEvent{}
	}
	return out, err
}

// roomEventFilter reads the optional filter query parameter.
func roomEventFilter(r *http.Request) (*filter.RoomEventFilter, error) {
	f := &filter.RoomEventFilter{}
	if s := r.URL.Query().Get("filter"); s != "" {
		if err := json.Unmarshal([]byte(s), f); err != nil {
			return nil, mxhttp.BadJSON("filter is not a valid RoomEventFilter: %v", err)
		}
	}
	return f, nil
}

// page reads up to limit events matching f from a boundary; next is where
// to go on from, nil at the end of the timeline.
func (a *API) page(r *http.Request, roomID string, from rooms.TopoToken, backwards bool, limit int, f *filter.RoomEventFilter) ([]*rooms.Event, *rooms.TopoToken, error) {
	var out []*rooms.Event
	cur := from
	past := func(ev *rooms.Event) rooms.TopoToken {
		if backwards {
			return rooms.Before(ev)
		}
		return rooms.After(ev)
	}
	for round := 0; round < 10; round++ {
		pg, atEnd, err := a.rooms.Page(r.Context(), roomID, cur, backwards, max(limit-len(out), 10))
		if err != nil {
			return nil, nil, err
		}
		for _, ev := range pg {
			if len(out) == limit {
				return out, &cur, nil
			}
			cur = past(ev)
			if f.AllowsEvent(ev.Type, ev.Sender, ev.PDU.Content()) {
				out = append(out, ev)
			}
		}
		if atEnd {
			return out, nil, nil
		}
		if len(out) == limit {
			break
		}
	}
	return out, &cur, nil
}

// limitParam reads limit: a non-negative integer, def when absent, at
// most max.
func limitParam(r *http.Request, def, most int) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, mxhttp.InvalidParam("Query parameter limit must be a string representing a non-negative integer")
	}
	return min(n, most), nil
}

// GET /_synapse/admin/v1/rooms/{roomId}/messages: /messages without
// history visibility; from, dir (default b), limit, filter.
func (a *API) roomMessages(r *http.Request, c accounts.Caller) (any, error) {
	s, err := a.knownRoom(r)
	if err != nil {
		return nil, err
	}
	backwards, err := dirParam(r, "b")
	if err != nil {
		return nil, err
	}
	limit, err := limitParam(r, 10, 1000)
	if err != nil {
		return nil, err
	}
	f, err := roomEventFilter(r)
	if err != nil {
		return nil, err
	}
	var from rooms.TopoToken
	if t := r.URL.Query().Get("from"); t != "" {
		if from, err = rooms.ParseTopoToken(t); err != nil {
			return nil, mxhttp.InvalidParam("Invalid pagination token %q", t)
		}
	} else if backwards {
		if from, err = a.rooms.End(r.Context(), s.RoomID); err != nil {
			return nil, err
		}
	}
	chunk, next, err := a.page(r, s.RoomID, from, backwards, limit, f)
	if err != nil {
		return nil, err
	}
	formatted, err := a.eventsJSON(r, chunk, c)
	if err != nil {
		return nil, err
	}
	body := map[string]any{"chunk": formatted, "start": from.String()}
	if next != nil {
		body["end"] = next.String()
	} else if len(chunk) > 0 {
		// At the end, but clients expect an end token whenever events came
		// (as the client API's /messages).
		last := chunk[len(chunk)-1]
		if backwards {
			body["end"] = rooms.Before(last).String()
		} else {
			body["end"] = rooms.After(last).String()
		}
	}
	return body, nil
}

// GET /_synapse/admin/v1/rooms/{roomId}/context/{eventId}: /context
// without history visibility.
func (a *API) roomEventContext(r *http.Request, c accounts.Caller) (any, error) {
	s, err := a.knownRoom(r)
	if err != nil {
		return nil, err
	}
	limit, err := limitParam(r, 10, 100)
	if err != nil {
		return nil, err
	}
	f, err := roomEventFilter(r)
	if err != nil {
		return nil, err
	}
	ev, err := a.rooms.Event(r.Context(), pathParam(r, "eventId"))
	if err != nil || ev.RoomID != s.RoomID {
		return nil, mxhttp.NotFound("Event not found.")
	}
	before, _, err := a.page(r, s.RoomID, rooms.Before(ev), true, limit/2, f)
	if err != nil {
		return nil, err
	}
	after, _, err := a.page(r, s.RoomID, rooms.After(ev), false, limit-limit/2, f)
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
	all, err := a.eventsJSON(r, append(append([]*rooms.Event{ev}, before...), after...), c)
	if err != nil {
		return nil, err
	}
	st, err := a.rooms.StateAt(r.Context(), ev.SnapshotAfter)
	if err != nil {
		return nil, err
	}
	stEvs, err := a.rooms.StateEvents(r.Context(), st)
	if err != nil {
		return nil, err
	}
	state, err := a.eventsJSON(r, stEvs, c)
	if err != nil {
		return nil, err
	}
	return map[string]any{"event": all[0], "events_before": all[1 : 1+len(before)], "events_after": all[1+len(before):],
		"state": state, "start": start.String(), "end": end.String()}, nil
}

// GET /_synapse/admin/v1/rooms/{roomId}/timestamp_to_event?ts=&dir=: the
// nearest event this server has.
func (a *API) roomTimestampToEvent(r *http.Request, c accounts.Caller) (any, error) {
	s, err := a.knownRoom(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	if q.Get("ts") == "" {
		return nil, mxhttp.MissingParam("Missing integer query parameter 'ts'")
	}
	ts, err := strconv.ParseInt(q.Get("ts"), 10, 64)
	if err != nil || ts < 0 {
		return nil, mxhttp.InvalidParam("Query parameter ts must be a timestamp in milliseconds")
	}
	backwards, err := dirParam(r, "f")
	if err != nil {
		return nil, err
	}
	ev, err := a.rooms.EventNearTimestamp(r.Context(), s.RoomID, ts, !backwards, func(*rooms.Event) (bool, error) { return true, nil })
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unable to find event from %d in direction %s", ts, map[bool]string{false: "f", true: "b"}[backwards])
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"event_id": ev.EventID, "origin_server_ts": ev.OriginTS}, nil
}

// GET /_synapse/admin/v1/rooms/{roomId}/hierarchy?from=&limit=: the space
// below the room as far as this server knows it (no federation), every
// room whatever its join rules; from is an offset.
func (a *API) roomHierarchy(r *http.Request, c accounts.Caller) (any, error) {
	s, err := a.knownRoom(r)
	if err != nil {
		return nil, err
	}
	from := 0
	if t := r.URL.Query().Get("from"); t != "" {
		if from, err = strconv.Atoi(t); err != nil || from < 0 {
			return nil, mxhttp.InvalidParam("Invalid pagination token %q", t)
		}
	}
	limit, err := limitParam(r, 100, 1000)
	if err != nil {
		return nil, err
	}
	if limit == 0 {
		limit = 100
	}
	var out []map[string]any
	seen := map[string]bool{s.RoomID: true}
	queue := []string{s.RoomID}
	for i := 0; len(queue) > 0 && len(out) < from+limit && i < 10000; i++ {
		id := queue[0]
		queue = queue[1:]
		info, err := a.rooms.Info(r.Context(), id)
		if errors.Is(err, storage.ErrNotFound) {
			continue // a child this server is not in
		}
		if err != nil {
			return nil, err
		}
		children, err := a.rooms.SpaceChildren(r.Context(), id)
		if err != nil {
			return nil, err
		}
		state := []rooms.SpaceChild{}
		for _, ch := range children {
			state = append(state, ch)
			if !seen[ch.StateKey] {
				seen[ch.StateKey] = true
				queue = append(queue, ch.StateKey)
			}
		}
		out = append(out, map[string]any{"room_id": id, "name": emptyNil(info.Name), "topic": emptyNil(info.Topic),
			"avatar_url": emptyNil(info.AvatarURL), "canonical_alias": emptyNil(info.CanonicalAlias),
			"num_joined_members": info.NumJoinedMembers, "join_rule": info.JoinRule, "world_readable": info.WorldReadable,
			"guest_can_join": info.GuestCanJoin, "room_type": emptyNil(info.RoomType), "children_state": state})
	}
	body := map[string]any{"rooms": []map[string]any{}}
	if from < len(out) {
		body["rooms"] = out[from:]
	}
	if len(queue) > 0 && len(out) == from+limit {
		body["next_batch"] = strconv.Itoa(from + limit)
	}
	return body, nil
}

// GET /_synapse/admin/v1/fetch_event/{eventId}: any event this server
// has, as a client event.
func (a *API) fetchEvent(r *http.Request, c accounts.Caller) (any, error) {
	ev, err := a.rooms.Event(r.Context(), pathParam(r, "eventId"))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Event not found")
	}
	if err != nil {
		return nil, err
	}
	f, err := a.eventsJSON(r, []*rooms.Event{ev}, c)
	if err != nil {
		return nil, err
	}
	return map[string]any{"event": f[0]}, nil
}
