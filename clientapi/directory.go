package clientapi

import (
	"errors"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// The published room directory (client-server API, Room discovery):
// GET/PUT /v3/directory/list/room/{roomId}, GET/POST /v3/publicRooms.

const (
	defaultPublicRoomsLimit = 100
	maxPublicRoomsLimit     = 500
)

// optionalCaller authenticates the request when it carries an access token;
// without one the caller is anonymous (empty UserID).
func (a *API) optionalCaller(r *http.Request) (accounts.Caller, error) {
	if r.Header.Get("Authorization") == "" && r.URL.Query().Get("access_token") == "" {
		return accounts.Caller{}, nil
	}
	return a.accounts.Authenticate(r)
}

// GET /v3/directory/list/room/{roomId}
func (a *API) getRoomVisibility(w http.ResponseWriter, r *http.Request) {
	roomID := pathParam(r, "roomId")
	room, err := storage.GetRoom(r.Context(), a.db.Read(), roomID)
	if errors.Is(err, storage.ErrNotFound) {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Room not found"))
		return
	}
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	vis := "private"
	if room.Published {
		vis = "public"
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"visibility": vis})
}

// PUT /v3/directory/list/room/{roomId}: like Synapse, a server admin or a
// joined member allowed to send m.room.canonical_alias may publish a room.
func (a *API) putRoomVisibility(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID := pathParam(r, "roomId")
	var body struct {
		Visibility *string `json:"visibility"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	vis := "public"
	if body.Visibility != nil {
		vis = *body.Visibility
	}
	if vis != "public" && vis != "private" {
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("visibility must be public or private"))
		return
	}
	if _, err := a.rooms.Version(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Room not found"))
		return
	} else if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	allowed, err := a.canSendState(r, roomID, c.UserID, spec.MRoomCanonicalAlias)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if !allowed {
		if u, err := a.db.GetUser(r.Context(), c.UserID); err == nil && u.IsAdmin {
			allowed = true
		}
	}
	if !allowed {
		mxhttp.WriteError(w, r, mxhttp.Forbidden("You may not change the visibility of %s", roomID))
		return
	}
	if err := a.db.SetRoomPublished(r.Context(), roomID, vis == "public"); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{})
}

// canSendState reports whether userID is joined to the room with the power
// to send a state event of the given type.
func (a *API) canSendState(r *http.Request, roomID, userID, eventType string) (bool, error) {
	m, _, err := a.rooms.MembershipOf(r.Context(), roomID, userID)
	if err != nil || m != spec.Join {
		return false, err
	}
	pl, err := a.rooms.PowerLevels(r.Context(), roomID)
	if err != nil {
		return false, err
	}
	return pl.UserLevel(spec.SenderID(userID)) >= pl.EventLevel(eventType, true), nil
}

type publicRoomsRequest struct {
	Limit  *int   `json:"limit"`
	Since  string `json:"since"`
	Filter struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"`
	} `json:"filter"`
	IncludeAllNetworks   bool   `json:"include_all_networks"`
	ThirdPartyInstanceID string `json:"third_party_instance_id"`
}

// GET /v3/publicRooms
func (a *API) getPublicRooms(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var req publicRoomsRequest
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("limit must be an integer"))
			return
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	a.publicRooms(w, r, req)
}

// POST /v3/publicRooms
func (a *API) postPublicRooms(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req publicRoomsRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.publicRooms(w, r, req)
}

// publicRooms lists published rooms, largest first. Only this server's
// directory exists until federation: another server's is 404. Hearth has no
// application-service networks, so include_all_networks changes nothing and
// a third_party_instance_id matches no room.
func (a *API) publicRooms(w http.ResponseWriter, r *http.Request, req publicRoomsRequest) {
	if server := r.URL.Query().Get("server"); server != "" && server != a.cfg.ServerName {
		mxhttp.WriteError(w, r, mxhttp.NotFound("The room directory of %s is not available: federation is not supported yet", server))
		return
	}
	limit := defaultPublicRoomsLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("limit must not be negative"))
			return
		}
		if *req.Limit > 0 {
			limit = min(*req.Limit, maxPublicRoomsLimit)
		}
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "o"))
		if !strings.HasPrefix(req.Since, "o") || err != nil || n < 0 {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("Invalid since token %q", req.Since))
			return
		}
		offset = n
	}
	ids, err := storage.PublishedRooms(r.Context(), a.db.Read())
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	term := strings.ToLower(req.Filter.GenericSearchTerm)
	all := []rooms.Info{}
	for _, id := range ids {
		info, err := a.rooms.Info(r.Context(), id)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		if req.ThirdPartyInstanceID != "" || !matchesRoomTypes(info.RoomType, req.Filter.RoomTypes) {
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
	resp := map[string]any{"total_room_count_estimate": len(all)}
	start := min(offset, len(all))
	end := min(start+limit, len(all))
	resp["chunk"] = all[start:end]
	if end < len(all) {
		resp["next_batch"] = "o" + strconv.Itoa(end)
	}
	if start > 0 {
		resp["prev_batch"] = "o" + strconv.Itoa(max(start-limit, 0))
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
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
