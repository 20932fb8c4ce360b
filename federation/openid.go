package federation

import (
	"errors"
	"net/http"
	"time"

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
