package clientapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// gateway is an in-process push gateway implementing POST
// /_matrix/push/v1/notify of the Push Gateway API: it records each
// notification per pushkey, and can be told to fail (500 or a dropped
// connection) or to reject pushkeys.
type gateway struct {
	srv *httptest.Server

	mu       sync.Mutex
	got      map[string][]map[string]any // pushkey -> notifications in arrival order
	mode     string                      // "", "500", "close"
	rejected []string
	failures int
}

func newGateway(t *testing.T) *gateway {
	g := &gateway{got: map[string][]map[string]any{}}
	g.srv = httptest.NewServer(http.HandlerFunc(g.serve))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gateway) url() string { return g.srv.URL + "/_matrix/push/v1/notify" }

func (g *gateway) serve(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/_matrix/push/v1/notify" {
		http.NotFound(w, r)
		return
	}
	var body struct {
		Notification map[string]any `json:"notification"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Notification == nil {
		http.Error(w, `{"errcode":"M_BAD_JSON"}`, http.StatusBadRequest)
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	switch g.mode {
	case "500":
		g.failures++
		http.Error(w, "down", http.StatusInternalServerError)
		return
	case "close":
		g.failures++
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	devices, _ := body.Notification["devices"].([]any)
	var rejected []string
	for _, d := range devices {
		key, _ := d.(map[string]any)["pushkey"].(string)
		g.got[key] = append(g.got[key], body.Notification)
		if slices.Contains(g.rejected, key) {
			rejected = append(rejected, key)
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"rejected": append([]string{}, rejected...)})
}

func (g *gateway) set(mode string, rejected ...string) {
	g.mu.Lock()
	g.mode, g.rejected = mode, rejected
	g.mu.Unlock()
}

func (g *gateway) notifications(pushkey string) []map[string]any {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.got[pushkey])
}

// waitFor polls cond for up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func pushServer(t *testing.T, b hearthtest.Backend, modify func(*config.Config)) *hearthtest.Server {
	hs := hearthtest.NewServer(t, b, func(c *config.Config) {
		c.PushGatewayAllowCIDRs = []string{"127.0.0.0/8"}
		if modify != nil {
			modify(c)
		}
	})
	hs.Push.SetBackoff(2*time.Millisecond, 20*time.Millisecond)
	return hs
}

func pusherBody(gwURL, pushkey string, extra map[string]any) map[string]any {
	body := map[string]any{
		"kind": "http", "app_id": "org.example.app", "pushkey": pushkey, "app_display_name": "App",
		"device_display_name": "Phone " + pushkey, "lang": "en", "data": map[string]any{"url": gwURL, "custom": "x"},
	}
	for k, v := range extra {
		body[k] = v
	}
	return body
}

// login gives the user another device.
func (u user) login(t *testing.T, name string) user {
	t.Helper()
	r := passwordLogin(t, u.hs, name, "password", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return user{u.hs, u.id, r.JSON["access_token"].(string)}
}

func flush(t *testing.T, hs *hearthtest.Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Push.Flush(ctx); err != nil {
		t.Fatal(err)
	}
}

// twoPhoneRoom: alice and bob in a room; bob's laptop (his first device)
// and two phones, each phone with a pusher.
func twoPhoneRoom(t *testing.T, hs *hearthtest.Server, gw *gateway, extra map[string]any) (alice, laptop user, roomID string) {
	alice, laptop = newUser(t, hs, "alice"), newUser(t, hs, "bob")
	phone1, phone2 := laptop.login(t, "bob"), laptop.login(t, "bob")
	hearthtest.Expect(t, phone1.do(t, "POST", "/_matrix/client/v3/pushers/set", pusherBody(gw.url(), "phone1", nil)), http.StatusOK, "")
	hearthtest.Expect(t, phone2.do(t, "POST", "/_matrix/client/v3/pushers/set", pusherBody(gw.url(), "phone2", extra)), http.StatusOK, "")
	roomID = alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Lunch"})
	hearthtest.Expect(t, laptop.member(t, roomID, "join", nil), http.StatusOK, "")
	return alice, laptop, roomID
}

func TestPushReachesEveryPhoneAndReadingClearsThem(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		gw := newGateway(t)
		alice, laptop, roomID := twoPhoneRoom(t, hs, gw, map[string]any{"data": map[string]any{"url": gw.url(), "format": "event_id_only"}})
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/profile/"+alice.id+"/displayname", map[string]any{"displayname": "Alice"}), http.StatusOK, "")
		eventID := alice.send(t, roomID, "hello bob").JSON["event_id"].(string)

		waitFor(t, "both phones notified", func() bool {
			return len(gw.notifications("phone1")) == 1 && len(gw.notifications("phone2")) == 1
		})
		full, idOnly := gw.notifications("phone1")[0], gw.notifications("phone2")[0]
		content, _ := full["content"].(map[string]any)
		counts, _ := full["counts"].(map[string]any)
		dev := full["devices"].([]any)[0].(map[string]any)
		data, _ := dev["data"].(map[string]any)
		tweaks, _ := dev["tweaks"].(map[string]any)
		if full["event_id"] != eventID || full["room_id"] != roomID || full["type"] != "m.room.message" || full["sender"] != alice.id ||
			full["room_name"] != "Lunch" || content["body"] != "hello bob" || counts["unread"] != 1.0 || full["prio"] != "high" ||
			dev["app_id"] != "org.example.app" || data["custom"] != "x" || data["url"] != nil || tweaks["sound"] != "default" ||
			dev["pushkey_ts"] == nil {
			t.Fatalf("full notification: %v", full)
		}
		if full["sender_display_name"] != "Alice" {
			t.Errorf("sender_display_name: %v", full["sender_display_name"])
		}
		counts2, _ := idOnly["counts"].(map[string]any)
		dev2 := idOnly["devices"].([]any)[0].(map[string]any)
		if idOnly["event_id"] != eventID || idOnly["room_id"] != roomID || idOnly["content"] != nil || idOnly["sender"] != nil ||
			counts2["unread"] != 1.0 || dev2["data"].(map[string]any)["format"] != "event_id_only" {
			t.Fatalf("event_id_only notification: %v", idOnly)
		}

		// A second message makes the badge 2; reading on the laptop sends
		// both phones a badge-only update with 0.
		alice.send(t, roomID, "are you there?")
		waitFor(t, "second push", func() bool { return len(gw.notifications("phone1")) == 2 && len(gw.notifications("phone2")) == 2 })
		if c := gw.notifications("phone1")[1]["counts"].(map[string]any); c["unread"] != 2.0 {
			t.Fatalf("second badge: %v", c)
		}
		last := gw.notifications("phone1")[1]["event_id"].(string)
		hearthtest.Expect(t, laptop.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+url.PathEscape(last), map[string]any{}), http.StatusOK, "")
		for _, key := range []string{"phone1", "phone2"} {
			waitFor(t, "badge update to "+key, func() bool { return len(gw.notifications(key)) == 3 })
			n := gw.notifications(key)[2]
			if n["event_id"] != nil || n["counts"].(map[string]any)["unread"] != 0.0 || n["devices"].([]any)[0].(map[string]any)["pushkey"] != key {
				t.Fatalf("badge update to %s: %v", key, n)
			}
		}
		// A second receipt changes nothing: no further update.
		hearthtest.Expect(t, laptop.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read.private/"+url.PathEscape(last), map[string]any{}), http.StatusOK, "")
		flush(t, hs)
		time.Sleep(50 * time.Millisecond)
		if n := len(gw.notifications("phone1")); n != 3 {
			t.Fatalf("phone1 got %d notifications, want 3", n)
		}
		// Alice's own messages never notify alice; bob's message to alice
		// does not go to bob's phones.
		hearthtest.Expect(t, laptop.send(t, roomID, "yes"), http.StatusOK, "")
		flush(t, hs)
		time.Sleep(50 * time.Millisecond)
		if n := len(gw.notifications("phone1")); n != 3 {
			t.Fatalf("phone1 got %d notifications after its own message, want 3", n)
		}
	})
}

func TestPushQueueSurvivesADeadGateway(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		gw := newGateway(t)
		alice, _, roomID := twoPhoneRoom(t, hs, gw, nil)
		for _, mode := range []string{"500", "close"} {
			before := len(gw.notifications("phone1"))
			gw.set(mode)
			var sent []string
			for i := 0; i < 5; i++ {
				sent = append(sent, alice.send(t, roomID, fmt.Sprintf("%s %d", mode, i)).JSON["event_id"].(string))
			}
			waitFor(t, "the gateway to fail a few times", func() bool {
				gw.mu.Lock()
				defer gw.mu.Unlock()
				return gw.failures >= 3
			})
			gw.set("")
			for _, key := range []string{"phone1", "phone2"} {
				waitFor(t, "queued pushes to "+key, func() bool { return len(gw.notifications(key)) >= before+5 })
				var got []string
				for _, n := range gw.notifications(key)[before:] {
					got = append(got, n["event_id"].(string))
				}
				if !slices.Equal(got, sent) {
					t.Fatalf("%s after %s: got %v, want %v in order", key, mode, got, sent)
				}
			}
			gw.mu.Lock()
			gw.failures = 0
			gw.mu.Unlock()
		}
	})
}

// TestPushCatchesUpAfterACrash: events committed while the push worker
// is gone (a kill -9 after commit, before evaluation) are evaluated at the
// next start: counts in sync and pushes to the phones, in order.
func TestPushCatchesUpAfterACrash(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		gw := newGateway(t)
		alice, laptop, roomID := twoPhoneRoom(t, hs, gw, nil)
		flush(t, hs)
		hs.Push.Close() // the worker stops; /send still commits
		var sent []string
		for i := 0; i < 3; i++ {
			sent = append(sent, alice.send(t, roomID, fmt.Sprintf("while down %d", i)).JSON["event_id"].(string))
		}
		hs.Restart(t)
		hs.Push.SetBackoff(2*time.Millisecond, 20*time.Millisecond)
		for _, key := range []string{"phone1", "phone2"} {
			waitFor(t, "pushes to "+key, func() bool { return len(gw.notifications(key)) >= 3 })
			var got []string
			for _, n := range gw.notifications(key) {
				got = append(got, n["event_id"].(string))
			}
			if !slices.Equal(got, sent) {
				t.Fatalf("%s: got %v, want %v", key, got, sent)
			}
			if c := gw.notifications(key)[2]["counts"].(map[string]any); c["unread"] != 3.0 {
				t.Fatalf("%s badge: %v", key, c)
			}
		}
		c, _ := unread(t, laptop.sync(t, "", ""), roomID)
		expectCounts(t, c, 3, 0)
	})
}

// TestPusherChangesReachDelivery: the worker caches each user's pushers;
// a pusher set or removed between two messages is seen by the next one.
func TestPusherChangesReachDelivery(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		gw := newGateway(t)
		alice, laptop, roomID := twoPhoneRoom(t, hs, gw, nil)
		alice.send(t, roomID, "one")
		waitFor(t, "first push", func() bool { return len(gw.notifications("phone1")) == 1 && len(gw.notifications("phone2")) == 1 })

		phone3 := laptop.login(t, "bob")
		hearthtest.Expect(t, phone3.do(t, "POST", "/_matrix/client/v3/pushers/set", pusherBody(gw.url(), "phone3", nil)), http.StatusOK, "")
		alice.send(t, roomID, "two")
		waitFor(t, "second push", func() bool {
			return len(gw.notifications("phone1")) == 2 && len(gw.notifications("phone2")) == 2 && len(gw.notifications("phone3")) == 1
		})
		if c := gw.notifications("phone3")[0]["counts"].(map[string]any); c["unread"] != 2.0 {
			t.Fatalf("phone3 badge: %v", c)
		}

		hearthtest.Expect(t, laptop.do(t, "POST", "/_matrix/client/v3/pushers/set",
			map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "phone1"}), http.StatusOK, "")
		alice.send(t, roomID, "three")
		waitFor(t, "third push", func() bool { return len(gw.notifications("phone2")) == 3 && len(gw.notifications("phone3")) == 2 })
		flush(t, hs)
		time.Sleep(50 * time.Millisecond)
		if n := len(gw.notifications("phone1")); n != 2 {
			t.Fatalf("removed pusher got %d pushes, want 2", n)
		}
		if c := gw.notifications("phone3")[1]["counts"].(map[string]any); c["unread"] != 3.0 {
			t.Fatalf("phone3 badge: %v", c)
		}
	})
}

// TestDeadGatewayDoesNotHoldUpOthers: 70 pushers behind a gateway that
// never answers (each request hangs until the gateway timeout) are more
// than all delivery slots; another user's gateway still gets its push
// while they hang, not after some of them gave up.
func TestDeadGatewayDoesNotHoldUpOthers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hang := make(chan struct{})
		var ended atomic.Int64 // dead-gateway requests that ended (timed out)
		dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body) // so that the server sees the client go away
			select {
			case <-hang:
			case <-r.Context().Done():
				ended.Add(1)
			}
		}))
		t.Cleanup(dead.Close)
		t.Cleanup(func() { close(hang) })
		hs := pushServer(t, b, nil)
		gw := newGateway(t)
		alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
		for i := 0; i < 70; i++ {
			hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/pushers/set",
				pusherBody(dead.URL+"/_matrix/push/v1/notify", fmt.Sprintf("dead%d", i), nil)), http.StatusOK, "")
		}
		hearthtest.Expect(t, carol.do(t, "POST", "/_matrix/client/v3/pushers/set", pusherBody(gw.url(), "carol", nil)), http.StatusOK, "")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		alice.send(t, roomID, "to bob's dead gateway")
		flush(t, hs)
		hearthtest.Expect(t, carol.member(t, roomID, "join", nil), http.StatusOK, "")
		eventID := alice.send(t, roomID, "to everyone").JSON["event_id"].(string)
		waitFor(t, "carol's push", func() bool { return len(gw.notifications("carol")) == 1 })
		if n := ended.Load(); n != 0 {
			t.Fatalf("carol's push waited for %d dead-gateway requests to time out", n)
		}
		if got := gw.notifications("carol")[0]["event_id"]; got != eventID {
			t.Fatalf("carol got %v, want %s", got, eventID)
		}
	})
}

func TestPusherRemovedWhenRejected(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		gw := newGateway(t)
		alice, laptop, roomID := twoPhoneRoom(t, hs, gw, nil)
		gw.set("", "phone1")
		alice.send(t, roomID, "hi")
		waitFor(t, "phone1 removed", func() bool {
			ps := laptop.do(t, "GET", "/_matrix/client/v3/pushers", nil).JSON["pushers"].([]any)
			return len(ps) == 1 && ps[0].(map[string]any)["pushkey"] == "phone2"
		})
		alice.send(t, roomID, "again")
		waitFor(t, "phone2's second push", func() bool { return len(gw.notifications("phone2")) == 2 })
		if n := len(gw.notifications("phone1")); n != 1 {
			t.Fatalf("removed pusher got %d notifications", n)
		}
	})
}

func TestPushHold(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, func(c *config.Config) { c.PushHoldSeconds = 1 })
		gw := newGateway(t)
		alice, laptop, roomID := twoPhoneRoom(t, hs, gw, nil)

		// Bob not syncing anywhere: no hold.
		start := time.Now()
		alice.send(t, roomID, "not active")
		waitFor(t, "immediate push", func() bool { return len(gw.notifications("phone1")) == 1 })
		if d := time.Since(start); d > 900*time.Millisecond {
			t.Fatalf("push to an inactive user took %v", d)
		}

		// Bob's laptop long-polls (online): pushes are held; one he reads
		// meanwhile is dropped, one he does not read arrives after the hold.
		tok := laptop.sync(t, "", "").JSON["next_batch"].(string)
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		go func() {
			for ctx.Err() == nil {
				req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/_matrix/client/v3/sync?timeout=200&since="+url.QueryEscape(tok), nil)
				req.Header.Set("Authorization", "Bearer "+laptop.token)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}()
		waitFor(t, "bob online", func() bool { return hs.Presence.ActiveSyncing(laptop.id) })
		read := alice.send(t, roomID, "read on the laptop").JSON["event_id"].(string)
		flush(t, hs)
		hearthtest.Expect(t, laptop.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+url.PathEscape(read), map[string]any{}), http.StatusOK, "")
		start = time.Now()
		unread := alice.send(t, roomID, "not read").JSON["event_id"].(string)
		waitFor(t, "held push", func() bool { return len(gw.notifications("phone1")) >= 3 })
		if d := time.Since(start); d < 900*time.Millisecond {
			t.Fatalf("held push arrived after %v, before the 1 s hold", d)
		}
		var ids []string
		for _, n := range gw.notifications("phone1") {
			id, _ := n["event_id"].(string)
			ids = append(ids, id)
		}
		if slices.Contains(ids, read) || ids[len(ids)-1] != unread {
			t.Fatalf("phone1 got %v; the read event must be dropped and %s delivered", ids, unread)
		}
	})
}

func TestPusherValidationAndLifecycle(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		const set = "/_matrix/client/v3/pushers/set"
		good := "https://push.example.org/_matrix/push/v1/notify"
		without := func(key string) map[string]any {
			body := pusherBody(good, "k", nil)
			delete(body, key)
			return body
		}
		for _, key := range []string{"kind", "app_id", "pushkey", "app_display_name", "device_display_name", "lang", "data"} {
			hearthtest.Expect(t, alice.do(t, "POST", set, without(key)), http.StatusBadRequest, "M_MISSING_PARAM")
		}
		hearthtest.Expect(t, alice.do(t, "POST", set, pusherBody(good, "k", map[string]any{"data": map[string]any{}})), http.StatusBadRequest, "M_MISSING_PARAM")
		for _, bad := range []string{"ftp://push.example.org/_matrix/push/v1/notify", "https://push.example.org/notify",
			"https:///_matrix/push/v1/notify", "not a url", "https://push.example.org/_matrix/push/v1/notify/x"} {
			hearthtest.Expect(t, alice.do(t, "POST", set, pusherBody(bad, "k", nil)), http.StatusBadRequest, "M_INVALID_PARAM")
		}
		hearthtest.Expect(t, alice.do(t, "POST", set, pusherBody(good, "k", map[string]any{"kind": "email"})), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "POST", set, pusherBody(good, "k", map[string]any{"data": map[string]any{"url": good, "format": "full"}})), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "POST", set, "{"), http.StatusBadRequest, "M_NOT_JSON")

		// Set, update in place, list.
		phone := alice.login(t, "alice")
		hearthtest.Expect(t, phone.do(t, "POST", set, pusherBody(good, "k", map[string]any{"profile_tag": "tag"})), http.StatusOK, "")
		hearthtest.Expect(t, phone.do(t, "POST", set, pusherBody(good, "k", map[string]any{"lang": "fr"})), http.StatusOK, "")
		ps := alice.do(t, "GET", "/_matrix/client/v3/pushers", nil).JSON["pushers"].([]any)
		if len(ps) != 1 || ps[0].(map[string]any)["lang"] != "fr" || ps[0].(map[string]any)["data"].(map[string]any)["url"] != good {
			t.Fatalf("pushers: %v", ps)
		}
		// Another user taking the same app_id + pushkey removes alice's
		// pusher, unless append.
		bob := newUser(t, hs, "bob")
		hearthtest.Expect(t, bob.do(t, "POST", set, pusherBody(good, "k", map[string]any{"append": true})), http.StatusOK, "")
		if n := len(alice.do(t, "GET", "/_matrix/client/v3/pushers", nil).JSON["pushers"].([]any)); n != 1 {
			t.Fatalf("append removed alice's pusher")
		}
		hearthtest.Expect(t, bob.do(t, "POST", set, pusherBody(good, "k", nil)), http.StatusOK, "")
		if n := len(alice.do(t, "GET", "/_matrix/client/v3/pushers", nil).JSON["pushers"].([]any)); n != 0 {
			t.Fatalf("alice still has %d pushers", n)
		}
		// kind null deletes.
		hearthtest.Expect(t, bob.do(t, "POST", set, map[string]any{"kind": nil, "app_id": "org.example.app", "pushkey": "k"}), http.StatusOK, "")
		if n := len(bob.do(t, "GET", "/_matrix/client/v3/pushers", nil).JSON["pushers"].([]any)); n != 0 {
			t.Fatalf("bob still has %d pushers", n)
		}
		// Logging the phone out removes its pusher; the laptop's stays.
		hearthtest.Expect(t, phone.do(t, "POST", set, pusherBody(good, "phone", nil)), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "POST", set, pusherBody(good, "laptop", nil)), http.StatusOK, "")
		hearthtest.Expect(t, phone.do(t, "POST", "/_matrix/client/v3/logout", nil), http.StatusOK, "")
		ps = alice.do(t, "GET", "/_matrix/client/v3/pushers", nil).JSON["pushers"].([]any)
		if len(ps) != 1 || ps[0].(map[string]any)["pushkey"] != "laptop" {
			t.Fatalf("after logout: %v", ps)
		}
	})
}

// unread returns a joined room's unread_notifications and
// unread_thread_notifications from a sync response.
func unread(t *testing.T, r hearthtest.Response, roomID string) (counts map[string]any, threads map[string]any) {
	t.Helper()
	room, _ := path(r.JSON, "rooms", "join", roomID).(map[string]any)
	if room == nil {
		t.Fatalf("room %s not in sync: %s", roomID, r.Body)
	}
	counts, _ = room["unread_notifications"].(map[string]any)
	threads, _ = room["unread_thread_notifications"].(map[string]any)
	return counts, threads
}

func expectCounts(t *testing.T, c map[string]any, notif, highlight float64) {
	t.Helper()
	if c["notification_count"] != notif || c["highlight_count"] != highlight {
		t.Fatalf("counts %v, want %v/%v", c, notif, highlight)
	}
}

func (u user) sendContent(t *testing.T, roomID string, content map[string]any) string {
	t.Helper()
	r := u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+nextTxn(), content)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["event_id"].(string)
}

func TestNotificationCountsInSync(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, carol.member(t, roomID, "join", nil), http.StatusOK, "")
		tok := bob.sync(t, "", "").JSON["next_batch"].(string)
		c, _ := unread(t, bob.sync(t, "", ""), roomID)
		expectCounts(t, c, 0, 0)

		// Every sync that shows an event counts it (no flush here).
		first := alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "hello"})
		r := bob.sync(t, tok, "timeout=5000")
		c, _ = unread(t, r, roomID)
		expectCounts(t, c, 1, 0)
		tok = r.JSON["next_batch"].(string)
		mention := alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "bob!", "m.mentions": map[string]any{"user_ids": []any{bob.id}}})
		r = bob.sync(t, tok, "timeout=5000")
		c, _ = unread(t, r, roomID)
		expectCounts(t, c, 2, 1)
		// Carol got the plain message and the mention of bob, no highlight.
		c, _ = unread(t, carol.sync(t, "", ""), roomID)
		expectCounts(t, c, 2, 0)

		// Threads: a reply in the thread of the first message.
		threadFilter := url.QueryEscape(`{"room":{"timeline":{"unread_thread_notifications":true}}}`)
		alice.sendContent(t, roomID, map[string]any{"msgtype": "m.text", "body": "in thread",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": first}})
		flush(t, hs)
		c, threads := unread(t, bob.sync(t, "", "filter="+threadFilter), roomID)
		expectCounts(t, c, 2, 1)
		if tc, _ := threads[first].(map[string]any); len(threads) != 1 || tc["notification_count"] != 1.0 || tc["highlight_count"] != 0.0 {
			t.Fatalf("thread counts: %v", threads)
		}
		c, threads = unread(t, bob.sync(t, "", ""), roomID)
		expectCounts(t, c, 3, 1)
		if threads != nil {
			t.Fatalf("unread_thread_notifications without the filter: %v", threads)
		}
		// A receipt in the main timeline clears it, not the thread.
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+url.PathEscape(mention),
			map[string]any{"thread_id": "main"}), http.StatusOK, "")
		r = bob.sync(t, tok, "timeout=5000")
		c, _ = unread(t, r, roomID)
		expectCounts(t, c, 1, 0)

		// GET /notifications: newest first, read flags, only=highlight, paging.
		ns := bob.do(t, "GET", "/_matrix/client/v3/notifications", nil)
		hearthtest.Expect(t, ns, http.StatusOK, "")
		list := ns.JSON["notifications"].([]any)
		if len(list) != 3 || ns.JSON["next_token"] != nil {
			t.Fatalf("notifications: %s", ns.Body)
		}
		newest := list[0].(map[string]any)
		if newest["read"] != false || newest["room_id"] != roomID || newest["event"].(map[string]any)["content"].(map[string]any)["body"] != "in thread" ||
			list[1].(map[string]any)["read"] != true || newest["ts"] == nil || len(newest["actions"].([]any)) == 0 {
			t.Fatalf("notifications: %s", ns.Body)
		}
		hl := bob.do(t, "GET", "/_matrix/client/v3/notifications?only=highlight", nil).JSON["notifications"].([]any)
		if len(hl) != 1 || hl[0].(map[string]any)["event"].(map[string]any)["event_id"] != mention {
			t.Fatalf("highlights: %v", hl)
		}
		page := bob.do(t, "GET", "/_matrix/client/v3/notifications?limit=2", nil)
		next, _ := page.JSON["next_token"].(string)
		rest := bob.do(t, "GET", "/_matrix/client/v3/notifications?limit=2&from="+next, nil).JSON["notifications"].([]any)
		if len(page.JSON["notifications"].([]any)) != 2 || next == "" || len(rest) != 1 ||
			rest[0].(map[string]any)["event"].(map[string]any)["event_id"] != first {
			t.Fatalf("paging: %s then %v", page.Body, rest)
		}
		hearthtest.Expect(t, bob.do(t, "GET", "/_matrix/client/v3/notifications?from=abc", nil), http.StatusBadRequest, "M_INVALID_PARAM")

		// An unthreaded receipt at the newest event clears everything.
		last := newest["event"].(map[string]any)["event_id"].(string)
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+url.PathEscape(last), map[string]any{}), http.StatusOK, "")
		c, threads = unread(t, bob.sync(t, "", "filter="+threadFilter), roomID)
		expectCounts(t, c, 0, 0)
		if len(threads) != 0 {
			t.Fatalf("threads after reading all: %v", threads)
		}
	})
}

// TestLegacyBodyMentions: mentions only in the body (bridges, older
// clients) highlight through the legacy default rules we keep (issue #5),
// except in events with m.mentions (MSC3952); the rules can be disabled.
func TestLegacyBodyMentions(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/profile/"+bob.id+"/displayname", map[string]any{"displayname": "Robert Tables"}), http.StatusOK, "")
		counts := func() map[string]any {
			t.Helper()
			c, _ := unread(t, bob.sync(t, "", ""), roomID)
			return c
		}
		send := func(content map[string]any) {
			t.Helper()
			content["msgtype"] = "m.text"
			alice.sendContent(t, roomID, content)
		}

		send(map[string]any{"body": "ping " + bob.id})                                 // .m.rule.contains_user_name
		send(map[string]any{"body": "hello robert tables!"})                           // .m.rule.contains_display_name
		send(map[string]any{"body": "@room lunch"})                                    // .m.rule.roomnotif (alice has PL 100)
		send(map[string]any{"body": "ping " + bob.id, "m.mentions": map[string]any{}}) // m.mentions: legacy rules off
		send(map[string]any{"body": "@room", "m.mentions": map[string]any{"user_ids": []any{}}})
		expectCounts(t, counts(), 5, 3)

		// Disabled like any default rule.
		hearthtest.Expect(t, bob.do(t, "PUT", rulePath("content", ".m.rule.contains_user_name", "enabled"), map[string]any{"enabled": false}), http.StatusOK, "")
		hearthtest.Expect(t, bob.do(t, "PUT", rulePath("override", ".m.rule.roomnotif", "enabled"), map[string]any{"enabled": false}), http.StatusOK, "")
		send(map[string]any{"body": "ping " + bob.id})
		send(map[string]any{"body": "@room again"})
		expectCounts(t, counts(), 7, 3)
		r := bob.do(t, "GET", rulePath("content", ".m.rule.contains_user_name"), nil)
		if r.JSON["enabled"] != false || r.JSON["pattern"] != "bob" {
			t.Fatalf("disabled rule: %s", r.Body)
		}
	})
}

// TestInvitePushesTheInvitee: the worker evaluates only events with a
// recipient who has pushers; an invite's target is one though not a
// member, and members without pushers never get a push.
func TestInvitePushesTheInvitee(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := pushServer(t, b, nil)
		gw := newGateway(t)
		alice, carol := newUser(t, hs, "alice"), newUser(t, hs, "carol")
		laptop := newUser(t, hs, "bob")
		phone := laptop.login(t, "bob")
		hearthtest.Expect(t, phone.do(t, "POST", "/_matrix/client/v3/pushers/set", pusherBody(gw.url(), "phone", nil)), http.StatusOK, "")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, carol.member(t, roomID, "join", nil), http.StatusOK, "")
		alice.send(t, roomID, "only carol is here")
		hearthtest.Expect(t, alice.member(t, roomID, "invite", map[string]any{"user_id": laptop.id}), http.StatusOK, "")
		waitFor(t, "the invite pushed", func() bool { return len(gw.notifications("phone")) >= 1 })
		flush(t, hs)
		got := gw.notifications("phone")
		if len(got) != 1 || got[0]["type"] != "m.room.member" || got[0]["user_is_target"] != true {
			t.Fatalf("pushes to the invitee: %v", got)
		}
	})
}
