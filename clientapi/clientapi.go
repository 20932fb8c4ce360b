// Package clientapi serves the Matrix Client-Server API (/_matrix/client/*)
// and the few neighbouring endpoints clients and tooling use
// (/.well-known/matrix/*, /_synapse/admin/v1/register). Each spec module has
// its own file.
package clientapi

import (
	"log/slog"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/storage"
)

// API is the client-server API of one homeserver.
type API struct {
	cfg      config.Config
	db       *storage.DB
	accounts *accounts.Accounts
	media    *media.Repository
	log      *slog.Logger
	version  string

	adminNonces *nonceStore
}

// New returns the client API over the given store and accounts.
func New(cfg config.Config, db *storage.DB, accts *accounts.Accounts, repo *media.Repository, log *slog.Logger, version string) *API {
	return &API{cfg: cfg, db: db, accounts: accts, media: repo, log: log, version: version, adminNonces: newNonceStore()}
}

// Routes registers every client API endpoint on r.
func (a *API) Routes(r chi.Router) {
	r.Get("/_matrix/client/versions", a.versions)
	r.Get("/.well-known/matrix/client", a.wellKnownClient)
	r.Get("/.well-known/matrix/server", a.wellKnownServer)
	if a.cfg.RegistrationSharedSecret != "" {
		r.Get("/_synapse/admin/v1/register", a.adminRegisterNonce)
		r.Post("/_synapse/admin/v1/register", a.adminRegister)
	}
	a.mediaRoutes(r)
}
