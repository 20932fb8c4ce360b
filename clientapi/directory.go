package clientapi

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// The published room directory (client-server API, Room discovery):
// GET/PUT /v3/directory/list/room/{roomId}, GET/POST /v3/publicRooms.

// optionalCaller authenticates the request when it carries an access token;
// without one the caller is anonymous (empty UserID).
func (a *API) optionalCaller(r *http.Request) (accounts.Caller, error) {
	if r.Header.Get("Authorization") == "" && r.URL.Query().Get("access_token") == "" {
		return accounts.Caller{}, nil
	}
	return a.accounts.Authenticate(r)
}

// GET /v3/directory/list/room/{roomId}
func (a *API) getRoomVisibility(r *http.Request, _ accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	room, err := storage.GetRoom(r.Context(), a.db.Read(), roomID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Room not found")
	}
	if err != nil {
		return nil, err
	}
	vis := "private"
	if room.Published {
		vis = "public"
	}
	return map[string]string{"visibility": vis}, nil
}

// PUT /v3/directory/list/room/{roomId}: like Synapse, a server admin or a
// joined member allowed to send m.room.canonical_alias may publish a room.
func (a *API) putRoomVisibility(r *http.Request, c accounts.Caller) (any, error) {
	roomID := pathParam(r, "roomId")
	var body struct {
		Visibility *string `json:"visibility"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	vis := "public"
	if body.Visibility != nil {
		vis = *body.Visibility
	}
	if vis != "public" && vis != "private" {
		return nil, mxhttp.InvalidParam("visibility must be public or private")
	}
	if _, err := a.rooms.Version(r.Context(), roomID); errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Room not found")
	} else if err != nil {
		return nil, err
	}
	allowed, err := a.canSendState(r, roomID, c.UserID, spec.MRoomCanonicalAlias)
	if err != nil {
		return nil, err
	}
	if !allowed {
		if u, err := a.db.GetUser(r.Context(), c.UserID); err == nil && u.IsAdmin {
			allowed = true
		}
	}
	if !allowed {
		return nil, mxhttp.Forbidden("You may not change the visibility of %s", roomID)
	}
	if err := a.db.SetRoomPublished(r.Context(), roomID, vis == "public"); err != nil {
		return nil, err
	}
	return map[string]any{}, nil
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

type publicRoomsRequest = rooms.PublicRoomsQuery

// GET /v3/publicRooms
func (a *API) getPublicRooms(r *http.Request, _ accounts.Caller) (any, error) {
	q := r.URL.Query()
	var req publicRoomsRequest
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return nil, mxhttp.InvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	return a.publicRooms(r, req)
}

// POST /v3/publicRooms
func (a *API) postPublicRooms(r *http.Request, c accounts.Caller) (any, error) {
	var req publicRoomsRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	return a.publicRooms(r, req)
}

// publicRooms lists published rooms: ours, or with server= another
// server's (asked over federation).
func (a *API) publicRooms(r *http.Request, req publicRoomsRequest) (any, error) {
	if server := r.URL.Query().Get("server"); server != "" && server != a.conf().ServerName {
		if a.fed == nil {
			return nil, mxhttp.NotFound("The room directory of %s is not available without federation", server)
		}
		page, err := a.fed.PublicRooms(r.Context(), server, req)
		if err != nil {
			return nil, err
		}
		return page, nil
	}
	page, err := a.rooms.PublicRooms(r.Context(), req)
	if err != nil {
		return nil, err
	}
	return page, nil
}
