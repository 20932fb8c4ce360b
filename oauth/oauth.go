// Package oauth is Hearth's built-in OAuth 2.0 authorization server
// (client-server API, OAuth 2.0 API, spec v1.15-v1.18): server metadata,
// dynamic client registration (RFC 7591), the authorization code grant
// with PKCE S256 (RFC 6749, RFC 7636), the refresh token grant with
// rotation and reuse detection, revocation (RFC 7009), the device
// authorization grant (RFC 8628) and the account management pages.
//
// The tokens it issues are the ordinary access and refresh tokens of
// package accounts, bound to a device like a password login's, so they
// work on the whole client API, are stored hashed, and die when the device
// is logged out or deleted.
//
// The protocol is written here rather than on an OpenID provider library:
// Matrix needs no ID token, JWKS or userinfo, has its own scope and
// client registration rules, and its tokens must be Hearth's own.
package oauth

import (
	"context"
	"database/sql"
	"embed"
	"html/template"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/ratelimit"
	"github.com/hearth-matrix/hearth/storage"
)

// Lifetimes.
const (
	authRequestLifetime    = 30 * time.Minute // from /auth to the code
	codeLifetime           = 2 * time.Minute  // RFC 6749 section 4.1.2: short
	browserSessionLifetime = 24 * time.Hour
	deviceGrantLifetime    = 10 * time.Minute
	devicePollInterval     = 5 * time.Second // RFC 8628's default
)

//go:embed pages/*.html pages/*.css
var pageFiles embed.FS

// API is the OAuth 2.0 server of one homeserver.
type API struct {
	// cfg is the start's config with the reloadable keys of the last
	// SIGHUP (Update): registration is read from it per request. The
	// rate limiters below keep their start settings.
	cfg      atomic.Pointer[config.Config]
	db       *storage.DB
	accounts *accounts.Accounts
	log      *slog.Logger
	pages    map[string]*template.Template // by language

	// passwordIP bounds password attempts on the sign-in page per address,
	// userCode the device codes typed, clientReg client registrations.
	passwordIP, userCode, clientReg *ratelimit.Limiter
	rendezvousIP                    *ratelimit.Limiter
	// ssoStartIP bounds upstream sign-ins started per address: each
	// stores a pending request and may ask the provider for its discovery
	// document.
	ssoStartIP    *ratelimit.Limiter
	onRename      DeviceRenamedHook
	onAccountData func(userID string, pos int64)
	onProfile     func(ctx context.Context, userID string) error
	up            *upstreams // company SSO providers (upstream.go)
}

// DeviceRenamedHook runs inside the transaction that renames a device on
// the account page (the device list others see changes).
type DeviceRenamedHook func(ctx context.Context, tx *sql.Tx, userID, deviceID string) error

// Deps are what the OAuth server is built on.
type Deps struct {
	Config   config.Config
	DB       *storage.DB
	Accounts *accounts.Accounts
	Log      *slog.Logger
	// DeviceRenamed, when set, runs when the user renames a device.
	DeviceRenamed DeviceRenamedHook
	// ProfileChanged, when set, runs after the user changed their display
	// name on the account page (their rooms learn it).
	ProfileChanged func(ctx context.Context, userID string) error
	// AccountDataChanged, when set, is told after the account page
	// changed the user's account data (to wake their syncs).
	AccountDataChanged func(userID string, pos int64)
}

// New returns the OAuth server. It registers a device-deletion hook on
// Accounts, so call it while wiring the server.
func New(d Deps) *API {
	a := &API{db: d.DB, accounts: d.Accounts, log: d.Log, onRename: d.DeviceRenamed, onProfile: d.ProfileChanged,
		onAccountData: d.AccountDataChanged, up: newUpstreams(), pages: map[string]*template.Template{}}
	for _, l := range languages {
		a.pages[l.Tag] = template.Must(template.New("pages").Funcs(pageFuncs(l.Tag)).ParseFS(pageFiles, "pages/*.html"))
	}
	if d.Config.RateLimits != "off" {
		a.passwordIP = ratelimit.New(d.Config.RateLimitLoginPerSecond, d.Config.RateLimitLoginBurst)
		a.userCode = ratelimit.New(d.Config.RateLimitLoginPerSecond, d.Config.RateLimitLoginBurst)
		a.clientReg = ratelimit.New(d.Config.RateLimitRegisterPerSecond, d.Config.RateLimitRegisterBurst)
		a.rendezvousIP = ratelimit.New(rendezvousRate, rendezvousBurst)
		a.ssoStartIP = ratelimit.New(d.Config.RateLimitLoginPerSecond, d.Config.RateLimitLoginBurst)
	}
	a.Update(d.Config)
	d.Accounts.OnDevicesDeleted(func(ctx context.Context, tx *sql.Tx, userID string, deviceIDs []string) error {
		return storage.DeleteOAuthSessions(ctx, tx, userID, deviceIDs)
	})
	return a
}

// Update applies a reloaded configuration (config.WithReloaded).
func (a *API) Update(cfg config.Config) { a.cfg.Store(&cfg) }

func (a *API) conf() *config.Config { return a.cfg.Load() }

// Routes registers every route of routes.go on r (the client listener).
func (a *API) Routes(r chi.Router) {
	for _, rt := range a.routes() {
		r.Method(rt.method, rt.path, rt.h)
	}
}

// baseURL is where clients reach this server: well_known_client when set
// (the public URL behind a reverse proxy), else the request's own host.
func (a *API) baseURL(r *http.Request) string { return BaseURL(*a.conf(), r) }

// BaseURL is the public URL of the client listener as the OAuth server
// sees it (and names it in its metadata).
func BaseURL(cfg config.Config, r *http.Request) string {
	if cfg.WellKnownClient != "" {
		return strings.TrimRight(cfg.WellKnownClient, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	return scheme + "://" + r.Host
}

// secure says whether cookies must be Secure: the public URL is https.
func (a *API) secure(r *http.Request) bool { return strings.HasPrefix(a.baseURL(r), "https://") }

// clientIP is the peer address; X-Forwarded-For is not trusted.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func allow(l *ratelimit.Limiter, key string) bool {
	ok, _ := l.Allow(key)
	return ok
}

// dict builds a map in a template: {{template "top" (dict "Title" "...")}}.
func dict(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i+1 < len(kv); i += 2 {
		if k, ok := kv[i].(string); ok {
			m[k] = kv[i+1]
		}
	}
	return m
}
