package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// keyValidity is how long other servers may cache our key response
// (valid_until_ts). A week, like other homeservers: short enough that a key
// rotation spreads, long enough that servers need not ask often.
const keyValidity = 7 * 24 * time.Hour

// OldKeysFile is the file in the data directory listing retired signing
// keys, in the old_verify_keys format of the key API:
//
//	{"ed25519:old": {"key": "<unpadded base64 public key>", "expired_ts": 1700000000000}}
//
// After rotating the signing key, put the old key's public half here so
// that events and requests it signed stay verifiable.
const OldKeysFile = "old_signing_keys.json"

// loadOldKeys reads OldKeysFile; a missing file means no old keys.
func loadOldKeys(path string) (map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey, error) {
	out := map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey{}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading old signing keys: %w", err)
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("old signing keys %s: %w", path, err)
	}
	for id, k := range out {
		if len(k.Key) != 32 || k.ExpiredTS == 0 {
			return nil, fmt.Errorf("old signing keys %s: %s needs a 32-byte key and an expired_ts", path, id)
		}
	}
	return out, nil
}

// ownKeys are our keys as the key ring sees them: the current one valid
// far into the future, old ones with their expiry.
func (a *API) ownKeys() map[gomatrixserverlib.KeyID]lookupRes {
	out := map[gomatrixserverlib.KeyID]lookupRes{
		a.key.ID: {VerifyKey: gomatrixserverlib.VerifyKey{Key: a.key.PublicBase64()}, ValidUntilTS: spec.AsTimestamp(time.Unix(1<<37, 0))},
	}
	for id, k := range a.oldKeys {
		out[id] = lookupRes{VerifyKey: k.VerifyKey, ExpiredTS: k.ExpiredTS}
	}
	return out
}

// GET /_matrix/key/v2/server (server-server API, Publishing Keys): our
// verify keys, signed with the key itself.
func (a *API) serverKeys(r *http.Request, origin spec.ServerName) (any, error) {
	b, err := a.signedServerKeys(time.Now())
	if err != nil {
		return nil, err
	}
	return json.RawMessage(b), nil
}

func (a *API) signedServerKeys(now time.Time) ([]byte, error) {
	fields := gomatrixserverlib.ServerKeyFields{
		ServerName:   a.serverName,
		ValidUntilTS: spec.AsTimestamp(now.Add(keyValidity)),
		VerifyKeys: map[gomatrixserverlib.KeyID]gomatrixserverlib.VerifyKey{
			a.key.ID: {Key: a.key.PublicBase64()},
		},
		OldVerifyKeys: a.oldKeys,
	}
	unsigned, err := gomatrixserverlib.CanonicalJSON(mustMarshal(fields))
	if err != nil {
		return nil, err
	}
	return gomatrixserverlib.SignJSON(string(a.serverName), a.key.ID, a.key.Private, unsigned)
}

// GET /_matrix/key/v2/query/{serverName} (Querying Keys Through Another
// Server): the server's keys as this notary knows them.
func (a *API) queryKeysGet(r *http.Request, origin spec.ServerName) (any, error) {
	minValid := spec.AsTimestamp(time.Now())
	if s := r.URL.Query().Get("minimum_valid_until_ts"); s != "" {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return nil, mxhttp.InvalidParam("minimum_valid_until_ts must be an integer")
		}
		minValid = spec.Timestamp(n)
	}
	return a.notaryKeysResponse(r, map[spec.ServerName]spec.Timestamp{spec.ServerName(pathParam(r, "serverName")): minValid})
}

// POST /_matrix/key/v2/query: keys of several servers.
func (a *API) queryKeysPost(r *http.Request, origin spec.ServerName) (any, error) {
	var body struct {
		ServerKeys map[spec.ServerName]map[gomatrixserverlib.KeyID]struct {
			MinimumValidUntilTS spec.Timestamp `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if len(body.ServerKeys) > 100 {
		return nil, mxhttp.BadJSON("At most 100 servers per query")
	}
	now := spec.AsTimestamp(time.Now())
	want := map[spec.ServerName]spec.Timestamp{}
	for server, keys := range body.ServerKeys {
		min := now
		for _, c := range keys {
			if c.MinimumValidUntilTS > min {
				min = c.MinimumValidUntilTS
			}
		}
		want[server] = min
	}
	return a.notaryKeysResponse(r, want)
}

func (a *API) notaryKeysResponse(r *http.Request, want map[spec.ServerName]spec.Timestamp) (any, error) {
	list := []json.RawMessage{}
	for server, minValid := range want {
		raw, err := a.notaryKeys(r.Context(), server, minValid)
		if err != nil {
			a.log.Info("notary: no keys for server", "server", server, "err", err)
			continue
		}
		signed, err := gomatrixserverlib.SignJSON(string(a.serverName), a.key.ID, a.key.Private, raw)
		if err != nil {
			return nil, err
		}
		list = append(list, signed)
	}
	return map[string]any{"server_keys": list}, nil
}

// notaryKeys returns a server's signed key response valid until at least
// minValid: ours, a stored one, or one fetched now. When the server cannot
// be reached, a stored response is returned even if older.
func (a *API) notaryKeys(ctx context.Context, server spec.ServerName, minValid spec.Timestamp) ([]byte, error) {
	if server == a.serverName {
		return a.signedServerKeys(time.Now())
	}
	until, stored, err := storage.ServerKeyResponse(ctx, a.db.Read(), string(server))
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if stored != nil && spec.Timestamp(until) >= minValid {
		return stored, nil
	}
	fctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	keys, ferr := a.keyClient.GetServerKeys(fctx, server)
	if ferr == nil {
		if checks, _ := gomatrixserverlib.CheckKeys(server, time.Now(), keys); checks.AllChecksOK {
			return keys.Raw, nil
		}
		ferr = errors.New("key response failed checks")
	}
	if stored != nil {
		return stored, nil
	}
	return nil, ferr
}
