package clientapi

import (
	"encoding/json"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/filter"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Server side search (client-server API, Server Side Search) over the
// full-text index the room core keeps (storage/search.go): room events
// whose content.body, content.name or content.topic hold every piece of
// the search term (a piece is a phrase of its words, the last matching as
// a prefix; punctuation is a word separator, never query syntax), in rooms
// the user is or was in and has not forgotten, through history visibility,
// best ranked or newest first.
//
// next_batch is a position in that order (the last result looked at), so
// pages neither repeat nor skip results while events keep arriving; rank
// order ranks the newest storage.SearchRankWindow matches, the same ones
// on every page. count is the number of matches before history
// visibility, exact up to storage.SearchCountExact and estimated beyond,
// as the spec's "approximate count" allows, counted for the first page
// and carried in next_batch to the others.

const (
	// maxSearchWords bounds the words of a search term.
	maxSearchWords = 64
	// maxSearchLimit bounds a page.
	maxSearchLimit = 100
	// maxSearchScan bounds the matches one request looks at for a page of
	// visible results; a page cut short by it has a next_batch to go on.
	maxSearchScan = 5000
)

type searchRequest struct {
	SearchCategories struct {
		RoomEvents *struct {
			SearchTerm   *string                 `json:"search_term"`
			Keys         []string                `json:"keys"`
			Filter       *filter.RoomEventFilter `json:"filter"`
			OrderBy      string                  `json:"order_by"`
			EventContext *struct {
				BeforeLimit    *int `json:"before_limit"`
				AfterLimit     *int `json:"after_limit"`
				IncludeProfile bool `json:"include_profile"`
			} `json:"event_context"`
			IncludeState bool `json:"include_state"`
			Groupings    *struct {
				GroupBy []struct {
					Key string `json:"key"`
				} `json:"group_by"`
			} `json:"groupings"`
		} `json:"room_events"`
	} `json:"search_categories"`
}

// searchToken is a next_batch: the position of the last match looked at,
// "t<stream_pos>" (order_by recent) or "r<rank>_<stream_pos>_<floor>_<ceiling>"
// (order_by rank, with the bounds of the matches ranked), then
// "_<count>", the first page's count, which later pages repeat rather
// than count again.
func searchToken(byRank bool, c storage.SearchCursor, count int) string {
	tail := strconv.FormatInt(c.StreamPos, 10) + "_" + strconv.Itoa(count)
	if byRank {
		return "r" + strconv.FormatFloat(c.Rank, 'g', -1, 64) + "_" + strconv.FormatInt(c.StreamPos, 10) + "_" +
			strconv.FormatInt(c.Floor, 10) + "_" + strconv.FormatInt(c.Ceiling, 10) + "_" + strconv.Itoa(count)
	}
	return "t" + tail
}

func parseSearchToken(byRank bool, tok string) (*storage.SearchCursor, int, error) {
	bad := mxhttp.InvalidParam("Invalid next_batch")
	if tok == "" || (tok[0] == 'r') != byRank || (tok[0] != 'r' && tok[0] != 't') {
		return nil, 0, bad
	}
	parts, want := strings.Split(tok[1:], "_"), 2
	if byRank {
		want = 5
	}
	if len(parts) != want {
		return nil, 0, bad
	}
	var c storage.SearchCursor
	var err error
	if byRank {
		if c.Rank, err = strconv.ParseFloat(parts[0], 64); err != nil || math.IsNaN(c.Rank) || math.IsInf(c.Rank, 0) {
			return nil, 0, bad
		}
		parts = parts[1:]
	}
	if c.StreamPos, err = strconv.ParseInt(parts[0], 10, 64); err != nil {
		return nil, 0, bad
	}
	if byRank {
		c.Floor, err = strconv.ParseInt(parts[1], 10, 64)
		if err != nil || c.Floor < 0 {
			return nil, 0, bad
		}
		if c.Ceiling, err = strconv.ParseInt(parts[2], 10, 64); err != nil || c.Ceiling < c.Floor {
			return nil, 0, bad
		}
		parts = parts[2:]
	}
	count, err := strconv.Atoi(parts[1])
	if err != nil || count < 0 {
		return nil, 0, bad
	}
	return &c, count, nil
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
	if re.SearchTerm == nil {
		return nil, mxhttp.MissingParam("search_term is required")
	}
	phrases := storage.SearchPhrases(*re.SearchTerm)
	var words []string
	for _, p := range phrases {
		words = append(words, p...)
	}
	if len(words) > maxSearchWords {
		return nil, mxhttp.InvalidParam("search_term has more than %d words", maxSearchWords)
	}
	var byRank bool
	switch re.OrderBy {
	case "", "rank":
		byRank = true
	case "recent":
	default:
		return nil, mxhttp.InvalidParam("order_by must be rank or recent")
	}
	keys := re.Keys
	if len(keys) == 0 {
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	var types []string
	for _, k := range keys {
		t, ok := storage.SearchKeyTypes[k]
		if !ok {
			return nil, mxhttp.InvalidParam("Unknown search key %q", k)
		}
		types = append(types, t)
	}
	var groupBy []string
	if re.Groupings != nil {
		for _, g := range re.Groupings.GroupBy {
			if g.Key != "room_id" && g.Key != "sender" {
				return nil, mxhttp.InvalidParam("Unknown group_by key %q", g.Key)
			}
			groupBy = append(groupBy, g.Key)
		}
	}
	var after *storage.SearchCursor
	count := -1
	if nb := r.URL.Query().Get("next_batch"); nb != "" {
		var err error
		if after, count, err = parseSearchToken(byRank, nb); err != nil {
			return nil, err
		}
	}
	f := re.Filter
	if f == nil {
		f = &filter.RoomEventFilter{}
	}
	limit := f.LimitOr(10)
	if limit <= 0 {
		limit = 10
	}
	limit = min(limit, maxSearchLimit)

	ctx, db := r.Context(), a.db.Read()
	ms, err := storage.RoomsOfUser(ctx, db, c.UserID, spec.Join, spec.Leave, spec.Ban)
	if err != nil {
		return nil, err
	}
	q := storage.SearchQuery{Phrases: phrases, Types: types, Senders: f.Senders, NotSenders: f.NotSenders, ByRank: byRank}
	for _, m := range ms {
		if !filter.AllowsRoom(f.Rooms, f.NotRooms, m.RoomID) {
			continue
		}
		if m.Membership != spec.Join {
			if forgotten, err := storage.IsForgotten(ctx, db, c.UserID, m.RoomID); err != nil {
				return nil, err
			} else if forgotten {
				continue
			}
		}
		q.RoomIDs = append(q.RoomIDs, m.RoomID)
	}
	for u := range a.ignoredUsers(ctx, c.UserID) {
		q.NotSenders = append(q.NotSenders, u)
	}

	// Walk the matches in order, keeping those the user may see, until the
	// page is full; the cursor is the last match looked at.
	var page []*rooms.Event
	ranks := map[string]float64{}
	cursor, more := after, true
	batch := min(max(2*limit, 50), 500)
	for scanned := 0; len(page) < limit && more && scanned < maxSearchScan; {
		q.After, q.Limit = cursor, batch
		hits, n, err := a.db.Search(ctx, db, q)
		if err != nil {
			return nil, err
		}
		if count < 0 && n >= 0 {
			count = n // the first page by rank counted its window
		}
		scanned += len(hits)
		more = len(hits) == batch
		ids := make([]string, len(hits))
		for i, h := range hits {
			ids[i] = h.EventID
		}
		evs, err := a.rooms.Events(ctx, db, ids)
		if err != nil {
			return nil, err
		}
		byRoom := map[string][]*rooms.Event{}
		for _, h := range hits {
			if ev := evs[h.EventID]; ev != nil && f.AllowsEvent(ev.Type, ev.Sender, ev.PDU.Content()) {
				byRoom[ev.RoomID] = append(byRoom[ev.RoomID], ev)
			}
		}
		visible := map[string]bool{}
		for _, list := range byRoom {
			vis, err := a.rooms.Visible(ctx, c.UserID, list)
			if err != nil {
				return nil, err
			}
			for _, ev := range vis {
				visible[ev.EventID] = true
			}
		}
		for i, h := range hits {
			cursor = &storage.SearchCursor{Rank: h.Rank, StreamPos: h.StreamPos, Floor: h.Floor, Ceiling: h.Ceiling}
			if visible[h.EventID] {
				page = append(page, evs[h.EventID])
				ranks[h.EventID] = h.Rank
				if len(page) == limit {
					more = more || i < len(hits)-1
					break
				}
			}
		}
	}
	if count < 0 {
		if count, err = a.db.SearchCount(ctx, db, q); err != nil {
			return nil, err
		}
	}

	viewer := rooms.Viewer{UserID: c.UserID, DeviceID: c.DeviceID}
	results := []map[string]any{}
	for _, ev := range page {
		formatted, err := a.rooms.Format(ctx, []*rooms.Event{ev}, viewer)
		if err != nil {
			return nil, err
		}
		res := map[string]any{"rank": ranks[ev.EventID], "result": formatted[0]}
		if re.EventContext != nil {
			ctxBody, err := a.searchContext(r, ev, viewer, re.EventContext.BeforeLimit, re.EventContext.AfterLimit, re.EventContext.IncludeProfile)
			if err != nil {
				return nil, err
			}
			res["context"] = ctxBody
		}
		results = append(results, res)
	}
	out := map[string]any{"count": count, "results": results, "highlights": searchHighlights(page, words)}
	// A full page has a next_batch even when this one took the last
	// match, as on Synapse (Complement's paging and context tests expect
	// it); a later page is then empty. A short page is the end.
	if (more || len(page) == limit) && cursor != nil {
		out["next_batch"] = searchToken(byRank, *cursor, count)
	}
	if len(groupBy) > 0 {
		groups := map[string]any{}
		for _, key := range groupBy {
			byKey := map[string]map[string]any{}
			for _, ev := range page {
				v := ev.RoomID
				if key == "sender" {
					v = ev.Sender
				}
				g, ok := byKey[v]
				if !ok {
					g = map[string]any{"results": []string{}, "order": len(byKey) + 1}
					byKey[v] = g
				}
				g["results"] = append(g["results"].([]string), ev.EventID)
			}
			groups[key] = byKey
		}
		out["groups"] = groups
	}
	if re.IncludeState {
		state := map[string]any{}
		for _, ev := range page {
			if _, done := state[ev.RoomID]; done {
				continue
			}
			st, err := a.visibleState(r, ev.RoomID, c.UserID)
			if err != nil {
				return nil, err
			}
			sevs, err := a.rooms.StateEvents(ctx, st)
			if err != nil {
				return nil, err
			}
			if state[ev.RoomID], err = a.rooms.Format(ctx, sevs, viewer); err != nil {
				return nil, err
			}
		}
		out["state"] = state
	}
	return map[string]any{"search_categories": map[string]any{"room_events": out}}, nil
}

// searchHighlights are the words to highlight in a page of results: the
// search's words and the words of the results' text they begin.
func searchHighlights(page []*rooms.Event, words []string) []string {
	set := map[string]bool{}
	for _, w := range words {
		set[w] = true
	}
	for _, ev := range page {
		text, _ := storage.SearchText(ev.Type, ev.PDU.JSON())
		for _, tw := range storage.SearchWords(text) {
			for _, w := range words {
				if strings.HasPrefix(tw, w) {
					set[tw] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for w := range set {
		out = append(out, w)
	}
	sort.Strings(out)
	return out
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
