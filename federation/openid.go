package federation

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// GET /_matrix/federation/v1/openid/userinfo?access_token= (server-server
// API, OpenID). Unsigned: the caller is any third party a user handed an
// OpenID token to, not necessarily a homeserver.
func (a *API) openIDUserInfo(r *http.Request, _ spec.ServerName) (any, error) {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		return nil, mxhttp.MissingParam("access_token is required")
	}
	userID, err := storage.OpenIDTokenUser(r.Context(), a.db.Read(), token, time.Now().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.UnknownToken("Access token unknown or expired")
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"sub": userID}, nil
}

// OpenIDUserInfo exchanges an OpenID token at another server's
// /openid/userinfo (rtc.RemoteOpenID, for the LiveKit authorization
// service) and returns the user it names, checked to be on that server.
// Errors leave the token out: the request URL carries it.
func (a *API) OpenIDUserInfo(ctx context.Context, server, token string) (string, error) {
	if server == string(a.serverName) {
		return "", errors.New("openid userinfo: the token is this server's")
	}
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(server)); !ok {
		return "", fmt.Errorf("openid userinfo: %q is not a server name", server)
	}
	u := url.URL{Scheme: "matrix", Host: server, Path: "/_matrix/federation/v1/openid/userinfo",
		RawQuery: url.Values{"access_token": {token}}.Encode()}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("openid userinfo: %q is not a server name", server)
	}
	var res struct {
		Sub string `json:"sub"`
	}
	if err := a.client.DoRequestAndParseResponse(ctx, req, &res); err != nil {
		var he gomatrix.HTTPError
		if errors.As(err, &he) {
			return "", fmt.Errorf("openid userinfo at %s: HTTP %d", server, he.Code)
		}
		return "", fmt.Errorf("openid userinfo at %s: the server could not be reached", server)
	}
	if senderServer(res.Sub) != spec.ServerName(server) {
		return "", fmt.Errorf("openid userinfo at %s: it answered a user of another server", server)
	}
	return res.Sub, nil
}
