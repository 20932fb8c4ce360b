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
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// API is the client-server API of one homeserver.
type API struct {
	cfg      config.Config
	db       *storage.DB
	accounts *accounts.Accounts
	rooms    *rooms.Rooms
	e2ee     *e2ee.E2EE
	log      *slog.Logger
	version  string

	adminNonces *nonceStore
}

// New returns the client API over the given store and accounts.
func New(cfg config.Config, db *storage.DB, accts *accounts.Accounts, rms *rooms.Rooms, e2e *e2ee.E2EE, log *slog.Logger, version string) *API {
	return &API{cfg: cfg, db: db, accounts: accts, rooms: rms, e2ee: e2e, log: log, version: version, adminNonces: newNonceStore()}
}

// Routes registers every client API endpoint on r.
func (a *API) Routes(r chi.Router) {
	r.Get("/_matrix/client/versions", a.versions)
	r.Get("/.well-known/matrix/client", a.wellKnownClient)
	r.Get("/.well-known/matrix/server", a.wellKnownServer)
	a.roomRoutes(r)
	a.keyRoutes(r)
	if a.cfg.RegistrationSharedSecret != "" {
		r.Get("/_synapse/admin/v1/register", a.adminRegisterNonce)
		r.Post("/_synapse/admin/v1/register", a.adminRegister)
	}
}

// roomRoutes registers the room endpoints (client-server API, Rooms and
// Room membership), under both v3 and the r0 prefix older clients use.
func (a *API) roomRoutes(r chi.Router) {
	for _, p := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		r.Post(p+"/createRoom", a.authed(a.createRoom))
		r.Get(p+"/joined_rooms", a.authed(a.joinedRooms))
		r.Put(p+"/rooms/{roomId}/send/{eventType}/{txnId}", a.authed(a.sendMessage))
		r.Put(p+"/rooms/{roomId}/state/{eventType}", a.authed(a.putState))
		r.Put(p+"/rooms/{roomId}/state/{eventType}/", a.authed(a.putState)) // empty state key
		r.Put(p+"/rooms/{roomId}/state/{eventType}/{stateKey}", a.authed(a.putState))
		r.Get(p+"/rooms/{roomId}/state/{eventType}", a.authed(a.getState))
		r.Get(p+"/rooms/{roomId}/state/{eventType}/", a.authed(a.getState))
		r.Get(p+"/rooms/{roomId}/state/{eventType}/{stateKey}", a.authed(a.getState))
		r.Get(p+"/rooms/{roomId}/state", a.authed(a.getAllState))
		r.Get(p+"/rooms/{roomId}/event/{eventId}", a.authed(a.getEvent))
		r.Put(p+"/rooms/{roomId}/redact/{eventId}/{txnId}", a.authed(a.redact))
		r.Get(p+"/rooms/{roomId}/messages", a.authed(a.messages))
		r.Get(p+"/rooms/{roomId}/context/{eventId}", a.authed(a.eventContext))
		r.Get(p+"/rooms/{roomId}/members", a.authed(a.members))
		r.Get(p+"/rooms/{roomId}/joined_members", a.authed(a.joinedMembers))
		r.Post(p+"/rooms/{roomId}/join", a.authed(a.joinRoomByID))
		r.Post(p+"/join/{roomIdOrAlias}", a.authed(a.joinRoomByIDOrAlias))
		r.Post(p+"/knock/{roomIdOrAlias}", a.authed(a.knock))
		r.Post(p+"/rooms/{roomId}/invite", a.authed(a.invite))
		r.Post(p+"/rooms/{roomId}/leave", a.authed(a.leave))
		r.Post(p+"/rooms/{roomId}/forget", a.authed(a.forget))
		r.Post(p+"/rooms/{roomId}/kick", a.authed(a.kick))
		r.Post(p+"/rooms/{roomId}/ban", a.authed(a.ban))
		r.Post(p+"/rooms/{roomId}/unban", a.authed(a.unban))
		r.Put(p+"/directory/room/{roomAlias}", a.authed(a.putAlias))
		r.Get(p+"/directory/room/{roomAlias}", a.getAlias)
		r.Delete(p+"/directory/room/{roomAlias}", a.authed(a.deleteAlias))
		r.Get(p+"/rooms/{roomId}/aliases", a.authed(a.roomAliases))
	}
}
