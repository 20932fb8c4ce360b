package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/filter"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Server side search (client-server API, Server Side Search): room events
// whose content.body, content.name or content.topic contain every word of
// the search term (a word of the term matches a word of the text it
// begins), newest first, in rooms the user is or was in, through history
// visibility.

// maxSearchScan bounds the candidate events one search looks at.
const maxSearchScan = 2000

type searchRequest struct {
	SearchCategories struct {
		RoomEvents *struct {
			SearchTerm   string                  `json:"search_term"`
			Keys         []string                `json:"keys"`
			Filter       *filter.RoomEventFilter `json:"filter"`
			OrderBy      string                  `json:"order_by"`
			EventContext *struct {
				BeforeLimit    *int `json:"before_limit"`
				AfterLimit     *int `json:"after_limit"`
				IncludeProfile bool `json:"include_profile"`
			} `json:"event_context"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

var searchKeyTypes = map[string]string{
	"content.body":  "m.room.message",
	"content.name":  spec.MRoomName,
	"content.topic": spec.MRoomTopic,
}

// POST /v3/search
func (a *API) search(r *http.Request, c accounts.Caller) (any, error) {
	var req searchRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	re := req.SearchCategories.RoomEvents
	if re == nil {
		return map[string]any{"search_categories": map[string]any{}}, nil
	}
	terms := searchWords(re.SearchTerm)
	if len(terms) == 0 {
		return nil, mxhttp.BadJSON("search_term must contain a word")
	}
	switch re.OrderBy {
	case "", "rank", "recent":
	default:
		return nil, mxhttp.InvalidParam("order_by must be rank or recent")
	}
	keys := re.Keys
	if len(keys) == 0 {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	var types []string
	for _, k := range keys {
		t, ok := searchKeyTypes[k]
		if !ok {
			return nil, mxhttp.InvalidParam("Unknown search key %q", k)
		}
		types = append(types, t)
	}
	offset := 0
	if nb := r.URL.Query().Get("next_batch"); nb != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(nb, "o"))
		if err != nil || n < 0 || !strings.HasPrefix(nb, "o") {
			return nil, mxhttp.InvalidParam("Invalid next_batch")
		}
		offset = n
	}
	f := re.Filter
	if f == nil {
		f = &filter.RoomEventFilter{}
	}
	limit := f.LimitOr(10)
	ms, err := storage.RoomsOfUser(r.Context(), a.db.Read(), c.UserID, spec.Join, spec.Leave, spec.Ban)
	if err != nil {
		return nil, err
	}
	var roomIDs []string
	for _, m := range ms {
		if filter.AllowsRoom(f.Rooms, f.NotRooms, m.RoomID) {
			roomIDs = append(roomIDs, m.RoomID)
		}
	}
	rows, err := storage.SearchCandidates(r.Context(), a.db.Read(), roomIDs, types, terms, maxSearchScan)
	if err != nil {
		return nil, err
	}
	evs, err := a.rooms.Events(r.Context(), a.db.Read(), eventIDsOf(rows))
	if err != nil {
		return nil, err
	}
	// Keep word matches, grouped by room for history visibility.
	ignored := a.ignoredUsers(r.Context(), c.UserID)
	byRoom := map[string][]*rooms.Event{}
	var order []*rooms.Event
	for _, row := range rows {
		ev := evs[row.EventID]
		if ev == nil || ignored[ev.Sender] || !f.AllowsEvent(ev.Type, ev.Sender, ev.PDU.Content()) || !matchesWords(ev, keys, terms) {
			continue
		}
		byRoom[ev.RoomID] = append(byRoom[ev.RoomID], ev)
		order = append(order, ev)
	}
	visible := map[string]bool{}
	for _, list := range byRoom {
		vis, err := a.rooms.Visible(r.Context(), c.UserID, list)
		if err != nil {
			return nil, err
		}
		for _, ev := range vis {
			visible[ev.EventID] = true
		}
	}
	var matches []*rooms.Event
	for _, ev := range order {
		if visible[ev.EventID] {
			matches = append(matches, ev)
		}
	}
	viewer := rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID}
	results := []map[string]any{}
	offset = min(offset, len(matches))
	end := min(offset+limit, len(matches))
	for _, ev := range matches[offset:end] {
		formatted, err := a.rooms.Format(r.Context(), []*rooms.Event{ev}, viewer)
		if err != nil {
			return nil, err
		}
		res := map[string]any{"rank": 1, "result": formatted[0]}
		if re.EventContext != nil {
			ctxBody, err := a.searchContext(r, ev, viewer, re.EventContext.BeforeLimit, re.EventContext.AfterLimit, re.EventContext.IncludeProfile)
			if err != nil {
				return nil, err
			}
			res["context"] = ctxBody
		}
		results = append(results, res)
	}
	out := map[string]any{"count": len(matches), "results": results, "highlights": terms}
	// A full page may have more after it; the next page tells (as other
	// servers do, a next_batch comes with every full page).
	if limit > 0 && len(results) == limit {
		out["next_batch"] = "o" + strconv.Itoa(end)
	}
	return map[string]any{"search_categories": map[string]any{"room_events": out}}, nil
}

func eventIDsOf(rows []storage.Event) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.EventID
	}
	return out
}

// searchWords splits text into lower-case words.
func searchWords(s string) []string {
	return strings.FieldsFunc(strings.ToLower(s), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsNumber(r) })
}

// matchesWords reports whether every term begins some word of one of the
// event's searched keys.
func matchesWords(ev *rooms.Event, keys, terms []string) bool {
	content := ev.PDU.Content()
	for _, k := range keys {
		if searchKeyTypes[k] != ev.Type {
			continue
		}
		v := gjson.GetBytes(content, strings.TrimPrefix(k, "content."))
		if v.Type != gjson.String {
			continue
		}
		words := searchWords(v.Str)
		all := true
		for _, t := range terms {
			found := false
			for _, w := range words {
				if strings.HasPrefix(w, t) {
					found = true
					break
				}
			}
			if !found {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// searchContext is a result's context: events before and after it (5 each
// unless asked otherwise), with profiles of their senders if asked.
func (a *API) searchContext(r *http.Request, ev *rooms.Event, viewer rooms.Viewer, before, after *int, withProfile bool) (map[string]any, error) {
	nb, na := 5, 5
	if before != nil {
		nb = min(max(*before, 0), 100)
	}
	if after != nil {
		na = min(max(*after, 0), 100)
	}
	f := &filter.RoomEventFilter{}
	bevs, _, err := a.paginate(r, ev.RoomID, viewer.UserID, rooms.Before(ev), nil, true, nb, f)
	if err != nil {
		return nil, err
	}
	aevs, _, err := a.paginate(r, ev.RoomID, viewer.UserID, rooms.After(ev), nil, false, na, f)
	if err != nil {
		return nil, err
	}
	fb, err := a.rooms.Format(r.Context(), bevs, viewer)
	if err != nil {
		return nil, err
	}
	fa, err := a.rooms.Format(r.Context(), aevs, viewer)
	if err != nil {
		return nil, err
	}
	start, end := rooms.Before(ev), rooms.After(ev)
	if len(bevs) > 0 {
		start = rooms.Before(bevs[len(bevs)-1])
	}
	if len(aevs) > 0 {
		end = rooms.After(aevs[len(aevs)-1])
	}
	out := map[string]any{"events_before": fb, "events_after": fa, "start": start.String(), "end": end.String()}
	if withProfile {
		profiles := map[string]any{}
		st, err := a.rooms.StateAt(r.Context(), ev.SnapshotAfter)
		if err != nil {
			return nil, err
		}
		for _, e := range append(append([]*rooms.Event{ev}, bevs...), aevs...) {
			if _, ok := profiles[e.Sender]; ok {
				continue
			}
			if id, ok := st[storage.StateKey{Type: spec.MRoomMember, StateKey: e.Sender}]; ok {
				if m, err := a.rooms.Event(r.Context(), id); err == nil {
					var c struct {
						DisplayName *string `json:"displayname"`
						AvatarURL   *string `json:"avatar_url"`
					}
					_ = json.Unmarshal(m.PDU.Content(), &c)
					profiles[e.Sender] = map[string]any{"displayname": c.DisplayName, "avatar_url": c.AvatarURL}
				}
			}
		}
		out["profile_info"] = profiles
	}
	return out, nil
}
