// Package console serves the built-in admin console under /_hearth/admin/:
// server-rendered pages (html/template, no JavaScript) where a server admin
// signs in with their password and manages users, rooms, media, reports,
// registration tokens and federation. Every action runs an admin API
// handler in process (admin.API.Invoke), so the console shares the API's
// checks and its durable, resumable room deletions.
package console

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/admin"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/federation"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/ratelimit"
	"github.com/hearth-matrix/hearth/storage"
)

// Prefix is where the console is served on the client listener.
const Prefix = "/_hearth/admin"

const (
	sessionCookie = "hearth_console"
	loginCSRF     = "hearth_console_login"
	sessionTTL    = 12 * time.Hour
	sampleEvery   = 10 * time.Minute
)

// Console is the admin console of one homeserver.
type Console struct {
	cfg      config.Config
	db       *storage.DB
	accounts *accounts.Accounts
	admin    *admin.API
	queue    *federation.Queue // nil when federation is off
	notices  handlerFunc
	log      *slog.Logger

	loginIP, loginUser *ratelimit.Limiter

	stop      chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// Deps are what the console is built on.
type Deps struct {
	Config   config.Config
	DB       *storage.DB
	Accounts *accounts.Accounts
	Admin    *admin.API
	Queue    *federation.Queue
	// Notices is the client API's send_server_notice handler.
	Notices handlerFunc
	Log     *slog.Logger
}

// handlerFunc is an admin endpoint of another API, run in process.
type handlerFunc func(*http.Request, accounts.Caller) (any, error)

// New returns the console and starts recording the dashboard's daily
// counts (now, then every ten minutes) until Close.
func New(d Deps) *Console {
	c := &Console{cfg: d.Config, db: d.DB, accounts: d.Accounts, admin: d.Admin, queue: d.Queue, notices: d.Notices, log: d.Log,
		loginIP:   ratelimit.New(d.Config.RateLimitLoginPerSecond, d.Config.RateLimitLoginBurst),
		loginUser: ratelimit.New(d.Config.RateLimitLoginPerSecond, d.Config.RateLimitLoginBurst),
		stop:      make(chan struct{})}
	c.wg.Add(1)
	go c.sampleLoop()
	return c
}

// Close stops the sampler. It may be called more than once (a server is
// closed by Stop and again by a test's cleanup).
func (c *Console) Close() {
	c.closeOnce.Do(func() { close(c.stop) })
	c.wg.Wait()
}

func (c *Console) sampleLoop() {
	defer c.wg.Done()
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		c.Sample(context.Background())
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
	}
}

// Sample records today's row of the dashboard's daily counts.
func (c *Console) Sample(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	now := time.Now()
	s, err := storage.CollectServerStats(ctx, c.db.Read(), now.Add(-24*time.Hour).UnixMilli())
	if err != nil {
		c.log.Warn("console: collecting stats", "err", err)
		return
	}
	var up, down int64
	if c.queue != nil {
		for _, d := range c.queue.Status() {
			if d.Failing > 0 {
				down++
			} else {
				up++
			}
		}
	}
	if err := c.db.RecordDailyStats(ctx, now.UnixMilli()/86400000, s, up, down); err != nil {
		c.log.Warn("console: recording daily stats", "err", err)
	}
}

// access is who may use a route.
type access int

const (
	public   access = iota // the sign-in page
	signedIn               // a session of a current server admin
)

// handler serves a page or runs an action; s is nil on public routes.
type handler func(w http.ResponseWriter, r *http.Request, s *session) error

type route struct {
	method, path string
	access       access
	h            handler
}

// routes is every page and action of the console. Actions are POSTs of
// forms carrying the session's CSRF token; they redirect to a page.
func (c *Console) routes() []route {
	return []route{
		{"GET", "/", signedIn, c.dashboard},
		{"GET", "/login", public, c.loginPage},
		{"POST", "/login", public, c.login},
		{"POST", "/logout", signedIn, c.logout},

		{"GET", "/users", signedIn, c.users},
		{"POST", "/users", signedIn, c.createUser},
		{"GET", "/user", signedIn, c.user},
		{"POST", "/user/password", signedIn, c.resetPassword},
		{"POST", "/user/deactivate", signedIn, c.deactivate},
		{"POST", "/user/admin", signedIn, c.setAdmin},
		{"POST", "/user/device/delete", signedIn, c.deleteDevice},

		{"GET", "/rooms", signedIn, c.rooms},
		{"GET", "/room", signedIn, c.room},
		{"POST", "/room/delete", signedIn, c.deleteRoom},
		{"POST", "/room/block", signedIn, c.blockRoom},

		{"GET", "/media", signedIn, c.media},
		{"POST", "/media/quarantine", signedIn, c.quarantine},
		{"POST", "/media/delete", signedIn, c.deleteMedia},

		{"GET", "/reports", signedIn, c.reports},
		{"POST", "/reports/act", signedIn, c.actOnReport},

		{"GET", "/tokens", signedIn, c.tokens},
		{"POST", "/tokens", signedIn, c.newToken},
		{"POST", "/tokens/delete", signedIn, c.deleteToken},

		{"GET", "/federation", signedIn, c.federation},
		{"POST", "/federation/retry", signedIn, c.retryDestination},

		{"GET", "/notices", signedIn, c.noticesPage},
		{"POST", "/notices", signedIn, c.sendNotice},

		{"GET", "/tasks", signedIn, c.tasks},
	}
}

// Routes registers the console on r (the client listener).
func (c *Console) Routes(r chi.Router) {
	r.Get(Prefix, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"/", http.StatusFound)
	})
	for _, rt := range c.routes() {
		r.Method(rt.method, Prefix+rt.path, c.serve(rt))
	}
}

// session is a signed-in admin.
type session struct {
	token  string
	caller accounts.Caller
	csrf   string
}

// serve is the one adapter between HTTP and a console handler: safe
// headers, the session and admin check, CSRF on every POST.
func (c *Console) serve(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Cache-Control", "no-store")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		var s *session
		if rt.access == signedIn {
			var err error
			s, err = c.session(r)
			if err != nil {
				c.fail(w, r, err)
				return
			}
			if s == nil {
				if r.Method == http.MethodGet {
					http.Redirect(w, r, Prefix+"/login", http.StatusFound)
				} else {
					c.render(w, http.StatusForbidden, "error", nil, page{Title: "Signed out", Error: "Your session has ended. Sign in again."})
				}
				return
			}
			if r.Method == http.MethodPost && !c.csrfOK(r, s.csrf) {
				c.render(w, http.StatusForbidden, "error", s, page{Title: "Forbidden", Error: "This form was not sent from the console (missing or wrong CSRF token). Reload the page and try again."})
				return
			}
		}
		if err := rt.h(w, r, s); err != nil {
			c.fail(w, r, err)
		}
	}
}

// errForbidden is a signed-in user who is not (or no longer) an admin.
var errForbidden = mxhttp.Forbidden("You are not a server admin")

// session is the request's signed-in admin; nil without a valid session
// cookie; errForbidden if the user is not a server admin any more.
func (c *Console) session(r *http.Request) (*session, error) {
	ck, err := r.Cookie(sessionCookie)
	if err != nil || ck.Value == "" {
		return nil, nil
	}
	cs, err := c.db.ConsoleSessionByToken(r.Context(), ck.Value)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	u, err := c.db.GetUser(r.Context(), cs.UserID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if err != nil || !u.IsAdmin || u.Deactivated {
		return nil, errForbidden
	}
	return &session{token: ck.Value, caller: accounts.Caller{UserID: cs.UserID}, csrf: cs.CSRF}, nil
}

func (c *Console) csrfOK(r *http.Request, want string) bool {
	got := r.PostFormValue("csrf")
	return got != "" && want != "" && subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// fail shows err as a page with its Matrix status.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, err error) {
	e := mxhttp.AsError(err)
	if e.Status >= 500 {
		c.log.Error("console", "path", r.URL.Path, "err", err)
	}
	c.render(w, e.Status, "error", nil, page{Title: http.StatusText(e.Status), Error: e.ErrCode + ": " + e.Message})
}

func (c *Console) secure(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(c.cfg.WellKnownClient, "https:")
}

func randomToken() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// GET /login: the form, its CSRF token bound to a cookie (there is no
// session yet).
func (c *Console) loginPage(w http.ResponseWriter, r *http.Request, _ *session) error {
	csrf := randomToken()
	http.SetCookie(w, &http.Cookie{Name: loginCSRF, Value: csrf, Path: Prefix + "/login", HttpOnly: true,
		Secure: c.secure(r), SameSite: http.SameSiteStrictMode, MaxAge: 3600})
	c.render(w, http.StatusOK, "login", nil, page{Title: "Sign in", CSRF: csrf})
	return nil
}

// POST /login: rate limited like /login of the client API (per address
// and per user), then the password through the accounts layer.
func (c *Console) login(w http.ResponseWriter, r *http.Request, _ *session) error {
	ck, err := r.Cookie(loginCSRF)
	if err != nil || !c.csrfOK(r, ck.Value) {
		c.render(w, http.StatusForbidden, "error", nil, page{Title: "Forbidden", Error: "The sign-in form expired. Reload the page and try again."})
		return nil
	}
	if ok, _ := c.loginIP.Allow(clientIP(r)); !ok {
		return mxhttp.LimitExceeded("Too many sign-in attempts; wait a minute")
	}
	pc := accounts.PasswordCredentials{Identifier: &accounts.Identifier{Type: "m.id.user", User: strings.TrimSpace(r.PostFormValue("user"))},
		Password: r.PostFormValue("password")}
	localpart, err := c.accounts.LoginLocalpart(r.Context(), pc)
	if err != nil {
		return err
	}
	if ok, _ := c.loginUser.Allow(localpart); !ok {
		return mxhttp.LimitExceeded("Too many sign-in attempts; wait a minute")
	}
	u, err := c.accounts.CheckPassword(r.Context(), localpart, pc.Password)
	if err != nil {
		return err
	}
	if !u.IsAdmin || u.Deactivated {
		return errForbidden
	}
	tok := randomToken()
	exp := time.Now().Add(sessionTTL)
	if err := c.db.InsertConsoleSession(r.Context(), tok, storage.ConsoleSession{UserID: u.UserID, CSRF: randomToken(), ExpiresTS: exp.UnixMilli()}); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: loginCSRF, Value: "", Path: Prefix + "/login", MaxAge: -1})
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: tok, Path: Prefix + "/", HttpOnly: true, Secure: c.secure(r),
		SameSite: http.SameSiteStrictMode, Expires: exp})
	c.log.Info("console sign-in", "user_id", u.UserID)
	http.Redirect(w, r, Prefix+"/", http.StatusSeeOther)
	return nil
}

// POST /logout.
func (c *Console) logout(w http.ResponseWriter, r *http.Request, s *session) error {
	if err := c.db.DeleteConsoleSession(r.Context(), s.token); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: Prefix + "/", MaxAge: -1})
	http.Redirect(w, r, Prefix+"/login", http.StatusSeeOther)
	return nil
}
