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
func (a *API) getPublicRooms(r *http.Request, origin spec.ServerName) (any, error) {
	q := r.URL.Query()
	var req rooms.PublicRoomsQuery
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil {
			return nil, mxhttp.InvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	req.Since = q.Get("since")
	req.IncludeAllNetworks = q.Get("include_all_networks") == "true"
	req.ThirdPartyInstanceID = q.Get("third_party_instance_id")
	return a.servePublicRooms(r, req)
}

// POST /v1/publicRooms
func (a *API) postPublicRooms(r *http.Request, origin spec.ServerName) (any, error) {
	var req rooms.PublicRoomsQuery
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	return a.servePublicRooms(r, req)
}

func (a *API) servePublicRooms(r *http.Request, req rooms.PublicRoomsQuery) (any, error) {
	page, err := a.rooms.PublicRooms(r.Context(), req)
	if err != nil {
		return nil, err
	}
	return page, nil
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
