package homeserver_test

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/syncstream"
)

// Several processes sharing one PostgreSQL database: only PostgreSQL is
// shared by processes (SQLite is one process by nature), so these tests
// run on the PostgreSQL backend alone, and are skipped (not passed) without
// it so the test count stays honest.
func onPostgres(t *testing.T, fn func(t *testing.T)) {
	t.Helper()
	if os.Getenv("HEARTH_TEST_POSTGRES") == "" {
		t.Skip("several processes share only a PostgreSQL database; set HEARTH_TEST_POSTGRES to run this test")
	}
	t.Run(string(hearthtest.Postgres), fn)
}

type user struct {
	hs    *hearthtest.Server
	id    string
	token string
}

func (u user) on(hs *hearthtest.Server) user { return user{hs, u.id, u.token} }

func (u user) do(t *testing.T, method, path string, body any) hearthtest.Response {
	t.Helper()
	return u.hs.Do(t, method, path, u.token, body)
}

func (u user) send(t *testing.T, roomID, body string) string {
	t.Helper()
	r := u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+fmt.Sprint(time.Now().UnixNano()),
		map[string]any{"msgtype": "m.text", "body": body})
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["event_id"].(string)
}

// caughtUp syncs until nothing new is left and returns the next token.
func (u user) caughtUp(t *testing.T) string {
	t.Helper()
	r := u.do(t, "GET", "/_matrix/client/v3/sync", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	since := r.JSON["next_batch"].(string)
	for range 20 {
		r = u.do(t, "GET", "/_matrix/client/v3/sync?timeout=300&since="+url.QueryEscape(since), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		next := r.JSON["next_batch"].(string)
		if next == since {
			return since
		}
		since = next
	}
	t.Fatalf("%s's sync never settled", u.id)
	return ""
}

// longPoll starts a /sync long-poll (30 s timeout) from since, runs act
// once the request waits, and returns the response with how long it took.
func (u user) longPoll(t *testing.T, since string, act func()) (hearthtest.Response, time.Duration) {
	t.Helper()
	type result struct {
		r hearthtest.Response
		d time.Duration
	}
	done := make(chan result, 1)
	start := time.Now()
	go func() {
		r := hearthtest.Do(t, http.DefaultClient, "GET", u.hs.URL+"/_matrix/client/v3/sync?timeout=30000&since="+url.QueryEscape(since), u.token, nil)
		done <- result{r, time.Since(start)}
	}()
	time.Sleep(300 * time.Millisecond)
	act()
	select {
	case res := <-done:
		hearthtest.Expect(t, res.r, http.StatusOK, "")
		return res.r, res.d
	case <-time.After(40 * time.Second):
		t.Fatal("sync never returned")
		return hearthtest.Response{}, 0
	}
}

// twoProcesses starts two processes on one database, alice (registered on
// the first) and bob (on the second) in a room alice made.
func twoProcesses(t *testing.T, modify func(*config.Config)) (p1, p2 *hearthtest.Server, alice, bob user, roomID string) {
	p1 = hearthtest.NewServer(t, hearthtest.Postgres, modify)
	p2 = p1.AnotherProcess(t)
	aliceID, aliceTok := p1.RegisterUser(t, "alice")
	bobID, bobTok := p2.RegisterUser(t, "bob")
	alice, bob = user{p1, aliceID, aliceTok}, user{p2, bobID, bobTok}
	r := alice.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
	hearthtest.Expect(t, r, http.StatusOK, "")
	roomID = r.JSON["room_id"].(string)
	r = bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
	hearthtest.Expect(t, r, http.StatusOK, "")
	return p1, p2, alice, bob, roomID
}

// A change made through one process wakes the syncs waiting on another at
// once, not at their timeout: a room message, account data (a change for
// users), a to-device message (for one device) and typing.
func TestSyncWakesAcrossProcesses(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		_, _, alice, bob, roomID := twoProcesses(t, nil)
		since := alice.caughtUp(t)

		r, took := alice.longPoll(t, since, func() { bob.send(t, roomID, "from the other process") })
		if took > 5*time.Second || !strings.Contains(string(r.Body), "from the other process") {
			t.Fatalf("message: sync returned after %v: %s", took, r.Body)
		}
		since = alice.caughtUp(t)

		r, took = alice.longPoll(t, since, func() {
			r := alice.on(bob.hs).do(t, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.id)+"/account_data/org.example.x", map[string]any{"n": 1})
			hearthtest.Expect(t, r, http.StatusOK, "")
		})
		if took > 5*time.Second || !strings.Contains(string(r.Body), "org.example.x") {
			t.Fatalf("account data: sync returned after %v: %s", took, r.Body)
		}
		since = alice.caughtUp(t)

		r = alice.do(t, "GET", "/_matrix/client/v3/account/whoami", nil)
		device := r.JSON["device_id"].(string)
		r, took = alice.longPoll(t, since, func() {
			r := bob.do(t, "PUT", "/_matrix/client/v3/sendToDevice/org.example.ping/1", map[string]any{
				"messages": map[string]any{alice.id: map[string]any{device: map[string]any{"hello": "there"}}}})
			hearthtest.Expect(t, r, http.StatusOK, "")
		})
		if took > 5*time.Second || !strings.Contains(string(r.Body), "org.example.ping") {
			t.Fatalf("to-device: sync returned after %v: %s", took, r.Body)
		}
		since = alice.caughtUp(t)

		// Typing is relayed too: each process keeps who is typing.
		r, took = alice.longPoll(t, since, func() {
			r := bob.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/typing/"+url.PathEscape(bob.id), map[string]any{"typing": true, "timeout": 20000})
			hearthtest.Expect(t, r, http.StatusOK, "")
		})
		if took > 5*time.Second || !strings.Contains(string(r.Body), `"m.typing"`) || !strings.Contains(string(r.Body), bob.id) {
			t.Fatalf("typing: sync returned after %v: %s", took, r.Body)
		}
	})
}

// A token logged out through one process is refused by another at once,
// although the other had it in its token cache.
func TestLogoutAcrossProcesses(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		p1, p2, alice, _, _ := twoProcesses(t, nil)
		r := p1.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		second := user{p2, alice.id, r.JSON["access_token"].(string)}
		hearthtest.Expect(t, second.do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusOK, "") // cached on p2
		hearthtest.Expect(t, second.on(p1).do(t, "POST", "/_matrix/client/v3/logout", map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, second.do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		// The first device is untouched on both.
		hearthtest.Expect(t, alice.on(p2).do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusOK, "")

		// logout/all through p2 ends alice's first token on p1 as well.
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusOK, "") // cached on p1
		hearthtest.Expect(t, alice.on(p2).do(t, "POST", "/_matrix/client/v3/logout/all", map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
}

// An account locked through one process is refused by another at once
// (401 M_USER_LOCKED), although the other had its token cached, and
// unlocking it works the same way.
func TestLockAcrossProcesses(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		p1, p2, alice, _, _ := twoProcesses(t, nil)
		login, err := p1.Accounts.Register(t.Context(), accounts.NewUser{Localpart: "admin", Password: "password", Admin: true})
		if err != nil {
			t.Fatal(err)
		}
		admin := user{p1, login.UserID, login.AccessToken}
		lock := "/_matrix/client/v1/admin/lock/" + url.PathEscape(alice.id)
		const whoami = "/_matrix/client/v3/account/whoami"
		hearthtest.Expect(t, alice.on(p2).do(t, "GET", whoami, nil), http.StatusOK, "") // cached on p2
		hearthtest.Expect(t, admin.do(t, "PUT", lock, map[string]any{"locked": true}), http.StatusOK, "")
		hearthtest.Expect(t, alice.on(p2).do(t, "GET", whoami, nil), http.StatusUnauthorized, "M_USER_LOCKED")
		hearthtest.Expect(t, admin.do(t, "PUT", lock, map[string]any{"locked": false}), http.StatusOK, "")
		hearthtest.Expect(t, alice.on(p2).do(t, "GET", whoami, nil), http.StatusOK, "")
	})
}

// An account suspended through one process is refused the actions a
// suspended account may not take by another at once (403
// M_USER_SUSPENDED), although the other had its token cached, and
// unsuspending it works the same way.
func TestSuspendAcrossProcesses(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		p1, p2, alice, _, roomID := twoProcesses(t, nil)
		login, err := p1.Accounts.Register(t.Context(), accounts.NewUser{Localpart: "admin", Password: "password", Admin: true})
		if err != nil {
			t.Fatal(err)
		}
		admin := user{p1, login.UserID, login.AccessToken}
		suspend := "/_matrix/client/v1/admin/suspend/" + url.PathEscape(alice.id)
		const whoami = "/_matrix/client/v3/account/whoami"
		hearthtest.Expect(t, alice.on(p2).do(t, "GET", whoami, nil), http.StatusOK, "") // cached on p2
		hearthtest.Expect(t, admin.do(t, "PUT", suspend, map[string]any{"suspended": true}), http.StatusOK, "")
		send := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/send/m.room.message/"
		hearthtest.Expect(t, alice.on(p2).do(t, "PUT", send+"t1", map[string]any{"msgtype": "m.text", "body": "no"}), http.StatusForbidden, "M_USER_SUSPENDED")
		hearthtest.Expect(t, alice.on(p2).do(t, "GET", whoami, nil), http.StatusOK, "")
		hearthtest.Expect(t, admin.do(t, "PUT", suspend, map[string]any{"suspended": false}), http.StatusOK, "")
		hearthtest.Expect(t, alice.on(p2).do(t, "PUT", send+"t2", map[string]any{"msgtype": "m.text", "body": "yes"}), http.StatusOK, "")
	})
}

// A shadow-ban and a message rate limit override set through one process
// apply at once to sends through another, although the other had the
// sender's token (which carries both) cached; lifting them works the
// same way.
func TestSenderModerationAcrossProcesses(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		p1, _, alice, bob, roomID := twoProcesses(t, func(c *config.Config) {
			c.RateLimits = "on"
			c.RateLimitMessagePerSecond, c.RateLimitMessageBurst = 0.001, 3
		})
		login, err := p1.Accounts.Register(t.Context(), accounts.NewUser{Localpart: "admin", Password: "password", Admin: true})
		if err != nil {
			t.Fatal(err)
		}
		admin := user{p1, login.UserID, login.AccessToken}
		send := func(u user, txn string) hearthtest.Response {
			return u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn,
				map[string]any{"msgtype": "m.text", "body": txn})
		}
		visible := func(eventID string) bool {
			return alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(eventID), nil).Status == http.StatusOK
		}
		bobAdmin := "/_synapse/admin/v1/users/" + url.PathEscape(bob.id)

		r := send(bob, "before") // bob's token is cached on p2
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !visible(r.JSON["event_id"].(string)) {
			t.Fatal("a message before the shadow-ban is not in the room")
		}
		hearthtest.Expect(t, admin.do(t, "POST", bobAdmin+"/shadow_ban", map[string]any{}), http.StatusOK, "")
		r = send(bob, "hidden")
		hearthtest.Expect(t, r, http.StatusOK, "")
		if visible(r.JSON["event_id"].(string)) {
			t.Fatal("a shadow-banned user's message sent through the other process reached the room")
		}
		hearthtest.Expect(t, admin.do(t, "DELETE", bobAdmin+"/shadow_ban", nil), http.StatusOK, "")
		r = send(bob, "seen")
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !visible(r.JSON["event_id"].(string)) {
			t.Fatal("a message after the shadow-ban was lifted is not in the room")
		}

		// The burst of 3 is spent; an override of 0/0 lifts the limit, and
		// removing it brings the limit back, both through p1.
		hearthtest.Expect(t, send(bob, "limited"), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		hearthtest.Expect(t, admin.do(t, "POST", bobAdmin+"/override_ratelimit", map[string]any{}), http.StatusOK, "")
		for i := range 4 {
			hearthtest.Expect(t, send(bob, fmt.Sprint("free", i)), http.StatusOK, "")
		}
		hearthtest.Expect(t, admin.do(t, "DELETE", bobAdmin+"/override_ratelimit", nil), http.StatusOK, "")
		hearthtest.Expect(t, send(bob, "limited-again"), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	})
}

// A send retried through another process (a balancer without sticky
// sessions) returns the first event, also when both attempts race: one
// event per transaction ID.
func TestTxnIDAcrossProcesses(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		p1, p2, alice, _, roomID := twoProcesses(t, nil)
		send := func(hs *hearthtest.Server, txn string) hearthtest.Response {
			return alice.on(hs).do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn,
				map[string]any{"msgtype": "m.text", "body": txn})
		}
		first := send(p1, "retried")
		hearthtest.Expect(t, first, http.StatusOK, "")
		again := send(p2, "retried")
		hearthtest.Expect(t, again, http.StatusOK, "")
		if first.JSON["event_id"] != again.JSON["event_id"] {
			t.Fatalf("a retry through the other process made a second event: %v, %v", first.JSON, again.JSON)
		}
		const races = 10
		var wg sync.WaitGroup
		ids := make([][2]any, races)
		for i := range races {
			for j, hs := range []*hearthtest.Server{p1, p2} {
				wg.Go(func() {
					r := send(hs, fmt.Sprint("race", i))
					if r.Status == http.StatusOK {
						ids[i][j] = r.JSON["event_id"]
					}
				})
			}
		}
		wg.Wait()
		for i, pair := range ids {
			if pair[0] == nil || pair[0] != pair[1] {
				t.Fatalf("race %d: the two processes answered %v", i, pair)
			}
		}
		r := alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=100", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		n := 0
		for _, ev := range r.JSON["chunk"].([]any) {
			if ev.(map[string]any)["type"] == "m.room.message" {
				n++
			}
		}
		if n != races+1 {
			t.Fatalf("%d messages, want %d (one per transaction ID)", n, races+1)
		}
	})
}

// A message redacted through one process reads redacted through another
// that had it in its event cache.
func TestRedactionAcrossProcesses(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		_, _, alice, bob, roomID := twoProcesses(t, nil)
		eventID := alice.send(t, roomID, "regrettable")
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/event/" + url.PathEscape(eventID)
		r := bob.do(t, "GET", path, nil) // now in p2's event cache
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !strings.Contains(string(r.Body), "regrettable") {
			t.Fatalf("event before redaction: %s", r.Body)
		}
		since := bob.caughtUp(t)
		r, _ = bob.longPoll(t, since, func() {
			r := alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape(eventID)+"/1", map[string]any{})
			hearthtest.Expect(t, r, http.StatusOK, "")
		})
		if !strings.Contains(string(r.Body), "m.room.redaction") {
			t.Fatalf("bob's sync did not bring the redaction: %s", r.Body)
		}
		r = bob.do(t, "GET", path, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if strings.Contains(string(r.Body), "regrettable") {
			t.Fatalf("event still unredacted on the other process: %s", r.Body)
		}
	})
}

// transactionCounter records the messages of the transactions a server
// receives, by body.
type transactionCounter struct {
	mu     sync.Mutex
	bodies map[string]int
}

func (c *transactionCounter) wrap(fed, _ http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/") {
			b, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(b))
			var txn struct {
				PDUs []struct {
					Type    string `json:"type"`
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				} `json:"pdus"`
			}
			_ = json.Unmarshal(b, &txn)
			c.mu.Lock()
			for _, p := range txn.PDUs {
				if p.Type == "m.room.message" {
					c.bodies[p.Content.Body]++
				}
			}
			c.mu.Unlock()
		}
		fed.ServeHTTP(w, r)
	})
}

func (c *transactionCounter) count(body string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bodies[body]
}

// Of two processes of one server, only the leader sends to other servers:
// every message reaches the remote server once, whichever process it was
// sent through. When the leader stops, the other takes over and delivers
// what was queued meanwhile.
func TestOneProcessSendsFederation(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		fed := hearthtest.NewFederation(t, hearthtest.Postgres, 2, nil)
		p1, remote := fed[0], fed[1]
		p2 := p1.AnotherProcess(t)
		counter := &transactionCounter{bodies: map[string]int{}}
		remote.WrapFederation(counter.wrap)

		aliceID, aliceTok := p1.RegisterUser(t, "alice")
		alice := user{p1, aliceID, aliceTok}
		bobID, bobTok := remote.RegisterUser(t, "bob")
		bob := user{remote, bobID, bobTok}
		r := alice.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		r = bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(p1.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")

		var bodies []string
		for i := range 6 {
			body := fmt.Sprintf("message %d", i)
			bodies = append(bodies, body)
			if i%2 == 0 {
				alice.send(t, roomID, body)
			} else {
				alice.on(p2).send(t, roomID, body)
			}
		}
		waitForBodies(t, bob, roomID, bodies)
		time.Sleep(time.Second) // time for a second delivery, if there were one
		for _, body := range bodies {
			if n := counter.count(body); n != 1 {
				t.Fatalf("%q reached the remote server %d times", body, n)
			}
		}

		// The leader stops: the other process takes over within a few
		// seconds and sends what was queued while no one led.
		p1.Stop(t)
		alice.on(p2).send(t, roomID, "after the leader stopped")
		waitForBodies(t, bob, roomID, []string{"after the leader stopped"})
		if n := counter.count("after the leader stopped"); n != 1 {
			t.Fatalf("the message queued after the leader stopped reached the remote server %d times", n)
		}

		// The new leader's lock connection breaks: it stops sending, then
		// takes the lock again and sends, once. The message is sent once
		// the lock is held again: one sent while the process still
		// believed it led may be in flight when its senders stop, and be
		// sent again by the next leader (at least once; the receiver
		// drops the repeat by event ID).
		before := leaderPIDs(t, p2)
		if len(before) != 1 {
			t.Fatalf("%d sessions hold the leadership lock, want 1", len(before))
		}
		if n := terminate(t, p2, leaderSession); n != 1 {
			t.Fatalf("ended %d leader sessions, want 1", n)
		}
		deadline := time.Now().Add(15 * time.Second)
		for {
			now := leaderPIDs(t, p2)
			if len(now) == 1 && now[0] != before[0] {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no new leader 15 s after the old one's session ended (sessions %v, before %v)", now, before)
			}
			time.Sleep(50 * time.Millisecond)
		}
		alice.on(p2).send(t, roomID, "after a new election")
		waitForBodies(t, bob, roomID, []string{"after a new election"})
		if n := counter.count("after a new election"); n != 1 {
			t.Fatalf("the message sent after a new election reached the remote server %d times", n)
		}
	})
}

// waitForBodies syncs u until the room's timeline brought every body.
func waitForBodies(t *testing.T, u user, roomID string, bodies []string) {
	t.Helper()
	seen := map[string]bool{}
	since := ""
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		path := "/_matrix/client/v3/sync?timeout=2000"
		if since != "" {
			path += "&since=" + url.QueryEscape(since)
		}
		r := u.do(t, "GET", path, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		since, _ = r.JSON["next_batch"].(string)
		for _, b := range bodies {
			if strings.Contains(string(r.Body), `"body":"`+b+`"`) {
				seen[b] = true
			}
		}
		if len(seen) == len(bodies) {
			return
		}
	}
	t.Fatalf("%s saw only %v of %v in %s", u.id, seen, bodies, roomID)
}

// gateway is a push gateway that counts the notifications it receives,
// by event ID.
type gateway struct {
	mu     sync.Mutex
	events map[string]int
}

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Notification struct {
			EventID string `json:"event_id"`
		} `json:"notification"`
	}
	_ = json.NewDecoder(r.Body).Decode(&body)
	g.mu.Lock()
	g.events[body.Notification.EventID]++
	g.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"rejected":[]}`))
}

func (g *gateway) count(eventID string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.events[eventID]
}

// Pushes are delivered by one process, once, whichever process evaluated
// the event; push rules changed through one process apply at once to the
// events another evaluates.
func TestOneProcessDeliversPushes(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		gw := &gateway{events: map[string]int{}}
		srv := httptest.NewServer(gw)
		t.Cleanup(srv.Close)
		_, p2, alice, bob, roomID := twoProcesses(t, func(c *config.Config) {
			c.PushGatewayAllowCIDRs = []string{"127.0.0.0/8"}
			c.PushHoldSeconds = 0
		})
		r := alice.do(t, "POST", "/_matrix/client/v3/pushers/set", map[string]any{
			"kind": "http", "app_id": "org.example.app", "pushkey": "phone", "app_display_name": "App",
			"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": srv.URL + "/_matrix/push/v1/notify"}})
		hearthtest.Expect(t, r, http.StatusOK, "")

		ids := []string{bob.send(t, roomID, "evaluated by the second process"), bob.on(alice.hs).send(t, roomID, "evaluated by the first")}
		deadline := time.Now().Add(10 * time.Second)
		for (gw.count(ids[0]) == 0 || gw.count(ids[1]) == 0) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Second) // time for a second delivery, if there were one
		for _, id := range ids {
			if n := gw.count(id); n != 1 {
				t.Fatalf("event %s pushed %d times", id, n)
			}
		}

		// Alice mutes the room through the first process; the second, which
		// cached her rules when it evaluated the first message, hears of it.
		since := alice.on(p2).caughtUp(t)
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape(roomID),
			map[string]any{"actions": []any{}}), http.StatusOK, "")
		for i := 0; i < 5 && !strings.Contains(string(r.Body), `"m.push_rules"`); i++ {
			r = alice.on(p2).do(t, "GET", "/_matrix/client/v3/sync?timeout=10000&since="+url.QueryEscape(since), nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			since = r.JSON["next_batch"].(string)
		}
		if !strings.Contains(string(r.Body), `"m.push_rules"`) {
			t.Fatalf("the second process never synced the new push rules: %s", r.Body)
		}
		muted := bob.send(t, roomID, "muted")
		after := bob.on(alice.hs).send(t, roomID, "also muted")
		time.Sleep(1500 * time.Millisecond)
		if gw.count(muted) != 0 || gw.count(after) != 0 {
			t.Fatalf("a muted room's messages were pushed: %d, %d", gw.count(muted), gw.count(after))
		}

		// Unmuted again, the leader stops: the second process delivers, also
		// after its own lock connection breaks and it leads again.
		hearthtest.Expect(t, alice.do(t, "DELETE", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape(roomID), nil),
			http.StatusOK, "")
		alice.hs.Stop(t)
		delivered := func(id string) {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for gw.count(id) == 0 && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(time.Second)
			if n := gw.count(id); n != 1 {
				t.Fatalf("event %s pushed %d times", id, n)
			}
		}
		delivered(bob.send(t, roomID, "after the leader stopped"))
		if n := terminate(t, p2, leaderSession); n != 1 {
			t.Fatalf("ended %d leader sessions, want 1", n)
		}
		delivered(bob.send(t, roomID, "after a new election"))
	})
}

// clusterDB opens hs's database and returns the arguments the session
// conditions below take: $1 the channel, $2 the lock key of hs's
// processes. The caller closes the database.
func clusterDB(t *testing.T, hs *hearthtest.Server) (*sql.DB, []any) {
	t.Helper()
	db, err := sql.Open("pgx", hs.Config.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	var key int32
	if err := db.QueryRow(`SELECT hashtext(current_database() || '/' || current_schema())`).Scan(&key); err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db, []any{fmt.Sprintf("hearth_%08x", uint32(key)), int64(uint32(key))}
}

// terminate ends the PostgreSQL sessions of hs's database that match
// where (a condition on pg_stat_activity's pid, see clusterDB), as a
// network failure or an administrator would, and returns how many it
// ended.
func terminate(t *testing.T, hs *hearthtest.Server, where string) int {
	t.Helper()
	db, args := clusterDB(t, hs)
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE `+where, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// leaderPIDs are the PostgreSQL sessions holding hs's leadership lock.
func leaderPIDs(t *testing.T, hs *hearthtest.Server) []int {
	t.Helper()
	db, args := clusterDB(t, hs)
	defer db.Close()
	rows, err := db.Query(`SELECT pid FROM pg_stat_activity WHERE `+leaderSession, args...)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var pids []int
	for rows.Next() {
		var pid int
		if err := rows.Scan(&pid); err != nil {
			t.Fatal(err)
		}
		pids = append(pids, pid)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return pids
}

// listeners selects the sessions that listen for the processes' news.
const listeners = `query = 'LISTEN "' || $1::text || '"' AND $2::bigint IS NOT NULL`

// leaderSession selects the session holding the leadership lock.
const leaderSession = `pid IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = 7460130 AND objsubid = 2
	AND objid = $2::bigint::oid) AND $1::text IS NOT NULL`

// When the connections that hear other processes break, they are made
// again (and whatever was missed meanwhile wakes the syncs anyway).
func TestRelayReconnects(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		p1, _, alice, bob, roomID := twoProcesses(t, nil)
		since := bob.caughtUp(t)
		r, took := bob.longPoll(t, since, func() {
			if n := terminate(t, p1, listeners); n != 2 {
				t.Fatalf("ended %d listening sessions, want 2", n)
			}
			alice.send(t, roomID, "while nobody listened")
		})
		if took > 5*time.Second || !strings.Contains(string(r.Body), "while nobody listened") {
			t.Fatalf("sync returned after %v: %s", took, r.Body)
		}
		time.Sleep(500 * time.Millisecond)
		since = bob.caughtUp(t)
		r, took = bob.longPoll(t, since, func() { alice.send(t, roomID, "after reconnecting") })
		if took > 5*time.Second || !strings.Contains(string(r.Body), "after reconnecting") {
			t.Fatalf("sync returned after %v: %s", took, r.Body)
		}
	})
}

// bridge is an application service that counts the transactions and the
// events it is sent.
type bridge struct {
	mu     sync.Mutex
	txns   map[string]int // transaction ID → times received
	events map[string]int // event ID → times received in distinct transactions
}

func (b *bridge) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer hs_token" {
		w.WriteHeader(http.StatusForbidden)
		return
	}
	var txn struct {
		Events []struct {
			EventID string `json:"event_id"`
		} `json:"events"`
	}
	if err := json.NewDecoder(r.Body).Decode(&txn); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	id := r.URL.Path
	b.txns[id]++
	if b.txns[id] == 1 {
		for _, ev := range txn.Events {
			b.events[ev.EventID]++
		}
	}
	_, _ = w.Write([]byte("{}"))
}

func (b *bridge) count(eventID string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.events[eventID]
}

// Bridges are sent events by one process, the leader, whichever process
// committed them, each event once; when the leader stops, the next one
// goes on from where it was.
func TestOneProcessPushesToBridges(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		br := &bridge{txns: map[string]int{}, events: map[string]int{}}
		srv := httptest.NewServer(br)
		t.Cleanup(srv.Close)
		reg := filepath.Join(t.TempDir(), "bridge.yaml")
		err := os.WriteFile(reg, []byte(`id: bridge
url: `+srv.URL+`
as_token: as_token
hs_token: hs_token
sender_localpart: bridgebot
namespaces:
  users: []
  aliases: []
  rooms:
    - exclusive: false
      regex: '!.*'
`), 0o600)
		if err != nil {
			t.Fatal(err)
		}
		p1, _, alice, bob, roomID := twoProcesses(t, func(c *config.Config) { c.AppServiceConfigFiles = []string{reg} })
		wait := func(ids []string) {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				missing := false
				for _, id := range ids {
					missing = missing || br.count(id) == 0
				}
				if !missing {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			time.Sleep(time.Second) // time for a second delivery, if there were one
			for _, id := range ids {
				if n := br.count(id); n != 1 {
					t.Fatalf("event %s sent to the bridge %d times", id, n)
				}
			}
		}
		wait([]string{bob.send(t, roomID, "committed by the second process"), alice.send(t, roomID, "committed by the first"),
			bob.send(t, roomID, "the second again")})

		p1.Stop(t)
		wait([]string{bob.send(t, roomID, "after the leader stopped")})
		// The new leader's lock connection breaks: it stops sending, takes
		// the lock again and goes on.
		if n := terminate(t, bob.hs, leaderSession); n != 1 {
			t.Fatalf("ended %d leader sessions, want 1", n)
		}
		wait([]string{bob.send(t, roomID, "after a new election")})
		br.mu.Lock()
		defer br.mu.Unlock()
		for id, n := range br.txns {
			if n != 1 {
				t.Fatalf("transaction %s sent %d times", id, n)
			}
		}
	})
}

// syncPos is a /sync response's next_batch, parsed.
func syncPos(t *testing.T, r hearthtest.Response) syncstream.Position {
	t.Helper()
	hearthtest.Expect(t, r, http.StatusOK, "")
	pos, err := syncstream.ParseToken(r.JSON["next_batch"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return pos
}

// notBehind fails unless next is at or after since on every stream.
func notBehind(t *testing.T, where string, next, since syncstream.Position) {
	t.Helper()
	n, s := next, since
	if s.After(n) {
		t.Fatalf("%s: next_batch %s is behind since %s", where, n, s)
	}
}

// deliveries is what sync responses gave one user in one room: timeline
// event IDs, typing notifications and presence events of one sender.
type deliveries struct {
	events   map[string]int
	typing   int
	presence int
	sender   string
}

func (d *deliveries) add(t *testing.T, r hearthtest.Response, roomID string) {
	t.Helper()
	var body struct {
		Rooms struct {
			Join map[string]struct {
				Timeline struct {
					Events []struct {
						EventID string `json:"event_id"`
					} `json:"events"`
				} `json:"timeline"`
				Ephemeral struct {
					Events []struct {
						Type string `json:"type"`
					} `json:"events"`
				} `json:"ephemeral"`
			} `json:"join"`
		} `json:"rooms"`
		Presence struct {
			Events []struct {
				Sender string `json:"sender"`
			} `json:"events"`
		} `json:"presence"`
	}
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	room := body.Rooms.Join[roomID]
	for _, ev := range room.Timeline.Events {
		d.events[ev.EventID]++
	}
	for _, ev := range room.Ephemeral.Events {
		if ev.Type == "m.typing" {
			d.typing++
		}
	}
	for _, ev := range body.Presence.Events {
		if ev.Sender == d.sender {
			d.presence++
		}
	}
}

// A sync token is valid on every process and never goes backwards. The
// second process is made to lag (it holds the others' news) while
// messages, typing and presence go through the first; a sync on the lagging
// process with the first's newer token answers with a next_batch at or
// after it on every stream and repeats nothing, and once the held news
// arrives it is not delivered again: typing and presence keep the
// positions the first process gave them.
func TestSyncTokenOnLaggingProcess(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		p1, p2, alice, bob, roomID := twoProcesses(t, nil)
		since := alice.caughtUp(t)
		release := p2.HoldRelay()
		held := true
		defer func() {
			if held {
				release()
			}
		}()

		// Through the first process only: messages, typing, presence.
		bob1 := bob.on(p1)
		var sent []string
		for i := range 3 {
			sent = append(sent, bob1.send(t, roomID, fmt.Sprintf("message %d", i)))
		}
		r := bob1.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/typing/"+url.PathEscape(bob.id),
			map[string]any{"typing": true, "timeout": 30000})
		hearthtest.Expect(t, r, http.StatusOK, "")
		r = bob1.do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(bob.id)+"/status",
			map[string]any{"presence": "online", "status_msg": "lagging test"})
		hearthtest.Expect(t, r, http.StatusOK, "")

		got := deliveries{events: map[string]int{}, sender: bob.id}
		ahead := syncstream.Position{}
		for tries := 0; ; tries++ {
			r = alice.do(t, "GET", "/_matrix/client/v3/sync?timeout=1000&since="+url.QueryEscape(since), nil)
			next := syncPos(t, r)
			got.add(t, r, roomID)
			since = next.String()
			ahead = next
			if got.typing > 0 && got.presence > 0 && got.events[sent[2]] > 0 {
				break
			}
			if tries == 20 {
				t.Fatalf("the first process never delivered everything: %+v", got)
			}
		}

		// On the lagging process, with the newer token.
		lagging := alice.on(p2)
		r = lagging.do(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(since), nil)
		next := syncPos(t, r)
		notBehind(t, "lagging process", next, ahead)
		got.add(t, r, roomID)

		// The held news arrives, then a new message: it alone is delivered.
		r, _ = lagging.longPoll(t, next.String(), func() {
			held = false
			release()
			time.Sleep(200 * time.Millisecond)
			sent = append(sent, bob1.send(t, roomID, "after the lag"))
		})
		after := syncPos(t, r)
		notBehind(t, "after the lag", after, next)
		got.add(t, r, roomID)
		for _, id := range sent {
			if got.events[id] != 1 {
				t.Fatalf("event %s delivered %d times, want once: %+v", id, got.events[id], got.events)
			}
		}
		if after.Typing != ahead.Typing || after.Presence != ahead.Presence {
			t.Fatalf("typing and presence at %d and %d on the lagging process, %d and %d on the first",
				after.Typing, after.Presence, ahead.Typing, ahead.Presence)
		}
		// Back and forth between the processes: nothing new, nothing again.
		pos := after
		for i, p := range []*hearthtest.Server{p1, p2, p1, p2} {
			r = alice.on(p).do(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(pos.String()), nil)
			next := syncPos(t, r)
			notBehind(t, fmt.Sprintf("sync %d", i), next, pos)
			got.add(t, r, roomID)
			pos = next
		}
		if got.typing != 1 || got.presence != 1 {
			t.Fatalf("typing delivered %d times and presence %d times, want once each", got.typing, got.presence)
		}
	})
}
