package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
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
	// maxRemoteHierarchyAsks bounds the federation requests of one walk.
	maxRemoteHierarchyAsks = 10
)

// GET /v1/rooms/{roomId}/hierarchy
func (a *API) hierarchy(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	q := r.URL.Query()
	suggestedOnly := false
	switch q.Get("suggested_only") {
	case "", "false":
	case "true":
		suggestedOnly = true
	default:
		return nil, mxhttp.InvalidParam("suggested_only must be true or false")
	}
	limit := defaultHierarchyLimit
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n <= 0 {
			return nil, mxhttp.InvalidParam("limit must be a positive integer")
		}
		limit = min(n, maxHierarchyLimit)
	}
	maxDepth := defaultHierarchyDepth
	if d := q.Get("max_depth"); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil || n < 0 {
			return nil, mxhttp.InvalidParam("max_depth must be a non-negative integer")
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
			return nil, mxhttp.InvalidParam("Unknown pagination token %q", from)
		}
		if rest != params && (q.Has("suggested_only") || q.Has("max_depth")) {
			return nil, mxhttp.InvalidParam("suggested_only and max_depth cannot change during pagination")
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
		return nil, mxhttp.Forbidden("You cannot view room %s", roomID)
	}
	if err != nil {
		return nil, err
	}
	if ok, _, err := a.roomAccessible(r.Context(), root, c.UserID); err != nil {
		return nil, err
	} else if !ok {
		return nil, mxhttp.Forbidden("You cannot view room %s", roomID)
	}
	// Depth-first walk with an explicit stack; each room once. Rooms this
	// server is not in are asked of the servers their m.space.child names
	// (federation hierarchy), a bounded number of times per walk.
	type item struct {
		roomID string
		depth  int
		via    []string
	}
	stack := []item{{roomID, 0, nil}}
	seen := map[string]bool{}
	remoteAsks := 0
	var all []rooms.HierarchyRoom
	for len(stack) > 0 && len(all) < maxHierarchyRooms {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[it.roomID] {
			continue
		}
		seen[it.roomID] = true
		var entry rooms.HierarchyRoom
		info, err := a.rooms.Info(r.Context(), it.roomID)
		switch {
		case errors.Is(err, storage.ErrNotFound) || err == nil && info.RoomVersion == "":
			// A room on another server (or one we only hold an invite to).
			if a.fed == nil || len(it.via) == 0 || remoteAsks == maxRemoteHierarchyAsks {
				continue
			}
			remoteAsks++
			h, err := a.fed.Hierarchy(r.Context(), it.roomID, it.via, suggestedOnly)
			if err != nil {
				continue
			}
			if ok, err := a.remoteRoomAccessible(r.Context(), h.Room.Summary, c.UserID); err != nil {
				return nil, err
			} else if !ok {
				continue
			}
			entry = h.Room
			if entry.ChildrenState == nil {
				entry.ChildrenState = []rooms.SpaceChild{}
			}
		case err != nil:
			return nil, err
		default:
			if ok, _, err := a.roomAccessible(r.Context(), info, c.UserID); err != nil {
				return nil, err
			} else if !ok {
				continue
			}
			entry = rooms.HierarchyRoom{Summary: rooms.SummaryOf(info), ChildrenState: []rooms.SpaceChild{}}
			if info.RoomType == "m.space" {
				children, err := a.rooms.SpaceChildren(r.Context(), it.roomID)
				if err != nil {
					return nil, err
				}
				for _, ch := range children {
					if !suggestedOnly || ch.Suggested {
						entry.ChildrenState = append(entry.ChildrenState, ch)
					}
				}
			}
		}
		if it.depth < maxDepth {
			for i := len(entry.ChildrenState) - 1; i >= 0; i-- {
				ch := entry.ChildrenState[i]
				var content struct {
					Via []string `json:"via"`
				}
				_ = json.Unmarshal(ch.Content, &content)
				stack = append(stack, item{ch.StateKey, it.depth + 1, content.Via})
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
	return resp, nil
}
