package federation

import (
	"encoding/json"
	"net/http"
	"net/url"
	"sync"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// GET /_matrix/federation/v1/version (server-server API, Server implementation).
func (a *API) serverVersion(r *http.Request, origin spec.ServerName) (any, error) {
	return map[string]any{
		"server": map[string]string{"name": "Hearth", "version": a.version},
	}, nil
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called on fixed struct types that always marshal
	}
	return b
}

// pathParam returns a decoded path parameter.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v // chi matched the decoded path
	}
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}

// keyedMutex holds one lock per key, dropped when nobody holds or waits.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedLock
}

type keyedLock struct {
	sync.Mutex
	users int
}

func (k *keyedMutex) lock(key string) (unlock func()) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedLock{}
	}
	l := k.locks[key]
	if l == nil {
		l = &keyedLock{}
		k.locks[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.Lock()
	return func() {
		l.Unlock()
		k.mu.Lock()
		l.users--
		if l.users == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
