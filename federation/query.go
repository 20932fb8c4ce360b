package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Queries (server-server API, Querying for information), both ways.

// GET /_matrix/federation/v1/query/directory?room_alias=: a local alias's
// room and the servers in it.
func (a *API) queryDirectory(r *http.Request, origin spec.ServerName) (any, error) {
	alias := r.URL.Query().Get("room_alias")
	if alias == "" {
		return nil, mxhttp.MissingParam("room_alias is required")
	}
	roomID, _, err := storage.ResolveAlias(r.Context(), a.db.Read(), alias)
	if errors.Is(err, storage.ErrNotFound) && a.appsvc.QueryAlias(r.Context(), alias) {
		// An application service made the alias on being asked.
		roomID, _, err = storage.ResolveAlias(r.Context(), a.db.Read(), alias)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return nil, err
	}
	servers := []string{string(a.serverName)}
	joined, err := a.queue.joinedServers(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	for s := range joined {
		if s != a.serverName {
			servers = append(servers, string(s))
		}
	}
	return map[string]any{"room_id": roomID, "servers": servers}, nil
}

// GET /_matrix/federation/v1/query/profile?user_id=&field=: a local user's
// profile, or one field of it.
func (a *API) queryProfile(r *http.Request, origin spec.ServerName) (any, error) {
	userID, field := r.URL.Query().Get("user_id"), r.URL.Query().Get("field")
	if userID == "" {
		return nil, mxhttp.MissingParam("user_id is required")
	}
	if senderServer(userID) != a.serverName {
		return nil, mxhttp.InvalidParam("%s is not a user of this server", userID)
	}
	p, err := a.db.GetProfile(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Profile not found")
	}
	if err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	for k, v := range p.Fields {
		out[k] = v
	}
	if p.DisplayName != nil {
		out["displayname"], _ = json.Marshal(*p.DisplayName)
	}
	if p.AvatarURL != nil {
		out["avatar_url"], _ = json.Marshal(*p.AvatarURL)
	}
	if field != "" {
		v, ok := out[field]
		if !ok {
			return nil, mxhttp.NotFound("The user has no profile field %s", field)
		}
		out = map[string]json.RawMessage{field: v}
	}
	return out, nil
}

// QueryAlias asks the alias's server which room it names, and which
// servers are in it.
func (a *API) QueryAlias(ctx context.Context, alias string) (roomID string, servers []string, err error) {
	_, server, ok := strings.Cut(alias, ":")
	if !ok {
		return "", nil, mxhttp.InvalidParam("%q is not a room alias", alias)
	}
	var res struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	err = a.query(ctx, spec.ServerName(server), "/_matrix/federation/v1/query/directory?room_alias="+url.QueryEscape(alias), &res)
	if err != nil {
		return "", nil, remoteError(err, "Room alias "+alias+" not found")
	}
	if res.RoomID == "" {
		return "", nil, mxhttp.NotFound("Room alias %s not found", alias)
	}
	return res.RoomID, res.Servers, nil
}

// QueryProfile asks a remote user's server for their profile; field ""
// means the whole profile.
func (a *API) QueryProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	server := senderServer(userID)
	if server == "" {
		return nil, mxhttp.InvalidParam("%q is not a user ID", userID)
	}
	path := "/_matrix/federation/v1/query/profile?user_id=" + url.QueryEscape(userID)
	if field != "" {
		path += "&field=" + url.QueryEscape(field)
	}
	var res map[string]json.RawMessage
	if err := a.query(ctx, server, path, &res); err != nil {
		return nil, remoteError(err, "Profile not found")
	}
	return res, nil
}

// query makes a signed GET to another server and decodes the answer.
func (a *API) query(ctx context.Context, server spec.ServerName, path string, out any) error {
	return a.request(ctx, http.MethodGet, server, path, nil, out)
}

// remoteError turns a failed query into the client's answer: the remote's
// 404 as M_NOT_FOUND, anything else (unreachable, refused) as 502.
func remoteError(err error, notFound string) error {
	var he gomatrix.HTTPError
	if errors.As(err, &he) && he.Code == http.StatusNotFound {
		return mxhttp.NotFound("%s", notFound)
	}
	return &mxhttp.Error{Status: http.StatusBadGateway, ErrCode: "M_UNKNOWN", Message: "The remote server could not be queried"}
}
