// Package federation serves the Matrix Server-Server API (/_matrix/federation/*)
// and the key API (/_matrix/key/*) on the TLS federation listener.
package federation

import (
	"log/slog"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/serverkey"
)

// API is the federation side of one homeserver.
type API struct {
	serverName string
	key        serverkey.Key
	log        *slog.Logger
	version    string
}

// New returns the federation API signing with key.
func New(serverName string, key serverkey.Key, log *slog.Logger, version string) *API {
	return &API{serverName: serverName, key: key, log: log, version: version}
}

// Routes registers every federation endpoint on r.
func (a *API) Routes(r chi.Router) {
	r.Get("/_matrix/key/v2/server", a.serverKeys)
	r.Get("/_matrix/key/v2/server/{keyID}", a.serverKeys) // deprecated form, still requested by older servers
	r.Get("/_matrix/federation/v1/version", a.serverVersion)
}
