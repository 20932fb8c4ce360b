package admin

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Rooms (Synapse's docs/admin_api/rooms.md).

// roomSummary is a room as the room list and details show it.
type roomSummary struct {
	RoomID             string  `json:"room_id"`
	Name               *string `json:"name"`
	Topic              *string `json:"topic"`
	Avatar             *string `json:"avatar"`
	CanonicalAlias     *string `json:"canonical_alias"`
	JoinedMembers      int     `json:"joined_members"`
	JoinedLocalMembers int     `json:"joined_local_members"`
	JoinedLocalDevices *int    `json:"joined_local_devices,omitempty"` // details only
	Version            string  `json:"version"`
	Creator            string  `json:"creator"`
	Encryption         *string `json:"encryption"`
	Federatable        bool    `json:"federatable"`
	Public             bool    `json:"public"`
	JoinRules          *string `json:"join_rules"`
	GuestAccess        *string `json:"guest_access"`
	HistoryVisibility  *string `json:"history_visibility"`
	StateEvents        int     `json:"state_events"`
	RoomType           *string `json:"room_type"`
	Forgotten          *bool   `json:"forgotten,omitempty"` // details only
	Tombstoned         bool    `json:"tombstoned"`
	ReplacementRoom    *string `json:"replacement_room"`

	localMembers []string // joined local users
}

func strp(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// summarise reads a room's current state; storage.ErrNotFound for a room
// this server has no state of (unknown, or a stub for a remote invite).
func (a *API) summarise(ctx context.Context, roomID string) (*roomSummary, error) {
	st, err := a.rooms.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	if _, ok := st[storage.StateKey{Type: spec.MRoomCreate}]; !ok {
		return nil, storage.ErrNotFound
	}
	s := &roomSummary{RoomID: roomID, StateEvents: len(st), Federatable: true}
	wanted := []string{spec.MRoomCreate, spec.MRoomName, spec.MRoomTopic, "m.room.avatar", spec.MRoomCanonicalAlias,
		"m.room.encryption", spec.MRoomJoinRules, spec.MRoomGuestAccess, spec.MRoomHistoryVisibility, "m.room.tombstone"}
	var ids []string
	for _, t := range wanted {
		if id, ok := st[storage.StateKey{Type: t}]; ok {
			ids = append(ids, id)
		}
	}
	evs, err := a.rooms.Events(ctx, a.db.Read(), ids)
	if err != nil {
		return nil, err
	}
	for _, ev := range evs {
		var c struct {
			Name        string `json:"name"`
			Topic       string `json:"topic"`
			URL         string `json:"url"`
			Alias       string `json:"alias"`
			Algorithm   string `json:"algorithm"`
			JoinRule    string `json:"join_rule"`
			GuestAccess string `json:"guest_access"`
			HistoryVis  string `json:"history_visibility"`
			Type        string `json:"type"`
			RoomVersion string `json:"room_version"`
			Federate    *bool  `json:"m.federate"`
			Replacement string `json:"replacement_room"`
		}
		_ = json.Unmarshal(ev.PDU.Content(), &c)
		switch ev.Type {
		case spec.MRoomCreate:
			s.Creator, s.Version, s.RoomType = ev.Sender, c.RoomVersion, strp(c.Type)
			if s.Version == "" {
				s.Version = "1"
			}
			if c.Federate != nil {
				s.Federatable = *c.Federate
			}
		case spec.MRoomName:
			s.Name = strp(c.Name)
		case spec.MRoomTopic:
			s.Topic = strp(c.Topic)
		case "m.room.avatar":
			s.Avatar = strp(c.URL)
		case spec.MRoomCanonicalAlias:
			s.CanonicalAlias = strp(c.Alias)
		case "m.room.encryption":
			s.Encryption = strp(c.Algorithm)
		case spec.MRoomJoinRules:
			s.JoinRules = strp(c.JoinRule)
		case spec.MRoomGuestAccess:
			s.GuestAccess = strp(c.GuestAccess)
		case spec.MRoomHistoryVisibility:
			s.HistoryVisibility = strp(c.HistoryVis)
		case "m.room.tombstone":
			s.Tombstoned, s.ReplacementRoom = true, strp(c.Replacement)
		}
	}
	ms, err := storage.MembersOfRoom(ctx, a.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.Membership != spec.Join {
			continue
		}
		s.JoinedMembers++
		if a.isLocal(m.UserID) {
			s.JoinedLocalMembers++
			s.localMembers = append(s.localMembers, m.UserID)
		}
	}
	room, err := storage.GetRoom(ctx, a.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	s.Public = room.Published
	return s, nil
}

func (a *API) isLocal(userID string) bool {
	_, server, _ := strings.Cut(userID, ":")
	return server == a.cfg.ServerName
}

// roomOrders are the list's order_by values: each compares two rooms for
// the forward direction (Synapse's: names A-Z, sizes largest first).
var roomOrders = map[string]func(x, y *roomSummary) int{
	"name":                 func(x, y *roomSummary) int { return strings.Compare(deref(x.Name), deref(y.Name)) },
	"canonical_alias":      func(x, y *roomSummary) int { return strings.Compare(deref(x.CanonicalAlias), deref(y.CanonicalAlias)) },
	"joined_members":       func(x, y *roomSummary) int { return y.JoinedMembers - x.JoinedMembers },
	"joined_local_members": func(x, y *roomSummary) int { return y.JoinedLocalMembers - x.JoinedLocalMembers },
	"version":              func(x, y *roomSummary) int { return strings.Compare(y.Version, x.Version) },
	"creator":              func(x, y *roomSummary) int { return strings.Compare(x.Creator, y.Creator) },
	"encryption":           func(x, y *roomSummary) int { return strings.Compare(deref(x.Encryption), deref(y.Encryption)) },
	"federatable":          func(x, y *roomSummary) int { return boolCmp(y.Federatable, x.Federatable) },
	"public":               func(x, y *roomSummary) int { return boolCmp(y.Public, x.Public) },
	"join_rules":           func(x, y *roomSummary) int { return strings.Compare(deref(x.JoinRules), deref(y.JoinRules)) },
	"guest_access":         func(x, y *roomSummary) int { return strings.Compare(deref(x.GuestAccess), deref(y.GuestAccess)) },
	"history_visibility": func(x, y *roomSummary) int {
		return strings.Compare(deref(x.HistoryVisibility), deref(y.HistoryVisibility))
	},
	"state_events": func(x, y *roomSummary) int { return y.StateEvents - x.StateEvents },
}

func init() {
	roomOrders["alphabetical"] = roomOrders["name"]
	roomOrders["size"] = roomOrders["joined_members"]
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func boolCmp(x, y bool) int {
	switch {
	case x == y:
		return 0
	case x:
		return 1
	}
	return -1
}

// GET /_synapse/admin/v1/rooms: every room this server has state of,
// filtered by search_term (name, canonical alias, room ID), public_rooms
// and empty_rooms, ordered and paged. The list is built from each room's
// current state on every call: fine for the rooms of a small server.
func (a *API) listRooms(r *http.Request, c accounts.Caller) (any, error) {
	from, limit, err := paging(r, 100)
	if err != nil {
		return nil, err
	}
	orderBy := r.URL.Query().Get("order_by")
	if orderBy == "" {
		orderBy = "name"
	}
	cmp, ok := roomOrders[orderBy]
	if !ok {
		return nil, mxhttp.InvalidParam("Unknown value for order_by: %s", orderBy)
	}
	backwards, err := dirParam(r, "f")
	if err != nil {
		return nil, err
	}
	public, err := boolParam(r, "public_rooms")
	if err != nil {
		return nil, err
	}
	empty, err := boolParam(r, "empty_rooms")
	if err != nil {
		return nil, err
	}
	term := r.URL.Query().Get("search_term")
	ids, err := a.db.AllRoomIDs(r.Context())
	if err != nil {
		return nil, err
	}
	var list []*roomSummary
	for _, id := range ids {
		s, err := a.summarise(r.Context(), id)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if term != "" && !strings.Contains(strings.ToLower(deref(s.Name)), strings.ToLower(term)) &&
			!strings.Contains(strings.ToLower(aliasLocalpart(deref(s.CanonicalAlias))), strings.ToLower(term)) &&
			!strings.Contains(s.RoomID, term) {
			continue
		}
		if public != nil && s.Public != *public {
			continue
		}
		if empty != nil && (s.JoinedMembers == 0) != *empty {
			continue
		}
		list = append(list, s)
	}
	sort.SliceStable(list, func(i, j int) bool {
		x, y := list[i], list[j]
		if backwards {
			x, y = y, x
		}
		if d := cmp(x, y); d != 0 {
			return d < 0
		}
		return x.RoomID < y.RoomID
	})
	total := len(list)
	page := []*roomSummary{}
	if from < total {
		end := min(from+limit, total)
		page = list[from:end]
	}
	body := map[string]any{"rooms": page, "offset": from, "total_rooms": total}
	if from+len(page) < total {
		body["next_batch"] = from + len(page)
	}
	if from > 0 {
		body["prev_batch"] = max(from-limit, 0)
	}
	return body, nil
}

func aliasLocalpart(alias string) string {
	lp, _, _ := strings.Cut(strings.TrimPrefix(alias, "#"), ":")
	return lp
}

// knownRoom is the {roomId} of a room this server has state of, else 400
// M_INVALID_PARAM or 404 M_NOT_FOUND.
func (a *API) knownRoom(r *http.Request) (*roomSummary, error) {
	id, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	s, err := a.summarise(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Room not found")
	}
	return s, err
}

// GET /_synapse/admin/v1/rooms/{roomId}.
func (a *API) roomDetails(r *http.Request, c accounts.Caller) (any, error) {
	s, err := a.knownRoom(r)
	if err != nil {
		return nil, err
	}
	devices := 0
	for _, u := range s.localMembers {
		devs, err := a.db.ListDevices(r.Context(), u)
		if err != nil {
			return nil, err
		}
		devices += len(devs)
	}
	s.JoinedLocalDevices = &devices
	// forgotten: every local user who was in the room forgot it.
	ms, err := storage.MembersOfRoom(r.Context(), a.db.Read(), s.RoomID)
	if err != nil {
		return nil, err
	}
	forgotten, locals := true, 0
	for _, m := range ms {
		if !a.isLocal(m.UserID) {
			continue
		}
		locals++
		f, err := storage.IsForgotten(r.Context(), a.db.Read(), m.UserID, s.RoomID)
		if err != nil {
			return nil, err
		}
		forgotten = forgotten && f
	}
	forgotten = locals > 0 && forgotten
	s.Forgotten = &forgotten
	return s, nil
}

// GET /_synapse/admin/v1/rooms/{roomId}/members: the joined members.
func (a *API) roomMembers(r *http.Request, c accounts.Caller) (any, error) {
	s, err := a.knownRoom(r)
	if err != nil {
		return nil, err
	}
	ms, err := storage.MembersOfRoom(r.Context(), a.db.Read(), s.RoomID)
	if err != nil {
		return nil, err
	}
	members := []string{}
	for _, m := range ms {
		if m.Membership == spec.Join {
			members = append(members, m.UserID)
		}
	}
	sort.Strings(members)
	return map[string]any{"members": members, "total": len(members)}, nil
}

// GET /_synapse/admin/v1/rooms/{roomId}/state[?type=]: the current state
// as client events.
func (a *API) roomState(r *http.Request, c accounts.Caller) (any, error) {
	s, err := a.knownRoom(r)
	if err != nil {
		return nil, err
	}
	var st rooms.State
	if t := r.URL.Query().Get("type"); t != "" {
		st, err = a.rooms.CurrentStateOfType(r.Context(), s.RoomID, t)
	} else {
		st, err = a.rooms.CurrentState(r.Context(), s.RoomID)
	}
	if err != nil {
		return nil, err
	}
	evs, err := a.rooms.StateEvents(r.Context(), st)
	if err != nil {
		return nil, err
	}
	sort.Slice(evs, func(i, j int) bool { return evs[i].StreamPos < evs[j].StreamPos })
	out, err := a.rooms.Format(r.Context(), evs, rooms.Viewer{UserID: c.UserID})
	if err != nil {
		return nil, err
	}
	if out == nil {
		out = []rooms.ClientEvent{}
	}
	return map[string]any{"state": out}, nil
}

// GET /_synapse/admin/v1/rooms/{roomId}/block. A room may be blocked
// before this server knows it.
func (a *API) getRoomBlock(r *http.Request, c accounts.Caller) (any, error) {
	id, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	blocked, by, err := storage.RoomBlocked(r.Context(), a.db.Read(), id)
	if err != nil {
		return nil, err
	}
	if !blocked {
		return map[string]any{"block": false}, nil
	}
	return map[string]any{"block": true, "user_id": by}, nil
}

// PUT /_synapse/admin/v1/rooms/{roomId}/block {"block": bool}.
func (a *API) putRoomBlock(r *http.Request, c accounts.Caller) (any, error) {
	id, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Block *bool `json:"block"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Block == nil {
		return nil, mxhttp.BadJSON("Missing boolean 'block'")
	}
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.SetRoomBlocked(r.Context(), tx, id, *req.Block, c.UserID)
	})
	if err != nil {
		return nil, err
	}
	return map[string]bool{"block": *req.Block}, nil
}
