package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/filter"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Filtering (client-server API, Filtering; filter.yaml). Filters are stored
// as uploaded (whitespace removed) and returned as stored; package filter
// parses them for the endpoints that apply them.

// POST /_matrix/client/v3/user/{userId}/filter.
func (a *API) postFilter(r *http.Request, c accounts.Caller) (any, error) {
	userID := pathParam(r, "userId")
	if err := requireSelf(c, userID, "create filters"); err != nil {
		return nil, err
	}
	var raw json.RawMessage
	if err := mxhttp.ReadJSON(r, &raw); err != nil {
		return nil, err
	}
	if _, err := filter.Parse(raw); err != nil {
		return nil, err
	}
	compact, err := compactJSON(raw)
	if err != nil {
		return nil, err
	}
	id, err := a.db.InsertFilter(r.Context(), userID, compact)
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": id}, nil
}

// GET /_matrix/client/v3/user/{userId}/filter/{filterId}.
func (a *API) getFilter(r *http.Request, c accounts.Caller) (any, error) {
	userID := pathParam(r, "userId")
	if err := requireSelf(c, userID, "read filters"); err != nil {
		return nil, err
	}
	f, err := a.db.GetFilter(r.Context(), userID, pathParam(r, "filterId"))
	if errors.Is(err, storage.ErrNotFound) {
		err = mxhttp.NotFound("No such filter")
	}
	if err != nil {
		return nil, err
	}
	return json.RawMessage(f), nil
}
