package rooms

import (
	"context"
	"sort"
	"strconv"
	"strings"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// The published room directory, listed for our clients (GET/POST
// /v3/publicRooms) and for other servers (GET/POST /v1/publicRooms).

// Limits on one directory page.
const (
	defaultPublicRoomsLimit = 100
	maxPublicRoomsLimit     = 500
)

// PublicRoomsQuery is a directory request, in the client and federation
// APIs' shared JSON shape.
type PublicRoomsQuery struct {
	Limit  *int   `json:"limit,omitempty"`
	Since  string `json:"since,omitempty"`
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term,omitempty"`
		RoomTypes         []*string `json:"room_types,omitempty"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks,omitempty"`
	ThirdPartyInstanceID string `json:"third_party_instance_id,omitempty"`
}

// PublicRoomsPage is one page of the directory.
type PublicRoomsPage struct {
	Chunk     []Info `json:"chunk"`
	NextBatch string `json:"next_batch,omitempty"`
	PrevBatch string `json:"prev_batch,omitempty"`
	Total     int    `json:"total_room_count_estimate"`
}

// PublicRooms lists published rooms, largest first. Hearth has no
// application-service networks, so include_all_networks changes nothing and
// a third_party_instance_id matches no room.
func (r *Rooms) PublicRooms(ctx context.Context, q PublicRoomsQuery) (PublicRoomsPage, error) {
	limit := defaultPublicRoomsLimit
	if q.Limit != nil {
		if *q.Limit < 0 {
			return PublicRoomsPage{}, mxhttp.InvalidParam("limit must not be negative")
		}
		if *q.Limit > 0 {
			limit = min(*q.Limit, maxPublicRoomsLimit)
		}
	}
	offset := 0
	if q.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(q.Since, "o"))
		if !strings.HasPrefix(q.Since, "o") || err != nil || n < 0 {
			return PublicRoomsPage{}, mxhttp.InvalidParam("Invalid since token %q", q.Since)
		}
		offset = n
	}
	ids, err := storage.PublishedRooms(ctx, r.db.Read())
	if err != nil {
		return PublicRoomsPage{}, err
	}
	term := strings.ToLower(q.Filter.GenericSearchTerm)
	all := []Info{}
	for _, id := range ids {
		info, err := r.Info(ctx, id)
		if err != nil {
			return PublicRoomsPage{}, err
		}
		if q.ThirdPartyInstanceID != "" || !matchesRoomTypes(info.RoomType, q.Filter.RoomTypes) {
			continue
		}
		if term != "" && !strings.Contains(strings.ToLower(info.Name), term) && !strings.Contains(strings.ToLower(info.Topic), term) &&
			!strings.Contains(strings.ToLower(info.CanonicalAlias), term) && !strings.Contains(strings.ToLower(info.RoomID), term) {
			continue
		}
		all = append(all, info)
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].NumJoinedMembers != all[j].NumJoinedMembers {
			return all[i].NumJoinedMembers > all[j].NumJoinedMembers
		}
		return all[i].RoomID < all[j].RoomID
	})
	page := PublicRoomsPage{Total: len(all)}
	start := min(offset, len(all))
	end := min(start+limit, len(all))
	page.Chunk = all[start:end]
	if end < len(all) {
		page.NextBatch = "o" + strconv.Itoa(end)
	}
	if start > 0 {
		page.PrevBatch = "o" + strconv.Itoa(max(start-limit, 0))
	}
	return page, nil
}

// matchesRoomTypes applies the room_types filter: absent or empty matches
// every room; null in the list matches rooms without a type.
func matchesRoomTypes(roomType string, types []*string) bool {
	if len(types) == 0 {
		return true
	}
	for _, t := range types {
		if t == nil && roomType == "" || t != nil && *t == roomType {
			return true
		}
	}
	return false
}
