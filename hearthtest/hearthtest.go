// Package hearthtest starts in-process Hearth servers for tests, on a
// temporary SQLite database and, when HEARTH_TEST_POSTGRES holds a DSN, on a
// fresh PostgreSQL schema too. Tests talk to them over real HTTP.
package hearthtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/homeserver"
)

// Backend names a database engine to run a test on.
type Backend string

const (
	SQLite   Backend = "sqlite"
	Postgres Backend = "postgres"
)

// Backends lists the engines tests run on: SQLite always, PostgreSQL when
// HEARTH_TEST_POSTGRES is set.
func Backends() []Backend {
	if os.Getenv("HEARTH_TEST_POSTGRES") != "" {
		return []Backend{SQLite, Postgres}
	}
	return []Backend{SQLite}
}

// ForEachBackend runs fn as a subtest per backend.
func ForEachBackend(t *testing.T, fn func(t *testing.T, b Backend)) {
	for _, b := range Backends() {
		t.Run(string(b), func(t *testing.T) { fn(t, b) })
	}
}

// DatabaseURL returns a new empty database for the test: a SQLite file in a
// temporary directory, or a PostgreSQL schema dropped when the test ends.
func DatabaseURL(t testing.TB, b Backend) string {
	t.Helper()
	if b == SQLite {
		return filepath.Join(t.TempDir(), "hearth.db")
	}
	dsn := os.Getenv("HEARTH_TEST_POSTGRES")
	var rb [6]byte
	_, _ = rand.Read(rb[:])
	schema := "hearth_test_" + hex.EncodeToString(rb[:])
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatalf("opening HEARTH_TEST_POSTGRES: %v", err)
	}
	defer admin.Close()
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		t.Fatalf("creating test schema: %v", err)
	}
	t.Cleanup(func() {
		db, err := sql.Open("pgx", dsn)
		if err == nil {
			_, _ = db.Exec("DROP SCHEMA " + schema + " CASCADE")
			db.Close()
		}
	})
	sep := "?"
	if strings.Contains(dsn, "?") {
		sep = "&"
	}
	return dsn + sep + "search_path=" + schema
}

// Server is an in-process homeserver with its client API on URL and its
// federation API (TLS) on FederationURL.
type Server struct {
	*homeserver.Server
	URL           string
	FederationURL string
	// Client talks to the federation listener (it trusts its certificate).
	Client *http.Client

	client, fed *swappable
}

// swappable lets Restart put a new homeserver behind the same listeners.
type swappable struct{ h atomic.Pointer[http.Handler] }

func (s *swappable) set(h http.Handler) { s.h.Store(&h) }
func (s *swappable) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.h.Load()).ServeHTTP(w, r)
}

// TestConfig is the configuration NewServer starts from.
func TestConfig(t testing.TB, b Backend) config.Config {
	cfg := config.Default()
	cfg.ServerName = "hearth.test"
	cfg.DataDir = t.TempDir()
	cfg.DatabaseURL = DatabaseURL(t, b)
	cfg.Registration = config.RegistrationOpen
	cfg.RateLimits = "off"
	cfg.BcryptCost = 4
	cfg.LogLevel = "warn"
	// Tests of other features log in several devices and count the rooms
	// and invites sync shows; the sign-in alert tests turn alerts on.
	cfg.SignInAlerts = false
	return cfg
}

// NewServer starts a server on backend b; modify may adjust its config.
func NewServer(t testing.TB, b Backend, modify func(*config.Config)) *Server {
	t.Helper()
	cfg := TestConfig(t, b)
	if modify != nil {
		modify(&cfg)
	}
	return serve(t, cfg)
}

// serve starts a homeserver on cfg behind listeners of its own.
func serve(t testing.TB, cfg config.Config) *Server {
	t.Helper()
	s := &Server{client: &swappable{}, fed: &swappable{}}
	s.start(t, cfg)
	client := httptest.NewServer(s.client)
	fed := httptest.NewTLSServer(s.fed)
	s.URL, s.FederationURL, s.Client = client.URL, fed.URL, fed.Client()
	t.Cleanup(func() {
		client.Close()
		fed.Close()
		s.Server.Close()
	})
	return s
}

// start validates cfg and puts a new homeserver behind s's handlers.
func (s *Server) start(t testing.TB, cfg config.Config) {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	cfg.ResolvePaths()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	hs, err := homeserver.New(context.Background(), cfg, log)
	if err != nil {
		t.Fatalf("starting homeserver: %v", err)
	}
	s.Server = hs
	s.client.set(hs.ClientHandler())
	s.fed.set(hs.FederationHandler())
}

// Restart stops the homeserver (its federation senders too) and starts a
// new one on the same store, data directory and listeners, as a process
// restart would.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	cfg := s.Config
	if err := s.Server.Close(); err != nil {
		t.Fatalf("closing homeserver: %v", err)
	}
	s.start(t, cfg)
}

// AnotherProcess starts a second homeserver process on s's PostgreSQL
// database and schema, as an operator runs several processes on one
// database: the same configuration (server name, data directory, signing
// key), listeners of its own. Only PostgreSQL is shared by processes.
func (s *Server) AnotherProcess(t testing.TB) *Server {
	t.Helper()
	if !strings.HasPrefix(s.Config.DatabaseURL, "postgres") {
		t.Fatal("AnotherProcess needs a PostgreSQL backend")
	}
	return serve(t, s.Config)
}

// Stop ends the homeserver as a process that stops would (its background
// work stops, its database connections close); its listeners answer 503
// from then on.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	down := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "stopped", http.StatusServiceUnavailable)
	})
	s.client.set(down)
	s.fed.set(down)
	if err := s.Server.Close(); err != nil {
		t.Fatalf("stopping homeserver: %v", err)
	}
}

// FederationDown makes the server's federation listener answer every
// request with 503, as a server that is down would fail; the client API
// keeps working.
func (s *Server) FederationDown(t testing.TB) {
	t.Helper()
	s.fed.set(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
}

// WrapFederation puts wrap around the server's federation handler (to
// play an older or misbehaving server); wrap gets the federation and the
// client handler.
func (s *Server) WrapFederation(wrap func(fed, client http.Handler) http.Handler) {
	s.fed.set(wrap(s.FederationHandler(), s.ClientHandler()))
}

// testWriter sends server logs to the test log, shown only on failure.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// Response is a decoded HTTP response.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any
}

// ErrCode is the Matrix errcode of an error response.
func (r Response) ErrCode() string {
	s, _ := r.JSON["errcode"].(string)
	return s
}

// Do sends a request to the client API. body may be nil, a []byte or string
// sent as is, or a value encoded as JSON. token, when set, goes in the
// Authorization header.
func (s *Server) Do(t testing.TB, method, path, token string, body any) Response {
	t.Helper()
	return Do(t, http.DefaultClient, method, s.URL+path, token, body)
}

// Do sends one request to any URL with client.
func Do(t testing.TB, client *http.Client, method, url, token string, body any) Response {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			t.Fatalf("encoding request body: %v", err)
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatalf("building request: %v", err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	out := Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(b, &out.JSON)
	}
	return out
}

// Expect fails the test unless r has the given status and, when errcode is
// not empty, that Matrix errcode.
func Expect(t testing.TB, r Response, status int, errcode string) {
	t.Helper()
	if r.Status != status || (errcode != "" && r.ErrCode() != errcode) {
		t.Fatalf("got %d %s, want %d %s; body: %s", r.Status, r.ErrCode(), status, errcode, r.Body)
	}
}

// RegisterUser creates the local user @localpart:<server> with a device and
// returns its user ID and access token.
func (s *Server) RegisterUser(t testing.TB, localpart string) (userID, token string) {
	t.Helper()
	login, err := s.Accounts.Register(context.Background(), accounts.NewUser{Localpart: localpart, Password: "password"})
	if err != nil {
		t.Fatalf("registering %s: %v", localpart, err)
	}
	return login.UserID, login.AccessToken
}
