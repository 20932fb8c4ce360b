// Package clientapi serves the Matrix Client-Server API (/_matrix/client/*)
// and the few neighbouring endpoints clients and tooling use
// (/.well-known/matrix/*, /_synapse/admin/v1/*). Each spec module has its
// own file.
package clientapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/appservice"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/push"
	"github.com/hearth-matrix/hearth/ratelimit"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// API is the client-server API of one homeserver.
type API struct {
	cfg      config.Config
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
	log      *slog.Logger
	version  string
	limits   limits

	adminNonces *nonceStore
	notices     noticeRooms
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
	// Federation answers questions only other servers can; nil: none.
	Federation Federation
	Log        *slog.Logger
	Version    string
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
	return &API{cfg: d.Config, db: d.DB, accounts: d.Accounts, rooms: d.Rooms, notifier: d.Notifier,
		typing: d.Typing, presence: d.Presence, media: d.Media, e2ee: d.E2EE, fed: d.Federation, push: d.Push, appsvc: d.AppServices, log: d.Log, version: d.Version,
		limits: newLimits(d.Config), adminNonces: newNonceStore()}
}

// Routes registers every client API endpoint on r.
func (a *API) Routes(r chi.Router) {
	r.Get("/_matrix/client/versions", a.versions)
	r.Get("/.well-known/matrix/client", a.wellKnownClient)
	r.Get("/.well-known/matrix/server", a.wellKnownServer)
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
	a.accountDataRoutes(v3)
	a.tagRoutes(v3)
	// MSC3391: deleting account data (unstable prefix, as Element and
	// Complement call it).
	const msc3391 = "/_matrix/client/unstable/org.matrix.msc3391"
	r.Delete(msc3391+"/user/{userId}/account_data/{type}", a.authed(a.deleteAccountData))
	r.Delete(msc3391+"/user/{userId}/rooms/{roomId}/account_data/{type}", a.authed(a.deleteAccountData))
	a.pusherRoutes(v3)
	a.roomRoutes(v3)
	a.keyRoutes(r)
	a.dehydratedDeviceRoutes(r)
	a.roomExtraRoutes(r, v3)
	a.registrationTokenAdminRoutes(r)
	a.serverNoticeRoutes(r)
	a.appServiceRoutes(r)
	if a.cfg.RegistrationSharedSecret != "" {
		r.Get("/_synapse/admin/v1/register", a.adminRegisterNonce)
		r.Post("/_synapse/admin/v1/register", a.adminRegister)
	}
	a.mediaRoutes(r)
}

// accountDataRoutes registers the per-account endpoints: capabilities,
// profile, account data, filters, push rules, VoIP and third-party lookups.
func (a *API) accountDataRoutes(v3 func(string, string, http.HandlerFunc)) {
	v3("GET", "/capabilities", a.authed(a.capabilities))

	v3("GET", "/profile/{userId}", a.getProfile)
	v3("GET", "/profile/{userId}/{keyName}", a.getProfileField)
	v3("PUT", "/profile/{userId}/{keyName}", a.authed(a.putProfileField))
	v3("DELETE", "/profile/{userId}/{keyName}", a.authed(a.deleteProfileField))

	v3("GET", "/user/{userId}/account_data/{type}", a.authed(a.getAccountData))
	v3("PUT", "/user/{userId}/account_data/{type}", a.authed(a.putAccountData))
	v3("GET", "/user/{userId}/rooms/{roomId}/account_data/{type}", a.authed(a.getAccountData))
	v3("PUT", "/user/{userId}/rooms/{roomId}/account_data/{type}", a.authed(a.putAccountData))

	v3("POST", "/user/{userId}/filter", a.authed(a.postFilter))
	v3("GET", "/user/{userId}/filter/{filterId}", a.authed(a.getFilter))

	v3("GET", "/pushrules", a.authed(a.getPushRules))
	v3("GET", "/pushrules/", a.authed(a.getPushRules))
	v3("GET", "/pushrules/global", a.authed(a.getGlobalPushRules))
	v3("GET", "/pushrules/global/", a.authed(a.getGlobalPushRules))
	const rule = "/pushrules/global/{kind}/{ruleId}"
	v3("GET", rule, a.authed(a.getPushRuleHandler))
	v3("PUT", rule, a.authed(a.putPushRule))
	v3("DELETE", rule, a.authed(a.deletePushRule))
	v3("GET", rule+"/enabled", a.authed(a.getPushRuleEnabled))
	v3("PUT", rule+"/enabled", a.authed(a.putPushRuleEnabled))
	v3("GET", rule+"/actions", a.authed(a.getPushRuleActions))
	v3("PUT", rule+"/actions", a.authed(a.putPushRuleActions))

	v3("GET", "/voip/turnServer", a.authed(a.turnServer))

	a.thirdPartyRoutes(v3)
}

// roomRoutes registers the room endpoints (client-server API, Rooms, Room
// membership, Syncing).
func (a *API) roomRoutes(v3 func(string, string, http.HandlerFunc)) {
	v3("GET", "/sync", a.authed(a.sync))
	v3("POST", "/search", a.authed(a.search))
	v3("PUT", "/rooms/{roomId}/typing/{userId}", a.authed(a.putTyping))
	v3("POST", "/rooms/{roomId}/receipt/{receiptType}/{eventId}", a.authed(a.postReceipt))
	v3("POST", "/rooms/{roomId}/read_markers", a.authed(a.postReadMarkers))
	v3("GET", "/presence/{userId}/status", a.authed(a.getPresence))
	v3("PUT", "/presence/{userId}/status", a.authed(a.putPresence))
	v3("POST", "/createRoom", a.authed(a.createRoom))
	v3("GET", "/joined_rooms", a.authed(a.joinedRooms))
	v3("PUT", "/rooms/{roomId}/send/{eventType}/{txnId}", a.authed(a.sendMessage))
	v3("PUT", "/rooms/{roomId}/state/{eventType}", a.authed(a.putState))
	v3("PUT", "/rooms/{roomId}/state/{eventType}/", a.authed(a.putState)) // empty state key
	v3("PUT", "/rooms/{roomId}/state/{eventType}/{stateKey}", a.authed(a.putState))
	v3("GET", "/rooms/{roomId}/state/{eventType}", a.authed(a.getState))
	v3("GET", "/rooms/{roomId}/state/{eventType}/", a.authed(a.getState))
	v3("GET", "/rooms/{roomId}/state/{eventType}/{stateKey}", a.authed(a.getState))
	v3("GET", "/rooms/{roomId}/state", a.authed(a.getAllState))
	v3("GET", "/rooms/{roomId}/event/{eventId}", a.authed(a.getEvent))
	v3("PUT", "/rooms/{roomId}/redact/{eventId}/{txnId}", a.authed(a.redact))
	v3("GET", "/rooms/{roomId}/messages", a.authed(a.messages))
	v3("GET", "/rooms/{roomId}/context/{eventId}", a.authed(a.eventContext))
	v3("GET", "/rooms/{roomId}/members", a.authed(a.members))
	v3("GET", "/rooms/{roomId}/joined_members", a.authed(a.joinedMembers))
	v3("POST", "/rooms/{roomId}/join", a.authed(a.joinRoomByID))
	v3("POST", "/join/{roomIdOrAlias}", a.authed(a.joinRoomByIDOrAlias))
	v3("POST", "/knock/{roomIdOrAlias}", a.authed(a.knock))
	v3("POST", "/rooms/{roomId}/invite", a.authed(a.invite))
	v3("POST", "/rooms/{roomId}/leave", a.authed(a.leave))
	v3("POST", "/rooms/{roomId}/forget", a.authed(a.forget))
	v3("POST", "/rooms/{roomId}/kick", a.authed(a.kick))
	v3("POST", "/rooms/{roomId}/ban", a.authed(a.ban))
	v3("POST", "/rooms/{roomId}/unban", a.authed(a.unban))
	v3("PUT", "/directory/room/{roomAlias}", a.authed(a.putAlias))
	v3("GET", "/directory/room/{roomAlias}", a.getAlias)
	v3("DELETE", "/directory/room/{roomAlias}", a.authed(a.deleteAlias))
	v3("GET", "/rooms/{roomId}/aliases", a.authed(a.roomAliases))
}

// roomExtraRoutes registers the room modules beyond the core: directory,
// relations and threads, upgrades, timestamps, summaries, spaces, reports,
// the user directory and mutual rooms.
func (a *API) roomExtraRoutes(r chi.Router, v3 func(string, string, http.HandlerFunc)) {
	v1 := func(method, path string, h http.HandlerFunc) { r.Method(method, "/_matrix/client/v1"+path, h) }
	v3("GET", "/directory/list/room/{roomId}", a.getRoomVisibility)
	v3("PUT", "/directory/list/room/{roomId}", a.authed(a.putRoomVisibility))
	v3("GET", "/publicRooms", a.getPublicRooms)
	v3("POST", "/publicRooms", a.authed(a.postPublicRooms))
	v1("GET", "/rooms/{roomId}/relations/{eventId}", a.authed(a.relations))
	v1("GET", "/rooms/{roomId}/relations/{eventId}/{relType}", a.authed(a.relations))
	v1("GET", "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", a.authed(a.relations))
	v1("GET", "/rooms/{roomId}/threads", a.authed(a.threads))
	v3("POST", "/rooms/{roomId}/upgrade", a.authed(a.upgradeRoom))
	v1("GET", "/rooms/{roomId}/timestamp_to_event", a.authed(a.timestampToEvent))
	v1("GET", "/room_summary/{roomIdOrAlias}", a.getRoomSummary)
	v1("GET", "/rooms/{roomId}/hierarchy", a.authed(a.hierarchy))
	v3("POST", "/rooms/{roomId}/report/{eventId}", a.authed(a.reportEvent))
	v3("POST", "/rooms/{roomId}/report", a.authed(a.reportRoom))
	v3("POST", "/user_directory/search", a.authed(a.searchUserDirectory))
	v1("GET", "/mutual_rooms", a.authed(a.mutualRooms))
}
