package federation

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/base64"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/sync/singleflight"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/storage"
)

// Server keys of other servers (server-server API, Retrieving server keys).
// The key ring looks in keyStore (our own keys from memory, then an
// in-memory cache, then the server_keys table), and only for keys it lacks
// or whose validity ran out asks the server itself, then the configured
// notaries. Concurrent fetches for the same server share one request.

// maxCachedKeys bounds the in-memory key cache; past it the cache starts over.
const maxCachedKeys = 10000

type lookupReq = gomatrixserverlib.PublicKeyLookupRequest
type lookupRes = gomatrixserverlib.PublicKeyLookupResult

// newKeyRing builds the key ring over db, fetching with client.
func newKeyRing(db *storage.DB, serverName spec.ServerName, own map[gomatrixserverlib.KeyID]lookupRes,
	client fclient.FederationClient, trusted []config.TrustedKeyServer) *gomatrixserverlib.KeyRing {
	keyClient := recordingKeyClient{FederationClient: client, db: db}
	fetchers := []gomatrixserverlib.KeyFetcher{newCoalescingFetcher(&gomatrixserverlib.DirectKeyFetcher{
		Client:            keyClient,
		IsLocalServerName: func(s spec.ServerName) bool { return s == serverName },
		LocalPublicKey:    spec.Base64Bytes(own[firstCurrent(own)].Key),
	})}
	for _, ts := range trusted {
		fetchers = append(fetchers, newCoalescingFetcher(&gomatrixserverlib.PerspectiveKeyFetcher{
			PerspectiveServerName: spec.ServerName(ts.ServerName),
			PerspectiveServerKeys: map[gomatrixserverlib.KeyID]ed25519.PublicKey{gomatrixserverlib.KeyID(ts.KeyID): ts.PublicKey},
			Client:                keyClient,
		}))
	}
	return &gomatrixserverlib.KeyRing{
		KeyFetchers: fetchers,
		KeyDatabase: &keyStore{db: db, serverName: serverName, own: own, mem: map[lookupReq]lookupRes{}},
	}
}

func firstCurrent(own map[gomatrixserverlib.KeyID]lookupRes) gomatrixserverlib.KeyID {
	for id, k := range own {
		if k.ExpiredTS == gomatrixserverlib.PublicKeyNotExpired {
			return id
		}
	}
	return ""
}

// keyStore is the key ring's KeyDatabase.
type keyStore struct {
	db         *storage.DB
	serverName spec.ServerName
	own        map[gomatrixserverlib.KeyID]lookupRes

	mu  sync.RWMutex
	mem map[lookupReq]lookupRes
}

func (s *keyStore) FetcherName() string { return "key store" }

// FetchKeys answers from our own keys, the memory cache and the table.
func (s *keyStore) FetchKeys(ctx context.Context, reqs map[lookupReq]spec.Timestamp) (map[lookupReq]lookupRes, error) {
	out := map[lookupReq]lookupRes{}
	var missing []string
	seen := map[spec.ServerName]bool{}
	s.mu.RLock()
	for req := range reqs {
		if req.ServerName == s.serverName {
			if k, ok := s.own[req.KeyID]; ok {
				out[req] = k
			}
			continue
		}
		if k, ok := s.mem[req]; ok {
			out[req] = k
		} else if !seen[req.ServerName] {
			seen[req.ServerName] = true
			missing = append(missing, string(req.ServerName))
		}
	}
	s.mu.RUnlock()
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := storage.ServerKeysOf(ctx, s.db.Read(), missing)
	if err != nil {
		return nil, err
	}
	loaded := map[lookupReq]lookupRes{}
	for _, row := range rows {
		key, err := base64.RawStdEncoding.DecodeString(row.VerifyKey)
		if err != nil {
			continue
		}
		req := lookupReq{ServerName: spec.ServerName(row.ServerName), KeyID: gomatrixserverlib.KeyID(row.KeyID)}
		loaded[req] = lookupRes{VerifyKey: gomatrixserverlib.VerifyKey{Key: key},
			ValidUntilTS: spec.Timestamp(row.ValidUntilTS), ExpiredTS: spec.Timestamp(row.ExpiredTS)}
	}
	s.remember(loaded)
	for req := range reqs {
		if k, ok := loaded[req]; ok {
			out[req] = k
		}
	}
	return out, nil
}

// StoreKeys keeps fetched keys in the table and the cache.
func (s *keyStore) StoreKeys(ctx context.Context, results map[lookupReq]lookupRes) error {
	rows := make([]storage.ServerKey, 0, len(results))
	keep := map[lookupReq]lookupRes{}
	for req, res := range results {
		if req.ServerName == s.serverName {
			continue
		}
		keep[req] = res
		rows = append(rows, storage.ServerKey{ServerName: string(req.ServerName), KeyID: string(req.KeyID),
			VerifyKey: base64.RawStdEncoding.EncodeToString(res.Key), ValidUntilTS: int64(res.ValidUntilTS), ExpiredTS: int64(res.ExpiredTS)})
	}
	if len(rows) == 0 {
		return nil
	}
	if err := s.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.PutServerKeys(ctx, tx, rows) }); err != nil {
		return err
	}
	s.remember(keep)
	return nil
}

func (s *keyStore) remember(keys map[lookupReq]lookupRes) {
	if len(keys) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.mem)+len(keys) > maxCachedKeys {
		s.mem = map[lookupReq]lookupRes{}
	}
	for req, res := range keys {
		if old, ok := s.mem[req]; ok && old.ExpiredTS == 0 && res.ExpiredTS == 0 && old.ValidUntilTS > res.ValidUntilTS {
			continue
		}
		s.mem[req] = res
	}
}

// recordingKeyClient keeps each server's checked, signed key response, so
// the notary endpoint can pass it on with the server's own signature.
type recordingKeyClient struct {
	fclient.FederationClient
	db *storage.DB
}

func (c recordingKeyClient) GetServerKeys(ctx context.Context, server spec.ServerName) (gomatrixserverlib.ServerKeys, error) {
	keys, err := c.FederationClient.GetServerKeys(ctx, server)
	if err != nil {
		return keys, err
	}
	if checks, _ := gomatrixserverlib.CheckKeys(server, time.Now(), keys); checks.AllChecksOK {
		_ = c.db.WriteTx(ctx, func(tx *sql.Tx) error {
			return storage.PutServerKeyResponse(ctx, tx, string(server), int64(keys.ValidUntilTS), keys.Raw)
		})
	}
	return keys, nil
}

// coalescingFetcher runs at most one fetch per server at a time: callers
// asking for a server already being fetched wait for that fetch's result.
type coalescingFetcher struct {
	inner    gomatrixserverlib.KeyFetcher
	inFlight singleflight.Group // by server name
}

func newCoalescingFetcher(inner gomatrixserverlib.KeyFetcher) *coalescingFetcher {
	return &coalescingFetcher{inner: inner}
}

func (f *coalescingFetcher) FetcherName() string { return f.inner.FetcherName() }

func (f *coalescingFetcher) FetchKeys(ctx context.Context, reqs map[lookupReq]spec.Timestamp) (map[lookupReq]lookupRes, error) {
	byServer := map[spec.ServerName]map[lookupReq]spec.Timestamp{}
	for req, ts := range reqs {
		if byServer[req.ServerName] == nil {
			byServer[req.ServerName] = map[lookupReq]spec.Timestamp{}
		}
		byServer[req.ServerName][req] = ts
	}
	out := map[lookupReq]lookupRes{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for server, sreqs := range byServer {
		wg.Go(func() {
			// The fetch runs on its own context so that one caller giving
			// up does not fail the others waiting for it.
			fetch := f.inFlight.DoChan(string(server), func() (any, error) {
				fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				defer cancel()
				return f.inner.FetchKeys(fctx, sreqs)
			})
			var res singleflight.Result
			select {
			case res = <-fetch:
			case <-ctx.Done():
				return
			}
			if res.Err != nil {
				return
			}
			mu.Lock()
			for req, r := range res.Val.(map[lookupReq]lookupRes) {
				out[req] = r
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return out, ctx.Err()
}
