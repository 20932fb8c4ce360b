package federation

import (
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// keyValidity is how long other servers may cache our key response
// (valid_until_ts). A week, like other homeservers: short enough that a key
// rotation spreads, long enough that servers need not ask often.
const keyValidity = 7 * 24 * time.Hour

// GET /_matrix/key/v2/server (server-server API, Publishing Keys): our
// verify keys, signed with the key itself.
func (a *API) serverKeys(w http.ResponseWriter, r *http.Request) {
	b, err := a.signedServerKeys(time.Now())
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

func (a *API) signedServerKeys(now time.Time) ([]byte, error) {
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName:   spec.ServerName(a.serverName),
		ValidUntilTS: spec.AsTimestamp(now.Add(keyValidity)),
		VerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
			a.key.ID: {Key: a.key.PublicBase64()},
		},
		OldVerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{},
	}
	unsigned, err := gomatrixserverlib.CanonicalJSON(mustMarshal(fields))
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.SignJSON(a.serverName, a.key.ID, a.key.Private, unsigned)
}
