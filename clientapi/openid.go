package clientapi

import (
	"database/sql"
	"net/http"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// OpenID (client-server API, OpenID): a token a user hands to a third
// party, which exchanges it at this server's federation
// /openid/userinfo for the user's ID and nothing else.

// openIDTokenLifetime is how long an OpenID token can be exchanged (as in
// Synapse): long enough for a widget or a call to start, short enough
// that a leaked one soon stops proving anything.
const openIDTokenLifetime = time.Hour

// POST /_matrix/client/v3/user/{userId}/openid/request_token
func (a *API) requestOpenIDToken(r *http.Request, c accounts.Caller) (any, error) {
	userID := pathParam(r, "userId")
	if err := requireSelf(c, userID, "request OpenID tokens"); err != nil {
		return nil, err
	}
	var body map[string]any // an empty object, reserved for future use
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if a.rateLimited(c) {
		if err := a.limit(r, a.live().limits.message, "openid:"+c.UserID); err != nil {
			return nil, err
		}
	}
	token := accounts.NewToken("oid_")
	now := time.Now()
	err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.InsertOpenIDToken(r.Context(), tx, token, c.UserID, now.UnixMilli(), now.Add(openIDTokenLifetime).UnixMilli())
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"access_token":       token,
		"token_type":         "Bearer",
		"matrix_server_name": a.conf().ServerName,
		"expires_in":         int64(openIDTokenLifetime / time.Second),
	}, nil
}
