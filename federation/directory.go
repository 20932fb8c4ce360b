package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
)

// The published room directory over federation (server-server API,
// Public Room Directory): served from ours, and asked of others for our
// clients' /publicRooms?server=.

// GET /v1/publicRooms
func (a *API) getPublicRooms(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var req rooms.PublicRoomsQuery
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("limit must be an integer"))
			return
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	req.IncludeAllNetworks = q.Get("include_all_networks") == "true"
	req.ThirdPartyInstanceID = q.Get("third_party_instance_id")
	a.servePublicRooms(w, r, req)
}

// POST /v1/publicRooms
func (a *API) postPublicRooms(w http.ResponseWriter, r *http.Request) {
	var req rooms.PublicRoomsQuery
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	a.servePublicRooms(w, r, req)
}

func (a *API) servePublicRooms(w http.ResponseWriter, r *http.Request, req rooms.PublicRoomsQuery) {
	page, err := a.rooms.PublicRooms(r.Context(), req)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, page)
}

// PublicRooms asks server for its directory (POST, which carries the
// filter; servers without it answer GET).
func (a *API) PublicRooms(ctx context.Context, server string, q rooms.PublicRoomsQuery) (json.RawMessage, error) {
	s := spec.ServerName(server)
	var out json.RawMessage
	err := a.request(ctx, http.MethodPost, s, "/_matrix/federation/v1/publicRooms", q, &out)
	if err != nil && q.Filter.GenericSearchTerm == "" && len(q.Filter.RoomTypes) == 0 {
		v := url.Values{}
		if q.Limit != nil {
			v.Set("limit", strconv.Itoa(*q.Limit))
		}
		if q.Since != "" {
			v.Set("since", q.Since)
		}
		err = a.query(ctx, s, "/_matrix/federation/v1/publicRooms?"+v.Encode(), &out)
	}
	if err != nil {
		return nil, remoteError(err, "The room directory of "+server+" is not available")
	}
	return out, nil
}
