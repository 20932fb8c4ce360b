package appservice_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

const (
	asToken = "as_secret_token"
	hsToken = "hs_secret_token"
)

// fakeAS is an application service: it records the transactions it is
// sent and answers 500 while failing is set.
type fakeAS struct {
	srv *httptest.Server

	mu       sync.Mutex
	failing  bool
	attempts []string                     // txn IDs in the order they arrived
	txns     map[string][]json.RawMessage // accepted transactions
	order    []string                     // accepted txn IDs in order
	eph      map[string][]json.RawMessage // accepted transactions' ephemeral arrays
	raw      []string                     // every attempt's body, in order
	badAuth  int
	// onQuery answers GET requests (users, rooms, thirdparty queries) with
	// a status and a body; nil: 404.
	onQuery func(r *http.Request) (int, string)
}

func newFakeAS(t *testing.T) *fakeAS {
	f := &fakeAS{txns: map[string][]json.RawMessage{}, eph: map[string][]json.RawMessage{}}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		if r.Header.Get("Authorization") != "Bearer "+hsToken {
			f.badAuth++
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if r.URL.Path == "/_matrix/app/v1/ping" {
			_, _ = w.Write([]byte("{}"))
			return
		}
		if r.Method == "GET" {
			status, body := http.StatusNotFound, "{}"
			if f.onQuery != nil {
				f.mu.Unlock() // the answer may call the homeserver, which may query again
				status, body = f.onQuery(r)
				f.mu.Lock()
			}
			w.WriteHeader(status)
			_, _ = w.Write([]byte(body))
			return
		}
		txn, ok := strings.CutPrefix(r.URL.Path, "/_matrix/app/v1/transactions/")
		if !ok || r.Method != "PUT" {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		raw, _ := io.ReadAll(r.Body)
		f.attempts = append(f.attempts, txn)
		f.raw = append(f.raw, string(raw))
		if f.failing {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		var body struct {
			Events    []json.RawMessage `json:"events"`
			Ephemeral []json.RawMessage `json:"ephemeral"`
		}
		if err := json.Unmarshal(raw, &body); err != nil || body.Events == nil {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if _, seen := f.txns[txn]; !seen {
			f.order = append(f.order, txn)
			f.txns[txn] = body.Events
			f.eph[txn] = body.Ephemeral
		}
		_, _ = w.Write([]byte("{}"))
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAS) setFailing(v bool) {
	f.mu.Lock()
	f.failing = v
	f.mu.Unlock()
}

// events are the accepted events in delivery order, as (type, body or
// membership, sender) strings.
func (f *fakeAS) events() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []map[string]any
	for _, txn := range f.order {
		for _, raw := range f.txns[txn] {
			var ev map[string]any
			_ = json.Unmarshal(raw, &ev)
			out = append(out, ev)
		}
	}
	return out
}

func (f *fakeAS) bodies() []string {
	var out []string
	for _, ev := range f.events() {
		if c, ok := ev["content"].(map[string]any); ok && ev["type"] == "m.room.message" {
			out = append(out, c["body"].(string))
		}
	}
	return out
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// writeRegistration writes the test bridge's registration: users
// @bridge_*, aliases #bridge_*, both exclusive, pushing to asURL.
func writeRegistration(t *testing.T, asURL string, extra ...string) string {
	t.Helper()
	reg := strings.Join(extra, "\n") + `
id: test-bridge
url: ` + asURL + `
as_token: ` + asToken + `
hs_token: ` + hsToken + `
sender_localpart: bridgebot
rate_limited: false
protocols: [chatnet]
de.sorunome.msc2409.push_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: '@bridge_.*'
  aliases:
    - exclusive: true
      regex: '#bridge_.*'
  rooms: []
`
	path := filepath.Join(t.TempDir(), "bridge.yaml")
	if err := os.WriteFile(path, []byte(reg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// bridgeServer starts a server with the test bridge registered.
func bridgeServer(t *testing.T, b hearthtest.Backend, asURL string, extra ...string) *hearthtest.Server {
	t.Helper()
	path := writeRegistration(t, asURL, extra...)
	hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.AppServiceConfigFiles = []string{path} })
	hs.AppServices.SetBackoff(2*time.Millisecond, 20*time.Millisecond)
	return hs
}

func asRegister(t *testing.T, hs *hearthtest.Server, token, username string, inhibit bool) hearthtest.Response {
	t.Helper()
	return hs.Do(t, "POST", "/_matrix/client/v3/register", token,
		map[string]any{"type": "m.login.application_service", "username": username, "inhibit_login": inhibit})
}

func as(userID string) string { return "?user_id=" + url.QueryEscape(userID) }

func TestAppServiceRegistrationAndIdentityAssertion(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := bridgeServer(t, b, "")
		alice, aliceToken := hs.RegisterUser(t, "alice")

		// Registration by the service: inside its namespace, without a
		// password; outside it M_EXCLUSIVE; a bad token 401.
		r := asRegister(t, hs, asToken, "bridge_one", true)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["user_id"] != "@bridge_one:hearth.test" || r.JSON["access_token"] != nil {
			t.Fatalf("inhibited registration: %s", r.Body)
		}
		r = asRegister(t, hs, asToken, "bridge_two", false)
		hearthtest.Expect(t, r, http.StatusOK, "")
		twoDevice, _ := r.JSON["device_id"].(string)
		if tok, _ := r.JSON["access_token"].(string); tok == "" || twoDevice == "" {
			t.Fatalf("registration with login: %s", r.Body)
		}
		hearthtest.Expect(t, asRegister(t, hs, asToken, "carol", true), http.StatusBadRequest, "M_EXCLUSIVE")
		hearthtest.Expect(t, asRegister(t, hs, asToken, "Bad Name", true), http.StatusBadRequest, "M_INVALID_USERNAME")
		hearthtest.Expect(t, asRegister(t, hs, "not-a-token", "bridge_three", true), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, asRegister(t, hs, "", "bridge_three", true), http.StatusUnauthorized, "M_MISSING_TOKEN")

		// Ordinary registration in the exclusive namespace is refused.
		r = hs.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "bridge_four", "password": "pw-123456", "auth": map[string]any{"type": "m.login.dummy"}})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_EXCLUSIVE")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/register/available?username=bridge_five", "", nil), http.StatusBadRequest, "M_EXCLUSIVE")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/register/available?username=bridgebot", "", nil), http.StatusBadRequest, "M_EXCLUSIVE")

		// Identity assertion: the sender by default, a namespace user on
		// request, nobody else.
		whoami := func(query string) hearthtest.Response {
			return hs.Do(t, "GET", "/_matrix/client/v3/account/whoami"+query, asToken, nil)
		}
		if r := whoami(""); r.Status != http.StatusOK || r.JSON["user_id"] != "@bridgebot:hearth.test" {
			t.Fatalf("whoami as the service: %d %s", r.Status, r.Body)
		}
		if r := whoami(as("@bridge_one:hearth.test")); r.Status != http.StatusOK || r.JSON["user_id"] != "@bridge_one:hearth.test" {
			t.Fatalf("whoami as a bridged user: %d %s", r.Status, r.Body)
		}
		hearthtest.Expect(t, whoami(as(alice)), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, whoami(as("@bridge_unregistered:hearth.test")), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, whoami(as("@bridge_one:elsewhere.test")), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, whoami(as("@bridge_one:hearth.test")+"&device_id=NOPE"), http.StatusBadRequest, "M_UNKNOWN_DEVICE")
		if r := whoami(as("@bridge_two:hearth.test") + "&device_id=" + twoDevice); r.Status != http.StatusOK || r.JSON["device_id"] != twoDevice {
			t.Fatalf("whoami as a bridged user's device: %d %s", r.Status, r.Body)
		}

		// Login as a namespace user with the as_token.
		if r := hs.Do(t, "GET", "/_matrix/client/v3/login", "", nil); !strings.Contains(string(r.Body), `"m.login.application_service"`) {
			t.Fatalf("login flows: %s", r.Body)
		}
		r = hs.Do(t, "POST", "/_matrix/client/v3/login", asToken, map[string]any{"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "bridge_one"}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/login", asToken, map[string]any{"type": "m.login.application_service", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}}), http.StatusBadRequest, "M_EXCLUSIVE")

		// Aliases: the exclusive namespace is the service's alone, and the
		// service stays inside its namespaces.
		r = hs.Do(t, "POST", "/_matrix/client/v3/createRoom", aliceToken, map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape("#bridge_x:hearth.test"), aliceToken, map[string]any{"room_id": roomID}), http.StatusBadRequest, "M_EXCLUSIVE")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/createRoom", aliceToken, map[string]any{"room_alias_name": "bridge_y"}), http.StatusBadRequest, "M_EXCLUSIVE")
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape("#other:hearth.test"), asToken, map[string]any{"room_id": roomID}), http.StatusBadRequest, "M_EXCLUSIVE")
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape("#bridge_x:hearth.test"), asToken, map[string]any{"room_id": roomID}), http.StatusOK, "")

		// Timestamp massaging: the service sets origin_server_ts; a user
		// cannot.
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/invite", aliceToken, map[string]any{"user_id": "@bridge_one:hearth.test"}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/join"+as("@bridge_one:hearth.test"), asToken, map[string]any{}), http.StatusOK, "")
		r = hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/t1"+as("@bridge_one:hearth.test")+"&ts=1234567", asToken, map[string]any{"msgtype": "m.text", "body": "old"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		ev := hs.Do(t, "GET", "/_matrix/client/v3/rooms/"+roomID+"/event/"+url.PathEscape(r.JSON["event_id"].(string)), aliceToken, nil)
		if ev.JSON["origin_server_ts"] != 1234567.0 || ev.JSON["sender"] != "@bridge_one:hearth.test" {
			t.Fatalf("massaged event: %s", ev.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/t2"+as("@bridge_one:hearth.test")+"&ts=soon", asToken, map[string]any{"body": "x"}), http.StatusBadRequest, "M_INVALID_PARAM")
		r = hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/t3?ts=1234567", aliceToken, map[string]any{"msgtype": "m.text", "body": "now"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		ev = hs.Do(t, "GET", "/_matrix/client/v3/rooms/"+roomID+"/event/"+url.PathEscape(r.JSON["event_id"].(string)), aliceToken, nil)
		if ev.JSON["origin_server_ts"] == 1234567.0 {
			t.Fatalf("a user massaged a timestamp: %s", ev.Body)
		}

		// A service without a URL cannot be pinged.
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v1/appservice/test-bridge/ping", asToken, map[string]any{}), http.StatusBadRequest, "M_URL_NOT_SET")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v1/appservice/test-bridge/ping", aliceToken, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	})
}

func TestAppServiceReceivesEventsInOrderAcrossFailuresAndRestarts(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fake := newFakeAS(t)
		hs := bridgeServer(t, b, fake.srv.URL)
		_, aliceToken := hs.RegisterUser(t, "alice")
		hearthtest.Expect(t, asRegister(t, hs, asToken, "bridge_one", true), http.StatusOK, "")
		send := func(roomID, body string) {
			t.Helper()
			hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/"+url.PathEscape(body), aliceToken,
				map[string]any{"msgtype": "m.text", "body": body}), http.StatusOK, "")
		}
		newRoom := func() string {
			r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", aliceToken, map[string]any{})
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r.JSON["room_id"].(string)
		}
		private, bridged := newRoom(), newRoom()
		send(private, "not for the bridge")
		// The invite of a namespace user concerns the service; once the
		// user has joined, the whole room does.
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/rooms/"+bridged+"/invite", aliceToken, map[string]any{"user_id": "@bridge_one:hearth.test"}), http.StatusOK, "")
		send(bridged, "while invited")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/rooms/"+bridged+"/join"+as("@bridge_one:hearth.test"), asToken, map[string]any{}), http.StatusOK, "")
		for _, body := range []string{"one", "two", "three"} {
			send(bridged, body)
		}
		waitFor(t, "three messages", func() bool { return len(fake.bodies()) == 3 })
		if got := strings.Join(fake.bodies(), ","); got != "one,two,three" {
			t.Fatalf("delivered %s", got)
		}
		evs := fake.events()
		if len(evs) != 5 || evs[0]["type"] != "m.room.member" || evs[0]["state_key"] != "@bridge_one:hearth.test" || evs[0]["room_id"] != bridged ||
			evs[1]["type"] != "m.room.member" || evs[1]["sender"] != "@bridge_one:hearth.test" {
			t.Fatalf("pushed before the messages: %v", evs)
		}
		for _, ev := range evs {
			if ev["room_id"] != bridged {
				t.Fatalf("pushed an event of a room the service has no interest in: %v", ev)
			}
		}

		// A failing service gets the same transaction again until it
		// accepts it, then everything after it.
		fake.setFailing(true)
		send(bridged, "four")
		waitFor(t, "retries", func() bool {
			fake.mu.Lock()
			defer fake.mu.Unlock()
			return len(fake.attempts) >= len(fake.order)+3
		})
		fake.mu.Lock()
		failedTxn := fake.attempts[len(fake.attempts)-1]
		retried := fake.attempts[len(fake.attempts)-2] == failedTxn
		fake.mu.Unlock()
		if !retried {
			t.Fatalf("the failed transaction was not retried with the same ID")
		}
		send(bridged, "five")
		fake.setFailing(false)
		waitFor(t, "five messages", func() bool { return len(fake.bodies()) == 5 })
		if got := strings.Join(fake.bodies(), ","); got != "one,two,three,four,five" {
			t.Fatalf("delivered %s", got)
		}
		fake.mu.Lock()
		if _, ok := fake.txns[failedTxn]; !ok {
			t.Errorf("transaction %s never accepted; accepted %v", failedTxn, fake.order)
		}
		fake.mu.Unlock()

		// What is owed when the server stops is sent after it restarts.
		fake.setFailing(true)
		send(bridged, "six")
		waitFor(t, "an attempt", func() bool {
			fake.mu.Lock()
			defer fake.mu.Unlock()
			return len(fake.attempts) > 0 && fake.txns[fake.attempts[len(fake.attempts)-1]] == nil
		})
		hs.Restart(t)
		hs.AppServices.SetBackoff(2*time.Millisecond, 20*time.Millisecond)
		send(bridged, "seven")
		fake.setFailing(false)
		waitFor(t, "seven messages", func() bool { return len(fake.bodies()) == 7 })
		if got := strings.Join(fake.bodies(), ","); got != "one,two,three,four,five,six,seven" {
			t.Fatalf("delivered %s", got)
		}
		fake.mu.Lock()
		defer fake.mu.Unlock()
		if fake.badAuth != 0 {
			t.Fatalf("%d requests without the hs_token", fake.badAuth)
		}
	})
}

func TestAppServicePing(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fake := newFakeAS(t)
		hs := bridgeServer(t, b, fake.srv.URL)
		r := hs.Do(t, "POST", "/_matrix/client/v1/appservice/test-bridge/ping", asToken, map[string]any{"transaction_id": "p1"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if _, ok := r.JSON["duration_ms"].(float64); !ok {
			t.Fatalf("ping: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v1/appservice/other/ping", asToken, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	})
}

func TestAppServiceIsAskedAboutUnknownUsersAndAliases(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fake := newFakeAS(t)
		hs := bridgeServer(t, b, fake.srv.URL)
		_, aliceToken := hs.RegisterUser(t, "alice")
		var queried []string
		fake.onQuery = func(r *http.Request) (int, string) {
			path := r.URL.Path
			queried = append(queried, path)
			switch path {
			case "/_matrix/app/v1/users/@bridge_lazy:hearth.test":
				return asRegister(t, hs, asToken, "bridge_lazy", true).Status, "{}"
			case "/_matrix/app/v1/rooms/#bridge_portal:hearth.test":
				r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", asToken, map[string]any{"room_alias_name": "bridge_portal", "preset": "public_chat"})
				return r.Status, "{}"
			}
			return http.StatusNotFound, "{}"
		}
		// Before the services are asked, nothing exists.
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/profile/@bridge_lazy:hearth.test", aliceToken, nil), http.StatusOK, "")
		r := hs.Do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#bridge_portal:hearth.test"), aliceToken, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if id, _ := r.JSON["room_id"].(string); id == "" {
			t.Fatalf("alias made by the service: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#bridge_none:hearth.test"), aliceToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/profile/@bridge_none:hearth.test", aliceToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		// Outside the namespaces nobody is asked.
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#other:hearth.test"), aliceToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		if got := strings.Join(queried, " "); got != "/_matrix/app/v1/users/@bridge_lazy:hearth.test /_matrix/app/v1/rooms/#bridge_portal:hearth.test "+
			"/_matrix/app/v1/rooms/#bridge_none:hearth.test /_matrix/app/v1/users/@bridge_none:hearth.test" {
			t.Fatalf("queries: %s", got)
		}
	})
}

func TestRemoteServerResolvesAnAliasTheServiceMakesOnDemand(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fake := newFakeAS(t)
		path := writeRegistration(t, fake.srv.URL)
		servers := hearthtest.NewFederation(t, b, 2, func(i int, c *config.Config) {
			if i == 1 {
				c.AppServiceConfigFiles = []string{path}
			}
		})
		remote, bridged := servers[0], servers[1]
		alias := "#bridge_portal:" + bridged.Config.ServerName
		fake.onQuery = func(r *http.Request) (int, string) {
			if r.URL.Path != "/_matrix/app/v1/rooms/"+alias {
				return http.StatusNotFound, "{}"
			}
			resp := bridged.Do(t, "POST", "/_matrix/client/v3/createRoom", asToken, map[string]any{"room_alias_name": "bridge_portal", "preset": "public_chat"})
			return resp.Status, "{}"
		}
		_, token := remote.RegisterUser(t, "alice")
		r := remote.Do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(alias), token, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID, _ := r.JSON["room_id"].(string)
		hearthtest.Expect(t, remote.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(alias), token, map[string]any{}), http.StatusOK, "")
		if roomID == "" {
			t.Fatalf("resolved: %s", r.Body)
		}
	})
}

func TestAppServiceWithoutRateLimitIsNotLimited(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		path := writeRegistration(t, "")
		hs := hearthtest.NewServer(t, b, func(c *config.Config) {
			c.AppServiceConfigFiles = []string{path}
			c.RateLimits = "on"
			c.RateLimitMessagePerSecond, c.RateLimitMessageBurst = 0.001, 2
		})
		_, aliceToken := hs.RegisterUser(t, "alice")
		r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", asToken, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/join/"+roomID, aliceToken, map[string]any{}), http.StatusOK, "")
		send := func(token, txn string) hearthtest.Response {
			return hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/"+txn, token, map[string]any{"msgtype": "m.text", "body": txn})
		}
		for i := 0; i < 10; i++ {
			hearthtest.Expect(t, send(asToken, "as"+strconv.Itoa(i)), http.StatusOK, "")
		}
		limited := false
		for i := 0; i < 10 && !limited; i++ {
			limited = send(aliceToken, "alice"+strconv.Itoa(i)).Status == http.StatusTooManyRequests
		}
		if !limited {
			t.Fatal("the user was not rate limited, so the test proves nothing")
		}
	})
}

func TestThirdPartyLookupsGoToTheBridge(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fake := newFakeAS(t)
		fake.onQuery = func(r *http.Request) (int, string) {
			switch r.URL.Path + "?" + r.URL.RawQuery {
			case "/_matrix/app/v1/thirdparty/protocol/chatnet?":
				return http.StatusOK, `{"user_fields":["nick"],"location_fields":["channel"],"icon":"mxc://x/y","field_types":{},"instances":[{"desc":"Main","fields":{},"network_id":"main"}]}`
			case "/_matrix/app/v1/thirdparty/location/chatnet?channel=%23lobby":
				return http.StatusOK, `[{"alias":"#bridge_lobby:hearth.test","protocol":"chatnet","fields":{"channel":"#lobby"}}]`
			case "/_matrix/app/v1/thirdparty/user?userid=%40bridge_x%3Ahearth.test":
				return http.StatusOK, `[{"userid":"@bridge_x:hearth.test","protocol":"chatnet","fields":{"nick":"x"}}]`
			}
			return http.StatusNotFound, "{}"
		}
		hs := bridgeServer(t, b, fake.srv.URL)
		_, tok := hs.RegisterUser(t, "alice")
		r := hs.Do(t, "GET", "/_matrix/client/v3/thirdparty/protocols", tok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		chatnet, _ := r.JSON["chatnet"].(map[string]any)
		instances, _ := chatnet["instances"].([]any)
		if len(instances) != 1 || instances[0].(map[string]any)["instance_id"] != "test-bridge|main" {
			t.Fatalf("protocols: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/thirdparty/protocol/chatnet", tok, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/thirdparty/protocol/other", tok, nil), http.StatusNotFound, "M_NOT_FOUND")
		r = hs.Do(t, "GET", "/_matrix/client/v3/thirdparty/location/chatnet?channel=%23lobby", tok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !strings.Contains(string(r.Body), "#bridge_lobby:hearth.test") {
			t.Fatalf("location: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/thirdparty/location/chatnet?channel=%23none", tok, nil), http.StatusNotFound, "M_NOT_FOUND")
		r = hs.Do(t, "GET", "/_matrix/client/v3/thirdparty/user?userid=%40bridge_x%3Ahearth.test", tok, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !strings.Contains(string(r.Body), `"nick":"x"`) {
			t.Fatalf("user: %s", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/thirdparty/user", tok, nil), http.StatusBadRequest, "M_MISSING_PARAM")
	})
}

// TestAppServiceManagesDevices: an application service creates devices of
// its users with PUT /devices/{deviceId} (201, then 200), deletes them and
// replaces their cross-signing keys without UIA (Application Service API,
// Device management and Cross-signing, v1.17). Users still need UIA and
// cannot create devices.
func TestAppServiceManagesDevices(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := bridgeServer(t, b, "")
		_, aliceToken := hs.RegisterUser(t, "alice")
		hearthtest.Expect(t, asRegister(t, hs, asToken, "bridge_one", true), http.StatusOK, "")
		one := "@bridge_one:hearth.test"
		device := func(id string) string { return "/_matrix/client/v3/devices/" + id + as(one) }

		r := hs.Do(t, "PUT", device("BRIDGEDEV"), asToken, map[string]any{"display_name": "Bridge"})
		hearthtest.Expect(t, r, http.StatusCreated, "")
		hearthtest.Expect(t, hs.Do(t, "PUT", device("BRIDGEDEV"), asToken, map[string]any{"display_name": "Bridge 2"}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "PUT", device("SECOND"), asToken, map[string]any{}), http.StatusCreated, "")
		if r := hs.Do(t, "GET", device("BRIDGEDEV"), asToken, nil); r.Status != http.StatusOK || r.JSON["display_name"] != "Bridge 2" {
			t.Fatalf("created device: %d %s", r.Status, r.Body)
		}
		if r := hs.Do(t, "GET", "/_matrix/client/v3/account/whoami"+as(one)+"&device_id=BRIDGEDEV", asToken, nil); r.JSON["device_id"] != "BRIDGEDEV" {
			t.Fatalf("acting as the created device: %s", r.Body)
		}
		// A user cannot create a device this way.
		hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/devices/NEWDEV", aliceToken, map[string]any{"display_name": "x"}), http.StatusNotFound, "M_NOT_FOUND")

		// Replacing cross-signing keys needs no UIA from the service.
		for i := 0; i < 2; i++ {
			pub, _, err := ed25519.GenerateKey(nil)
			if err != nil {
				t.Fatal(err)
			}
			k := base64.RawStdEncoding.EncodeToString(pub)
			body := map[string]any{"master_key": map[string]any{"user_id": one, "usage": []string{"master"}, "keys": map[string]any{"ed25519:" + k: k}}}
			hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload"+as(one), asToken, body), http.StatusOK, "")
		}

		// Deleting needs no UIA from the service; a user is asked for it.
		hearthtest.Expect(t, hs.Do(t, "DELETE", device("BRIDGEDEV"), asToken, map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", device("BRIDGEDEV"), asToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/delete_devices"+as(one), asToken, map[string]any{"devices": []string{"SECOND"}}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", device("SECOND"), asToken, nil), http.StatusNotFound, "M_NOT_FOUND")
		r = hs.Do(t, "GET", "/_matrix/client/v3/devices", aliceToken, nil)
		devs, _ := r.JSON["devices"].([]any)
		if len(devs) != 1 {
			t.Fatalf("alice's devices: %s", r.Body)
		}
		aliceDevice := devs[0].(map[string]any)["device_id"].(string)
		if r := hs.Do(t, "DELETE", "/_matrix/client/v3/devices/"+aliceDevice, aliceToken, map[string]any{}); r.Status != http.StatusUnauthorized || r.JSON["flows"] == nil {
			t.Fatalf("a user's delete without UIA: %d %s", r.Status, r.Body)
		}
	})
}

// ephemeral is the accepted ephemeral data in delivery order.
func (f *fakeAS) ephemeral() []map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []map[string]any
	for _, txn := range f.order {
		for _, raw := range f.eph[txn] {
			var ev map[string]any
			_ = json.Unmarshal(raw, &ev)
			out = append(out, ev)
		}
	}
	return out
}

// TestAppServiceReceivesEphemeral: with receive_ephemeral (v1.13) the
// service gets, in the ephemeral array of its transactions, the typing,
// receipts (with room_id) and presence that concern it, in order: of
// rooms one of its users is in, private receipts only of its own users,
// presence of users sharing a room with its users or in its namespaces.
// A failed transaction is resent with the same ephemeral data. Without
// receive_ephemeral (the unstable MSC2409 key alone), none is sent.
func TestAppServiceReceivesEphemeral(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fake := newFakeAS(t)
		hs := bridgeServer(t, b, fake.srv.URL, "receive_ephemeral: true")
		alice, aliceToken := hs.RegisterUser(t, "alice")
		bob, bobToken := hs.RegisterUser(t, "bob")
		const one, two = "@bridge_one:hearth.test", "@bridge_two:hearth.test"
		hearthtest.Expect(t, asRegister(t, hs, asToken, "bridge_one", true), http.StatusOK, "")
		hearthtest.Expect(t, asRegister(t, hs, asToken, "bridge_two", true), http.StatusOK, "")
		do := func(method, path, token string, body any) {
			t.Helper()
			hearthtest.Expect(t, hs.Do(t, method, path, token, body), http.StatusOK, "")
		}
		newRoom := func(token string) string {
			r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", token, map[string]any{"preset": "public_chat"})
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r.JSON["room_id"].(string)
		}
		send := func(roomID, token, body string) string {
			r := hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/"+url.PathEscape(body), token, map[string]any{"msgtype": "m.text", "body": body})
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r.JSON["event_id"].(string)
		}
		receipt := func(roomID, typ, eventID, token, query string) {
			do("POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/"+typ+"/"+url.PathEscape(eventID)+query, token, map[string]any{})
		}
		bridged, private := newRoom(aliceToken), newRoom(bobToken)
		do("POST", "/_matrix/client/v3/rooms/"+bridged+"/join"+as(one), asToken, map[string]any{})
		e1, e2 := send(bridged, aliceToken, "e1"), send(bridged, aliceToken, "e2")
		p1 := send(private, bobToken, "p1")
		waitFor(t, "the messages", func() bool { return len(fake.bodies()) == 2 })

		summary := func() []string {
			var out []string
			for _, ev := range fake.ephemeral() {
				c, _ := ev["content"].(map[string]any)
				switch ev["type"] {
				case "m.typing":
					out = append(out, fmt.Sprintf("typing %s %v", ev["room_id"], c["user_ids"]))
				case "m.receipt":
					for evID, byType := range c {
						for typ, users := range byType.(map[string]any) {
							for u := range users.(map[string]any) {
								out = append(out, fmt.Sprintf("receipt %s %s %s %s", ev["room_id"], evID, typ, u))
							}
						}
					}
				case "m.presence":
					out = append(out, fmt.Sprintf("presence %s %v %v", ev["sender"], c["presence"], c["status_msg"]))
				default:
					out = append(out, fmt.Sprintf("unexpected %v", ev))
				}
			}
			return out
		}
		has := func(want string) bool {
			for _, s := range summary() {
				if s == want {
					return true
				}
			}
			return false
		}
		// What does not concern the service comes first, so that what
		// arrives after it shows it was left out.
		do("PUT", "/_matrix/client/v3/rooms/"+private+"/typing/"+url.PathEscape(bob), bobToken, map[string]any{"typing": true, "timeout": 30000})
		receipt(private, "m.read", p1, bobToken, "")
		receipt(bridged, "m.read.private", e1, aliceToken, "")
		do("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(bob)+"/status", bobToken, map[string]any{"presence": "unavailable"})
		// What does.
		do("PUT", "/_matrix/client/v3/rooms/"+bridged+"/typing/"+url.PathEscape(alice), aliceToken, map[string]any{"typing": true, "timeout": 30000})
		receipt(bridged, "m.read", e1, aliceToken, "")
		// A receipt replaces the user's older one (sync shows the newest
		// too): e1's is awaited before e2's replaces it.
		waitFor(t, "the first receipt", func() bool {
			return has("receipt " + bridged + " " + e1 + " m.read " + alice)
		})
		receipt(bridged, "m.read", e2, aliceToken, "")
		receipt(bridged, "m.read.private", e2, asToken, as(one))
		do("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice)+"/status", aliceToken, map[string]any{"presence": "online", "status_msg": "here"})
		do("PUT", "/_matrix/client/v3/presence/"+url.PathEscape(two)+"/status"+as(two), asToken, map[string]any{"presence": "online"})

		want := []string{
			"typing " + bridged + " [" + alice + "]",
			"receipt " + bridged + " " + e1 + " m.read " + alice,
			"receipt " + bridged + " " + e2 + " m.read " + alice,
			"receipt " + bridged + " " + e2 + " m.read.private " + one,
			"presence " + alice + " online here",
			"presence " + two + " online <nil>",
		}
		waitFor(t, "the ephemeral data", func() bool { return has(want[len(want)-1]) && has(want[3]) })
		got := summary()
		for _, w := range want {
			if !has(w) {
				t.Errorf("missing %q in %q", w, got)
			}
		}
		for _, s := range got {
			if strings.Contains(s, private) || strings.Contains(s, bob) || strings.Contains(s, "m.read.private "+alice) {
				t.Errorf("pushed what does not concern the service: %q", s)
			}
		}
		// Receipts in stream order.
		idx := func(w string) int {
			for i, s := range got {
				if s == w {
					return i
				}
			}
			return -1
		}
		if !(idx(want[1]) < idx(want[2]) && idx(want[2]) < idx(want[3])) {
			t.Errorf("receipts out of order: %q", got)
		}

		// A failing service gets the same ephemeral data again.
		e3 := send(bridged, aliceToken, "e3")
		waitFor(t, "e3", func() bool { return len(fake.bodies()) == 3 })
		fake.setFailing(true)
		fake.mu.Lock()
		before := len(fake.attempts)
		fake.mu.Unlock()
		receipt(bridged, "m.read", e3, aliceToken, "")
		waitFor(t, "retries", func() bool {
			fake.mu.Lock()
			defer fake.mu.Unlock()
			return len(fake.attempts) >= before+3
		})
		fake.mu.Lock()
		n := len(fake.attempts)
		same := fake.attempts[n-1] == fake.attempts[n-2] && fake.raw[n-1] == fake.raw[n-2] && strings.Contains(fake.raw[n-1], e3)
		last := fake.raw[n-1]
		fake.mu.Unlock()
		if !same {
			t.Fatalf("the failed transaction was not resent unchanged: %s", last)
		}
		fake.setFailing(false)
		waitFor(t, "the receipt after the failure", func() bool { return has("receipt " + bridged + " " + e3 + " m.read " + alice) })
		count := 0
		for _, s := range summary() {
			if s == "receipt "+bridged+" "+e3+" m.read "+alice {
				count++
			}
		}
		if count != 1 {
			t.Errorf("the receipt was delivered %d times", count)
		}

		// Without receive_ephemeral: nothing ephemeral.
		fake2 := newFakeAS(t)
		hs2 := bridgeServer(t, b, fake2.srv.URL)
		_, carolToken := hs2.RegisterUser(t, "carol")
		hearthtest.Expect(t, asRegister(t, hs2, asToken, "bridge_one", true), http.StatusOK, "")
		r := hs2.Do(t, "POST", "/_matrix/client/v3/createRoom", carolToken, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		room2 := r.JSON["room_id"].(string)
		hearthtest.Expect(t, hs2.Do(t, "POST", "/_matrix/client/v3/rooms/"+room2+"/join"+as(one), asToken, map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, hs2.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room2+"/typing/"+url.PathEscape("@carol:hearth.test"), carolToken, map[string]any{"typing": true, "timeout": 30000}), http.StatusOK, "")
		r = hs2.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room2+"/send/m.room.message/x", carolToken, map[string]any{"msgtype": "m.text", "body": "after typing"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		waitFor(t, "the message", func() bool { return len(fake2.bodies()) == 1 })
		fake2.mu.Lock()
		for _, body := range fake2.raw {
			if strings.Contains(body, `"ephemeral"`) {
				t.Errorf("ephemeral data without receive_ephemeral: %s", body)
			}
		}
		fake2.mu.Unlock()
	})
}
