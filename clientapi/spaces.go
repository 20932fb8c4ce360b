package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Spaces (client-server API, Spaces): GET /v1/rooms/{roomId}/hierarchy
// walks m.space.child events depth-first over the rooms this server has.
// Children on other servers are skipped until federation can fill them in.

const (
	defaultHierarchyLimit = 50
	maxHierarchyLimit     = 200
	defaultHierarchyDepth = 10
	// maxHierarchyRooms bounds one walk; pagination slices it.
	maxHierarchyRooms = 1000
)

type spaceChild struct {
	rooms.StrippedEvent
	OriginServerTS int64 `json:"origin_server_ts"`
	order          string
	suggested      bool
}

type hierarchyRoom struct {
	roomSummaryJSON
	ChildrenState []spaceChild `json:"children_state"`
}

// spaceChildren returns a space's valid m.space.child events (content.via
// a non-empty list), in the spec's order: by content.order when valid,
// then origin_server_ts, then room ID.
func (a *API) spaceChildren(r *http.Request, roomID string) ([]spaceChild, error) {
	st, err := a.rooms.CurrentState(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	keep := rooms.State{}
	for k, id := range st {
		if k.Type == "m.space.child" {
			keep[k] = id
		}
	}
	evs, err := a.rooms.StateEvents(r.Context(), keep)
	if err != nil {
		return nil, err
	}
	var out []spaceChild
	for _, ev := range evs {
		var c struct {
			Via       []string `json:"via"`
			Order     any      `json:"order"`
			Suggested bool     `json:"suggested"`
		}
		if json.Unmarshal(ev.PDU.Content(), &c) != nil || len(c.Via) == 0 {
			continue
		}
		order, _ := c.Order.(string)
		if !validSpaceOrder(order) {
			order = ""
		}
		out = append(out, spaceChild{StrippedEvent: rooms.Stripped(ev.PDU), OriginServerTS: ev.OriginTS, order: order, suggested: c.Suggested})
	}
	sort.Slice(out, func(i, j int) bool {
		x, y := out[i], out[j]
		if (x.order != "") != (y.order != "") {
			return x.order != ""
		}
		if x.order != y.order {
			return x.order < y.order
		}
		if x.OriginServerTS != y.OriginServerTS {
			return x.OriginServerTS < y.OriginServerTS
		}
		return x.StateKey < y.StateKey
	})
	return out, nil
}

// validSpaceOrder: at most 50 characters in the range \x20 to \x7E.
func validSpaceOrder(s string) bool {
	if len(s) > 50 {
		return false
	}
	for _, ch := range []byte(s) {
		if ch < 0x20 || ch > 0x7e {
			return false
		}
	}
	return true
}

// GET /v1/rooms/{roomId}/hierarchy
func (a *API) hierarchy(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID := pathParam(r, "roomId")
	q := r.URL.Query()
	suggestedOnly := false
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		suggestedOnly = true
	default:
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("suggested_only must be true or false"))
		return
	}
	limit := defaultHierarchyLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("limit must be a positive integer"))
			return
		}
		limit = min(n, maxHierarchyLimit)
	}
	maxDepth := defaultHierarchyDepth
	if d := q.Get("max_depth"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("max_depth must be a non-negative integer"))
			return
		}
		maxDepth = min(n, defaultHierarchyDepth)
	}
	// The token carries the offset and the parameters it was made with.
	offset := 0
	params := strconv.FormatBool(suggestedOnly) + "_" + strconv.Itoa(maxDepth)
	if from := q.Get("from"); from != "" {
		off, rest, ok := strings.Cut(strings.TrimPrefix(from, "h"), "_")
		n, err := strconv.Atoi(off)
		if !strings.HasPrefix(from, "h") || !ok || err != nil || n < 0 {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("Unknown pagination token %q", from))
			return
		}
		if rest != params && (q.Has("suggested_only") || q.Has("max_depth")) {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("suggested_only and max_depth cannot change during pagination"))
			return
		}
		if s, d, ok := strings.Cut(rest, "_"); ok {
			suggestedOnly = s == "true"
			if n, err := strconv.Atoi(d); err == nil {
				maxDepth = n
			}
		}
		offset = n
		params = rest
	}
	root, err := a.rooms.Info(r.Context(), roomID)
	if errors.Is(err, storage.ErrNotFound) {
		mxhttp.WriteError(w, r, mxhttp.Forbidden("You cannot view room %s", roomID))
		return
	}
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if ok, _, err := a.roomAccessible(r.Context(), root, c.UserID); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	} else if !ok {
		mxhttp.WriteError(w, r, mxhttp.Forbidden("You cannot view room %s", roomID))
		return
	}
	// Depth-first walk with an explicit stack; each room once.
	type item struct {
		roomID string
		depth  int
	}
	stack := []item{{roomID, 0}}
	seen := map[string]bool{}
	var all []hierarchyRoom
	for len(stack) > 0 && len(all) < maxHierarchyRooms {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[it.roomID] {
			continue
		}
		seen[it.roomID] = true
		info, err := a.rooms.Info(r.Context(), it.roomID)
		if errors.Is(err, storage.ErrNotFound) {
			continue // a room on another server, or gone
		}
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		if ok, _, err := a.roomAccessible(r.Context(), info, c.UserID); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		} else if !ok {
			continue
		}
		entry := hierarchyRoom{roomSummaryJSON: summaryJSON(info), ChildrenState: []spaceChild{}}
		if info.RoomType == "m.space" {
			children, err := a.spaceChildren(r, it.roomID)
			if err != nil {
				mxhttp.WriteError(w, r, err)
				return
			}
			for _, ch := range children {
				if !suggestedOnly || ch.suggested {
					entry.ChildrenState = append(entry.ChildrenState, ch)
				}
			}
			if it.depth < maxDepth {
				for i := len(entry.ChildrenState) - 1; i >= 0; i-- {
					stack = append(stack, item{entry.ChildrenState[i].StateKey, it.depth + 1})
				}
			}
		}
		all = append(all, entry)
	}
	resp := map[string]any{}
	start := min(offset, len(all))
	end := min(start+limit, len(all))
	resp["rooms"] = all[start:end]
	if end < len(all) {
		resp["next_batch"] = "h" + strconv.Itoa(end) + "_" + params
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}
