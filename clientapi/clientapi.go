// Package clientapi serves the Matrix Client-Server API (/_matrix/client/*)
// and the few neighbouring endpoints clients and tooling use
// (/.well-known/matrix/*, and of /_synapse/admin/v1/* server notices and
// shared-secret registration; package admin serves the rest). Each spec
// module has its own file.
package clientapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/appservice"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/email"
	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/push"
	"github.com/hearth-matrix/hearth/ratelimit"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/rtc"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// API is the client-server API of one homeserver.
type API struct {
	// settings is what of the config may change while the server runs
	// (Update, on SIGHUP): handlers read it once per use, never keep it.
	settings atomic.Pointer[settings]
	db       *storage.DB
	accounts *accounts.Accounts
	rooms    *rooms.Rooms
	notifier *syncstream.Notifier
	typing   *syncstream.Typing
	presence *syncstream.Presence
	media    *media.Repository
	e2ee     *e2ee.E2EE
	fed      Federation
	push     *push.Push
	appsvc   *appservice.Pusher
	delayed  *rtc.Delayed
	mail     *email.Sender
	log      *slog.Logger
	version  string
	// overrides are the per-user message limits admins set (shadow_ban.go).
	overrides overrideLimiters

	adminNonces *nonceStore
	notices     noticeRooms
	alerts      signInAlerts
	// bumps remembers rooms' sliding sync bump_stamps (sliding_sync.go).
	bumps ssBumpCache
}

// settings are one snapshot of the configuration with what is built from
// its reloadable keys.
type settings struct {
	cfg    config.Config
	limits limits
	// livekit is the MatrixRTC LiveKit authorization service; nil: none.
	livekit *rtc.LiveKit
}

// live is the current settings.
func (a *API) live() *settings { return a.settings.Load() }

// conf is the current configuration: the start's, with the reloadable
// keys as of the last reload.
func (a *API) conf() *config.Config { return &a.live().cfg }

// Update applies a reloaded configuration (config.WithReloaded: only its
// reloadable keys differ from the running one) and LiveKit service.
// Rate-limit buckets are kept unless a rate-limit key changed.
func (a *API) Update(cfg config.Config, lk *rtc.LiveKit) {
	s := &settings{cfg: cfg, livekit: lk}
	old := a.live()
	if old != nil && sameLimits(old.cfg, cfg) {
		s.limits = old.limits
	} else {
		s.limits = newLimits(cfg)
	}
	a.settings.Store(s)
}

func sameLimits(a, b config.Config) bool {
	return a.RateLimits == b.RateLimits &&
		a.RateLimitLoginPerSecond == b.RateLimitLoginPerSecond && a.RateLimitLoginBurst == b.RateLimitLoginBurst &&
		a.RateLimitRegisterPerSecond == b.RateLimitRegisterPerSecond && a.RateLimitRegisterBurst == b.RateLimitRegisterBurst &&
		a.RateLimitMessagePerSecond == b.RateLimitMessagePerSecond && a.RateLimitMessageBurst == b.RateLimitMessageBurst
}

// limits are the request rate limiters; all nil (no limit) with
// rate_limits: off.
type limits struct {
	loginIP, loginUser *ratelimit.Limiter
	registerIP         *ratelimit.Limiter
	// message is for the room module's send endpoints, per user.
	message *ratelimit.Limiter
	// rtcIP is for the LiveKit authorization service, per IP address.
	rtcIP *ratelimit.Limiter
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
		rtcIP:      ratelimit.New(cfg.RateLimitMessagePerSecond, cfg.RateLimitMessageBurst),
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
// Deps are what the client API is built on.
type Deps struct {
	Config   config.Config
	DB       *storage.DB
	Accounts *accounts.Accounts
	Rooms    *rooms.Rooms
	Notifier *syncstream.Notifier
	Typing   *syncstream.Typing
	Presence *syncstream.Presence
	Media    *media.Repository
	E2EE     *e2ee.E2EE
	Push     *push.Push
	// AppServices are the registered application services.
	AppServices *appservice.Pusher
	// Delayed schedules and sends delayed events (MSC4140).
	Delayed *rtc.Delayed
	// LiveKit is the MatrixRTC LiveKit authorization service; nil: none.
	LiveKit *rtc.LiveKit
	// Mail sends the server's own mail (email validation); nil: none.
	Mail *email.Sender
	// Federation answers questions only other servers can; nil: none.
	Federation Federation
	Log        *slog.Logger
	Version    string
	// Locator places sign-in addresses for sign-in alerts; nil: none.
	Locator Locator
}

// Federation is what the client API asks of other servers. The federation
// package implements it; homeserver plugs it in (clientapi never imports
// federation). Errors are Matrix errors for the client (404 M_NOT_FOUND
// when the remote server says so).
type Federation interface {
	// QueryAlias resolves an alias on its server to a room ID and the
	// servers in the room.
	QueryAlias(ctx context.Context, alias string) (roomID string, servers []string, err error)
	// QueryProfile fetches a remote user's profile, or one field ("" for all).
	QueryProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error)
	// PublicRooms reads another server's published room directory.
	PublicRooms(ctx context.Context, server string, q rooms.PublicRoomsQuery) (json.RawMessage, error)
	// TimestampToEvent asks the other servers in a room for the event
	// closest to ts in direction dir ("f" or "b"), checked to be the room's.
	TimestampToEvent(ctx context.Context, roomID string, ts int64, dir string) (eventID string, originTS int64, err error)
	// Hierarchy asks one of via for a room of a space and its children.
	Hierarchy(ctx context.Context, roomID string, via []string, suggestedOnly bool) (*rooms.ServerHierarchy, error)
	// SendTyping tells the room's other servers of a local user's typing.
	SendTyping(ctx context.Context, roomID, userID string, typing bool)
	// SendReceipt tells the room's other servers of a local user's receipt
	// (only m.read leaves the server).
	SendReceipt(ctx context.Context, roomID, userID, receiptType, eventID, threadID string, ts int64)
}

// New returns the client API over d.
func New(d Deps) *API {
	a := &API{db: d.DB, accounts: d.Accounts, rooms: d.Rooms, notifier: d.Notifier,
		typing: d.Typing, presence: d.Presence, media: d.Media, e2ee: d.E2EE, fed: d.Federation, push: d.Push, appsvc: d.AppServices, delayed: d.Delayed, mail: d.Mail, log: d.Log, version: d.Version,
		adminNonces: newNonceStore()}
	a.Update(d.Config, d.LiveKit)
	a.alerts.ctx, a.alerts.cancel = context.WithCancel(context.Background())
	a.alerts.geo = d.Locator
	d.Accounts.OnSignIn(a.signedIn)
	return a
}
