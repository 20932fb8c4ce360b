// Package clientapi serves the Matrix Client-Server API (/_matrix/client/*)
// and the few neighbouring endpoints clients and tooling use
// (/.well-known/matrix/*, /_synapse/admin/v1/*). Each spec module has its
// own file.
package clientapi

import (
	"log/slog"
	"net"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/ratelimit"
	"github.com/hearth-matrix/hearth/storage"
)

// API is the client-server API of one homeserver.
type API struct {
	cfg      config.Config
	db       *storage.DB
	accounts *accounts.Accounts
	log      *slog.Logger
	version  string
	limits   limits

	adminNonces *nonceStore
}

// limits are the request rate limiters; all nil (no limit) with
// rate_limits: off.
type limits struct {
	loginIP, loginUser *ratelimit.Limiter
	registerIP         *ratelimit.Limiter
	// message is for the room module's send endpoints, per user.
	message *ratelimit.Limiter
}

func newLimits(cfg config.Config) limits {
	if cfg.RateLimits == "off" {
		return limits{}
	}
	return limits{
		loginIP:    ratelimit.New(cfg.RateLimitLoginPerSecond, cfg.RateLimitLoginBurst),
		loginUser:  ratelimit.New(cfg.RateLimitLoginPerSecond, cfg.RateLimitLoginBurst),
		registerIP: ratelimit.New(cfg.RateLimitRegisterPerSecond, cfg.RateLimitRegisterBurst),
		message:    ratelimit.New(cfg.RateLimitMessagePerSecond, cfg.RateLimitMessageBurst),
	}
}

// limit takes a token from l for key, or returns 429 M_LIMIT_EXCEEDED with
// retry_after_ms.
func (a *API) limit(r *http.Request, l *ratelimit.Limiter, key string) error {
	ok, wait := l.Allow(key)
	if ok {
		return nil
	}
	ms := wait.Milliseconds() + 1
	return mxhttp.LimitExceeded("Too many requests; retry in %d ms", ms).With("retry_after_ms", ms)
}

// clientIP is the address the request came from. X-Forwarded-For is not
// trusted: a client could forge it to dodge per-IP limits.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// New returns the client API over the given store and accounts.
func New(cfg config.Config, db *storage.DB, accts *accounts.Accounts, log *slog.Logger, version string) *API {
	return &API{cfg: cfg, db: db, accounts: accts, log: log, version: version, limits: newLimits(cfg), adminNonces: newNonceStore()}
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
	// Endpoints that existed before v3 also answer under r0, which older
	// clients and tools still call.
	v3 := func(method, path string, h http.HandlerFunc) {
		r.Method(method, "/_matrix/client/v3"+path, h)
		r.Method(method, "/_matrix/client/r0"+path, h)
	}
	a.sessionRoutes(r, v3)
	a.registrationRoutes(r, v3)
	a.deviceRoutes(v3)
	a.accountRoutes(v3)
	a.registrationTokenAdminRoutes(r)
}
