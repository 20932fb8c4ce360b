// Package homeserver assembles one Hearth server from its parts (store,
// signing key, client API, federation API) and runs its listeners. The
// hearth command and the in-process test servers both start here.
package homeserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/admin"
	"github.com/hearth-matrix/hearth/appservice"
	"github.com/hearth-matrix/hearth/clientapi"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/console"
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/email"
	"github.com/hearth-matrix/hearth/federation"
	"github.com/hearth-matrix/hearth/geoip"
	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/oauth"
	"github.com/hearth-matrix/hearth/push"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/rtc"
	"github.com/hearth-matrix/hearth/serverkey"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Server is one running homeserver.
type Server struct {
	// Config is the configuration the server started with; Reload
	// changes the reloadable keys in the parts that read them.
	Config   config.Config
	DB       *storage.DB
	Key      serverkey.Key
	Accounts *accounts.Accounts
	Rooms    *rooms.Rooms
	Notifier *syncstream.Notifier
	Typing   *syncstream.Typing
	Presence *syncstream.Presence
	Media    *media.Repository
	E2EE     *e2ee.E2EE
	Push     *push.Push
	// AppServices pushes events to the registered application services.
	AppServices *appservice.Pusher
	// Delayed schedules and sends delayed events (MSC4140); its scheduler
	// runs on the leader only.
	Delayed *rtc.Delayed
	// Federation is the server-server side: inbound handlers, the signing
	// client, the key ring and the send queue.
	Federation *federation.API
	// Admin is the Synapse-compatible admin API (/_synapse/admin/*).
	Admin *admin.API
	// Console is the admin console at /_hearth/admin/.
	Console *console.Console
	Log     *slog.Logger

	clientAPI *clientapi.API
	// lk is the LiveKit authorization service (nil: none) and lkKey the
	// settings it was made from; Reload replaces it when they change.
	reloadMu sync.Mutex
	lk       *rtc.LiveKit
	lkKey    string
	// geo is sign_in_alerts_geoip_db, open; nil: none.
	geo        *geoip.DB
	oauth      *oauth.API
	client     http.Handler
	federation http.Handler
	metrics    *prometheus.Registry
	// relay and leader coordinate the processes sharing a PostgreSQL
	// database (nil on SQLite, which one process serves alone).
	relay  *relay
	leader *leadership
}

// Version is the build's version: the module version, or the VCS revision
// of a development build.
func Version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "dev"
	}
	v := bi.Main.Version
	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && len(s.Value) >= 12 && (v == "" || v == "(devel)") {
			v = "dev-" + s.Value[:12]
		}
	}
	if v == "" || v == "(devel)" {
		v = "dev"
	}
	return v
}

// New opens the store and key named by cfg (cfg must be validated and its
// paths resolved) and builds the HTTP handlers.
func New(ctx context.Context, cfg config.Config, log *slog.Logger) (*Server, error) {
	regs, err := appservice.Load(cfg.AppServiceConfigFiles, cfg.ServerName)
	if err != nil {
		return nil, err
	}
	var mail *email.Sender
	if cfg.EmailEnabled() {
		if mail, err = email.New(email.Config{Host: cfg.SMTPHost, Port: cfg.SMTPPort, Username: cfg.SMTPUsername,
			Password: cfg.SMTPPassword, TLS: cfg.SMTPTLS, CACerts: cfg.SMTPCACerts, From: cfg.EmailFrom}); err != nil {
			return nil, fmt.Errorf("config: smtp: %w", err)
		}
	}
	key, created, err := serverkey.LoadOrCreate(cfg.SigningKeyPath)
	if err != nil {
		return nil, err
	}
	if created {
		log.Info("generated a new signing key", "path", cfg.SigningKeyPath, "key_id", key.ID)
	}
	db, err := storage.Open(ctx, cfg.DatabaseURL, storage.Options{Synchronous: cfg.SQLiteSynchronous, MaxConns: cfg.DatabaseMaxConns})
	if err != nil {
		return nil, err
	}
	s := &Server{
		Config: cfg, DB: db, Key: key, Log: log,
		Accounts: &accounts.Accounts{
			DB: db, ServerName: cfg.ServerName, Passwords: accounts.NewPasswords(cfg.BcryptCost, runtime.NumCPU()),
			RefreshableTokenLifetime: time.Duration(cfg.RefreshableTokenLifetimeSeconds) * time.Second,
			MaxDevicesPerUser:        cfg.MaxDevicesPerUser, LimitInfoURI: cfg.LimitInfoURI(),
		},
		metrics: prometheus.NewRegistry(),
	}
	s.metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	observe := s.requestMetrics()
	version := Version()

	s.Media, err = media.Open(ctx, cfg, db, log)
	if err != nil {
		db.Close()
		return nil, err
	}
	c := s.router(observe, "client")
	s.Rooms = rooms.New(db, cfg.ServerName, key, log)
	if cfg.PolicyServer {
		pk, created, err := serverkey.LoadOrCreate(cfg.PolicyServerKeyPath)
		if err != nil {
			db.Close()
			return nil, fmt.Errorf("policy server key: %w", err)
		}
		if created {
			log.Info("generated a new policy server key", "path", cfg.PolicyServerKeyPath)
		}
		s.Rooms.SetPolicyServer(&rooms.PolicyServer{Key: pk.Private, RefusedWords: cfg.PolicyServerRefusedWords})
	}
	if s.Notifier, err = newNotifier(ctx, db, cfg.ServerName); err != nil {
		db.Close()
		return nil, err
	}
	// Changes go to the other processes sharing the database, and new
	// receipts wake the application-service senders (ephemeral data).
	s.Notifier.SetPublish(func(c syncstream.Change) {
		if s.relay != nil {
			s.relay.publish(relayMessage{Sync: &c})
		}
		if c.Pos.Receipts > 0 {
			s.AppServices.Wake()
		}
	})
	if db.Dialect() == storage.Postgres {
		if s.relay, err = newRelay(ctx, db, log); err != nil {
			db.Close()
			return nil, err
		}
		// A revoked token must be refused everywhere once the request
		// that revoked it has answered: the others acknowledge.
		s.Accounts.TokensRevoked = func(userID string) { s.relay.publishAcked(relayMessage{Tokens: userID}) }
	}
	// Local users' presence changes made in this process go to other
	// servers once federation exists. Application services with
	// receive_ephemeral take typing and presence (s.AppServices exists
	// before anything changes: changes come from serving).
	s.Typing, s.Presence = newEphemeral(db, s.Notifier, func(c syncstream.PresenceChange) {
		if c.Own && s.Federation != nil && cfg.Presence {
			s.Federation.SendPresence(context.Background(), c.User, c.State)
		}
		s.AppServices.PresenceChanged(c.User)
	}, func(roomID string) { s.AppServices.TypingChanged(roomID) })
	if s.relay != nil {
		// Every process keeps who is typing and everyone's presence, at
		// the same positions: the database orders the changes.
		s.Typing.SetOrder(func(c syncstream.TypingChange) error {
			return s.relay.publishOrdered(relayMessage{Typing: &relayedTyping{Room: c.Room, User: c.User, Typing: c.Typing,
				Timeout: c.Timeout.Milliseconds()}})
		})
		s.Presence.SetOrder(func(c syncstream.PresenceChange) error {
			return s.relay.publishOrdered(relayMessage{Presence: newRelayedPresence(c)})
		})
	}
	s.E2EE = e2ee.New(db, cfg.ServerName, log)
	wireE2EE(db, s.Accounts, s.E2EE, s.Notifier)
	wireDeviceAccountData(db, s.Accounts, s.Notifier)
	pushDeps := push.Deps{DB: db, Rooms: s.Rooms, Presence: s.Presence, ServerName: cfg.ServerName, Log: log,
		GatewayAllowCIDRs: cfg.PushGatewayAllowCIDRs, Hold: time.Duration(cfg.PushHoldSeconds) * time.Second,
		ThreadSubscriptionRules: cfg.ThreadSubscriptionPushRules}
	if s.relay != nil {
		pushDeps.Standby = true // until this process leads
		pushDeps.PushesQueued = func(users []string) { s.relay.publish(relayMessage{PushUsers: users}) }
		pushDeps.RulesChanged = func(userID string) { s.relay.publish(relayMessage{Rules: userID}) }
	}
	s.Push, err = push.New(pushDeps)
	if err != nil {
		db.Close()
		return nil, err
	}
	// Push records notifications in the transaction of the events, and
	// observes first: its room caches are current before a sync hears of
	// the events.
	s.Rooms.SetTxHook(s.Push.Record)
	s.Rooms.Observe(s.Push.Observe)
	// Remote device lists are dropped before syncs hear of the membership
	// change that ends the shared room, so a client reacting to
	// device_lists.left never reads the stale list.
	s.Rooms.Observe(watchMemberships(s.E2EE, log))
	if s.relay != nil {
		// Before the sync wake-ups: a process woken for a redaction has
		// already dropped the redacted event from its cache.
		s.Rooms.Observe(s.relay.publishRedactions)
	}
	s.Rooms.Observe(feedNotifier(s.Notifier))
	// A partial-state room whose state is complete now shows in eager
	// syncs (MSC3902): its users wake.
	s.Rooms.OnStateComplete(func(c rooms.StateCompletion) {
		// Device lists first: the users woken read the changes it shows.
		if err := s.E2EE.StateCompleted(context.Background(), c.RoomID, c.Servers, c.DeviceListPos, c.MembersChanged, c.MembersChangedSinceJoin); err != nil {
			log.Warn("bringing device lists up to date after a partial-state join", "room", c.RoomID, "err", err)
		}
		s.Notifier.RoomEvent(context.Background(), c.RoomID, c.Pos, "", "")
	})
	s.Accounts.OnDevicesDeleted(push.DevicesDeleted)
	// Every deactivation road ends with the user leaving their rooms.
	s.Accounts.OnDeactivated(s.Rooms.LeaveAll)
	// With several processes, application services get their events from
	// the leader only, as gateways and other servers do.
	if s.AppServices, err = startAppServices(ctx, s, regs, s.relay != nil); err != nil {
		s.Push.Close()
		db.Close()
		return nil, err
	}
	poll := 30 * time.Second
	if s.relay != nil {
		poll = time.Second // other processes schedule too
	}
	s.Delayed = rtc.NewDelayed(db, s.Rooms, log, rtc.Options{MaxDelay: time.Duration(cfg.MaxEventDelayMS) * time.Millisecond, Poll: poll})
	s.Rooms.Observe(s.Delayed.Observe)
	if s.relay != nil {
		s.Delayed.Scheduled = func() { s.relay.publish(relayMessage{Delayed: true}) }
	}
	fedDeps := federation.Deps{Config: cfg, DB: db, Rooms: s.Rooms, Media: s.Media, Key: key, Notifier: s.Notifier,
		Typing: s.Typing, Presence: s.Presence, E2EE: s.E2EE, AppServices: s.AppServices, Log: log, Version: version}
	if s.relay != nil {
		fedDeps.Standby = true // until this process leads
		fedDeps.Queued = func(dests []string) { s.relay.publish(relayMessage{Dests: dests}) }
	}
	if s.Federation, err = federation.New(ctx, fedDeps); err != nil {
		s.AppServices.Close()
		s.Push.Close()
		db.Close()
		return nil, err
	}
	s.E2EE.SetRemote(s.Federation.E2EERemote())
	lk, lkKey, err := s.liveKit(cfg)
	if err != nil {
		s.Federation.Close()
		s.AppServices.Close()
		s.Push.Close()
		db.Close()
		return nil, err
	}
	s.lk, s.lkKey = lk, lkKey
	clientDeps := clientapi.Deps{Config: cfg, DB: db, Accounts: s.Accounts, Rooms: s.Rooms, Notifier: s.Notifier,
		Typing: s.Typing, Presence: s.Presence, Media: s.Media, E2EE: s.E2EE, Federation: s.Federation, Push: s.Push,
		AppServices: s.AppServices, Delayed: s.Delayed, LiveKit: lk, Mail: mail, Log: log, Version: version}
	if cfg.SignInAlertsGeoIPDB != "" {
		if s.geo, err = geoip.Open(cfg.SignInAlertsGeoIPDB); err != nil {
			if lk != nil {
				lk.Close()
			}
			s.Federation.Close()
			s.AppServices.Close()
			s.Push.Close()
			db.Close()
			return nil, err
		}
		clientDeps.Locator = s.geo
	}
	s.clientAPI = clientapi.New(clientDeps)
	s.clientAPI.Routes(c)
	if cfg.SignInAlerts && cfg.ServerNoticesLocalpart == "" {
		log.Warn("sign_in_alerts is on but server_notices_localpart is empty: no sign-in alerts are sent")
	}
	c.Get("/health", s.health)
	// The federation and key APIs also answer on the client listener, as on
	// other homeservers, for operators whose reverse proxy sends both to one
	// port; X-Matrix authentication applies all the same.
	s.Federation.Routes(c)
	s.Admin = admin.New(admin.Deps{Config: cfg, DB: db, Accounts: s.Accounts, Rooms: s.Rooms, Media: s.Media, Log: log, Version: version,
		Senders: s.Federation.Queue()})
	s.Admin.Routes(c)
	s.Console = console.New(console.Deps{Config: cfg, DB: db, Accounts: s.Accounts, Admin: s.Admin, Queue: s.Federation.Queue(),
		Notices: s.clientAPI.SendServerNotice, Log: log})
	s.Console.Routes(c)
	s.oauth = oauth.New(oauth.Deps{Config: cfg, DB: db, Accounts: s.Accounts, Log: log, DeviceRenamed: s.E2EE.RecordDeviceListChange,
		ProfileChanged: s.Rooms.ProfileChanged,
		AccountDataChanged: func(userID string, pos int64) {
			s.Notifier.Users([]string{userID}, syncstream.Position{AccountData: pos})
		}})
	s.oauth.Routes(c)
	s.client = c

	f := s.router(observe, "federation")
	s.Federation.Routes(f)
	f.Get("/health", s.health)
	s.federation = f
	s.registerMetrics()
	if s.relay == nil {
		s.Delayed.Start() // one process: it leads
	} else {
		if err := s.startCluster(ctx); err != nil {
			s.Console.Close()
			s.Admin.Close()
			s.Federation.Close()
			s.AppServices.Close()
			s.Push.Close()
			db.Close()
			return nil, err
		}
	}
	return s, nil
}

// liveKit is the LiveKit authorization service cfg describes; nil without
// livekit_url.
func (s *Server) liveKit(cfg config.Config) (*rtc.LiveKit, string, error) {
	if cfg.LiveKitURL == "" {
		return nil, "", nil
	}
	secret, err := cfg.ReadLiveKitSecret()
	if err != nil {
		return nil, "", err
	}
	key := strings.Join([]string{cfg.LiveKitURL, cfg.LiveKitAPIKey, secret, strings.Join(cfg.RTCFullAccessServers, ",")}, "\x00")
	if s.lk != nil && key == s.lkKey {
		return s.lk, key, nil // unchanged: keep its watches
	}
	lk := rtc.NewLiveKit(s.DB, s.Rooms, s.Federation, rtc.LiveKitOptions{ServerName: cfg.ServerName,
		URL: cfg.LiveKitURL, APIKey: cfg.LiveKitAPIKey, APISecret: secret, FullAccessServers: cfg.RTCFullAccessServers}, s.Log)
	lk.SetDelayed(s.Delayed)
	return lk, key, nil
}

// Reload applies a changed configuration while the server runs (SIGHUP):
// cfg must be validated, and differ from the running one only in
// reloadable keys (config.WithReloaded). The parts that read them per
// request (client API, media) take the new values; on an error nothing
// changes. The log level is the caller's, which owns the logger.
func (s *Server) Reload(cfg config.Config) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	lk, key, err := s.liveKit(cfg) // the secret file is read again
	if err != nil {
		return err
	}
	if err := s.Media.Update(cfg); err != nil {
		return err
	}
	s.clientAPI.Update(cfg, lk)
	s.oauth.Update(cfg)
	if old := s.lk; old != nil && old != lk {
		old.Close() // the SFU's settings changed: its watches end
	}
	s.lk, s.lkKey = lk, key
	return nil
}

// startAppServices makes the registered application services known to
// authentication, creates each one's sender user (without a password) if
// missing, and starts pushing events to them (unless standby: when this
// process leads).
func startAppServices(ctx context.Context, s *Server, regs []*appservice.Registration, standby bool) (*appservice.Pusher, error) {
	registry := appservice.NewRegistry(regs, s.Config.ServerName)
	s.Accounts.AppServices = registry
	for _, reg := range regs {
		exists, err := s.DB.UserExists(ctx, reg.SenderLocalpart)
		if err != nil {
			return nil, err
		}
		if exists {
			continue
		}
		_, err = s.Accounts.Register(ctx, accounts.NewUser{Localpart: reg.SenderLocalpart, InhibitLogin: true})
		if err != nil && mxhttp.AsError(err).ErrCode != "M_USER_IN_USE" {
			return nil, fmt.Errorf("creating the sender of application service %s: %w", reg.ID, err)
		}
		s.Log.Info("created application service sender", "appservice", reg.ID, "user_id", registry.SenderID(reg))
	}
	p, err := appservice.NewPusher(ctx, s.DB, s.Rooms, registry, s.Log, standby)
	if err != nil {
		return nil, err
	}
	s.Rooms.Observe(p.Observe)
	p.SetEphemeralSources(s.Typing, s.Presence)
	return p, nil
}

func (s *Server) router(observe mxhttp.RequestObserver, listener string) chi.Router {
	r := chi.NewRouter()
	r.Use(func(next http.Handler) http.Handler {
		return mxhttp.Common(s.Log.With("listener", listener), s.bodyLimit, observe, routePattern, next)
	})
	r.NotFound(mxhttp.NotFoundHandler)
	r.MethodNotAllowed(mxhttp.MethodNotAllowedHandler)
	return r
}

// bodyLimit is the default body limit of a request (mxhttp.Common):
// max_request_bytes, as a JSON body is held in memory whole. Routes that
// take more (uploads, federation transactions) set their own in their
// API's route table (bodyLimits).
func (s *Server) bodyLimit(*http.Request) int64 { return s.Config.MaxRequestBytes }

func routePattern(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil && rc.RoutePattern() != "" {
		return rc.RoutePattern()
	}
	return "unmatched"
}

func (s *Server) requestMetrics() mxhttp.RequestObserver {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_http_requests_total", Help: "HTTP requests by route, method and status.",
	}, []string{"route", "method", "code"})
	durations := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "hearth_http_request_duration_seconds", Help: "HTTP request latency by route.",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 30},
	}, []string{"route"})
	s.metrics.MustRegister(requests, durations)
	return func(r *http.Request, route string, status int, d time.Duration) {
		requests.WithLabelValues(route, r.Method, fmt.Sprint(status)).Inc()
		durations.WithLabelValues(route).Observe(d.Seconds())
	}
}

// GET /health: 200 when the database answers.
func (s *Server) health(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.DB.Ping(ctx); err != nil {
		mxhttp.WriteError(w, r, fmt.Errorf("health: %w", err))
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = w.Write([]byte("OK"))
}

// ClientHandler serves the client-server API (the plain-HTTP listener).
func (s *Server) ClientHandler() http.Handler { return s.client }

// FederationHandler serves the federation and key APIs (the TLS listener).
func (s *Server) FederationHandler() http.Handler { return s.federation }

// MetricsHandler serves /metrics and /health: the metrics listener, which
// only runs when metrics_listen is set.
func (s *Server) MetricsHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /health", s.health)
	return mux
}

// Close stops background work (presence and typing expiry, federation
// senders, push delivery) and releases the store.
func (s *Server) Close() error {
	if s.relay != nil {
		if s.leader.close() {
			s.relay.publish(relayMessage{SteppedDown: true})
		}
		s.relay.close()
	}
	s.reloadMu.Lock()
	if lk := s.lk; lk != nil {
		lk.Close()
	}
	s.reloadMu.Unlock()
	s.clientAPI.Close()
	if s.geo != nil {
		_ = s.geo.Close()
	}
	s.Delayed.Stop()
	s.Presence.Close()
	s.Typing.Close()
	s.Console.Close()
	s.Admin.Close()
	s.Federation.Close()
	s.AppServices.Close()
	s.Push.Close()
	return s.DB.Close()
}

// Run serves the client API on cfg.Listen and, unless disabled, the
// federation API with TLS on cfg.FederationListen, until ctx is cancelled;
// then it stops accepting, lets requests in flight finish (up to 10 s) and
// returns.
//
// tlsCfg is the federation listener's TLS configuration, and the client
// listener's too with tls: acme (which then serves HTTPS); acmeHTTP, when
// not nil, answers ACME HTTP-01 challenges on acme_http_listen. listening,
// when not nil, runs once every listener accepts connections.
func (s *Server) Run(ctx context.Context, tlsCfg *tls.Config, acmeHTTP http.Handler, listening func()) error {
	servers := []*http.Server{}
	errc := make(chan error, 4)
	start := func(addr string, h http.Handler, tlsCfg *tls.Config, name string) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s listener: %w", name, err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second, TLSConfig: tlsCfg,
			ErrorLog: slog.NewLogLogger(s.Log.Handler(), slog.LevelWarn)}
		servers = append(servers, srv)
		s.Log.Info("listening", "api", name, "addr", ln.Addr().String(), "tls", tlsCfg != nil)
		go func() {
			var err error
			if tlsCfg != nil {
				err = srv.ServeTLS(ln, "", "")
			} else {
				err = srv.Serve(ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("%s listener: %w", name, err)
			}
		}()
		return nil
	}
	// Each listener gets its own copy: http.Server adds its protocols to
	// the TLS config it serves with.
	var clientTLS *tls.Config
	if s.Config.TLS == "acme" {
		clientTLS = tlsCfg.Clone()
	}
	if err := start(s.Config.Listen, s.client, clientTLS, "client"); err != nil {
		return err
	}
	if acmeHTTP != nil && s.Config.ACMEHTTPListen != "" {
		if err := start(s.Config.ACMEHTTPListen, acmeHTTP, nil, "acme-http"); err != nil {
			return err
		}
	}
	if s.Config.MetricsListen != "" {
		if err := start(s.Config.MetricsListen, s.MetricsHandler(), nil, "metrics"); err != nil {
			return err
		}
	}
	if s.Config.FederationListen != "" {
		if err := start(s.Config.FederationListen, s.federation, tlsCfg.Clone(), "federation"); err != nil {
			for _, srv := range servers {
				srv.Close()
			}
			return err
		}
	}
	if listening != nil {
		go listening()
	}
	var runErr error
	select {
	case <-ctx.Done():
		s.Log.Info("shutting down")
	case runErr = <-errc:
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(shutCtx)
	}
	return runErr
}
