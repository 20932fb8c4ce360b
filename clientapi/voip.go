package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"strconv"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
)

// GET /_matrix/client/v3/voip/turnServer (client-server API, Voice over IP).
// Credentials follow the TURN REST API scheme coturn checks with
// use-auth-secret: username "<expiry unix seconds>:<user ID>", password
// base64(HMAC-SHA1(shared secret, username)). With no TURN server
// configured the answer is {}, as Synapse's is, and clients fall back to
// their own.
func (a *API) turnServer(r *http.Request, c accounts.Caller) (any, error) {
	cfg := a.conf() // one snapshot: a reload may come meanwhile
	if len(cfg.TURNURIs) == 0 {
		return struct{}{}, nil
	}
	lifetime, err := config.ParseLifetime(cfg.TURNUserLifetime) // checked by Validate
	if err != nil {
		return nil, err
	}
	username := strconv.FormatInt(time.Now().Add(lifetime).Unix(), 10) + ":" + c.UserID
	mac := hmac.New(sha1.New, []byte(cfg.TURNSharedSecret))
	mac.Write([]byte(username))
	return map[string]any{
		"username": username,
		"password": base64.StdEncoding.EncodeToString(mac.Sum(nil)),
		"uris":     cfg.TURNURIs,
		"ttl":      int64(lifetime / time.Second),
	}, nil
}
