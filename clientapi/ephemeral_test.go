package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// ephemeralOf returns a joined room's ephemeral events by type.
func ephemeralOf(r hearthtest.Response, roomID string) map[string]map[string]any {
	out := map[string]map[string]any{}
	rooms, _ := r.JSON["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	room, _ := join[roomID].(map[string]any)
	eph, _ := room["ephemeral"].(map[string]any)
	evs, _ := eph["events"].([]any)
	for _, e := range evs {
		ev := e.(map[string]any)
		out[ev["type"].(string)] = ev["content"].(map[string]any)
	}
	return out
}

func TestTypingAndReceiptsReachEveryDevice(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		// Bob has a second device.
		r := passwordLogin(t, hs, "bob", "password", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		bob2 := user{hs, bob.id, r.JSON["access_token"].(string)}
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		msg := alice.send(t, roomID, "read me").JSON["event_id"].(string)
		tok1 := bob.sync(t, "", "").JSON["next_batch"].(string)
		tok2 := bob2.sync(t, "", "").JSON["next_batch"].(string)

		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/"+alice.id, map[string]any{"typing": true, "timeout": 30000}), http.StatusOK, "")
		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/typing/"+alice.id, map[string]any{"typing": true}), http.StatusForbidden, "M_FORBIDDEN")
		for _, dev := range []struct {
			u   user
			tok string
		}{{bob, tok1}, {bob2, tok2}} {
			eph := ephemeralOf(dev.u.sync(t, dev.tok, "timeout=5000"), roomID)
			ids, _ := eph["m.typing"]["user_ids"].([]any)
			if len(ids) != 1 || ids[0] != alice.id {
				t.Fatalf("typing not seen on a device: %v", eph)
			}
		}
		// Bob reads on device 2: alice and both of bob's devices see it;
		// a private receipt is seen by bob's devices only.
		hearthtest.Expect(t, bob2.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+url.PathEscape(msg), map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, bob2.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read.private/"+url.PathEscape(msg), map[string]any{}), http.StatusOK, "")
		check := func(u user, wantPrivate bool) {
			eph := ephemeralOf(u.sync(t, "", ""), roomID)
			byType, _ := eph["m.receipt"][msg].(map[string]any)
			if read, _ := byType["m.read"].(map[string]any); read[bob.id] == nil {
				t.Fatalf("%s: no m.read receipt of bob: %v", u.id, eph)
			}
			_, hasPrivate := byType["m.read.private"]
			if hasPrivate != wantPrivate {
				t.Fatalf("%s sees private receipt: %v, want %v", u.id, hasPrivate, wantPrivate)
			}
		}
		check(alice, false)
		check(bob, true)
		check(bob2, true)
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/$nope", map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.bogus/"+url.PathEscape(msg), map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
		// Read markers set m.fully_read account data.
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/"+roomID+"/read_markers", map[string]any{"m.fully_read": msg}), http.StatusOK, "")
		r = bob.do(t, "GET", "/_matrix/client/v3/user/"+bob.id+"/rooms/"+roomID+"/account_data/m.fully_read", nil)
		if r.JSON["event_id"] != msg {
			t.Fatalf("m.fully_read: %s", r.Body)
		}
	})
}

func TestPresence(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		tok := bob.sync(t, "", "").JSON["next_batch"].(string)
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/presence/"+alice.id+"/status", map[string]any{"presence": "unavailable", "status_msg": "lunch"}), http.StatusOK, "")
		r := bob.do(t, "GET", "/_matrix/client/v3/presence/"+alice.id+"/status", nil)
		if r.JSON["presence"] != "unavailable" || r.JSON["status_msg"] != "lunch" {
			t.Fatalf("presence: %s", r.Body)
		}
		r = bob.sync(t, tok, "timeout=5000")
		found := false
		for _, e := range r.JSON["presence"].(map[string]any)["events"].([]any) {
			ev := e.(map[string]any)
			if ev["sender"] == alice.id && ev["content"].(map[string]any)["status_msg"] == "lunch" {
				found = true
			}
		}
		if !found {
			t.Fatalf("bob's sync lacks alice's presence: %s", r.Body)
		}
		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/presence/"+alice.id+"/status", map[string]any{"presence": "online"}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/presence/"+alice.id+"/status", map[string]any{"presence": "asleep"}), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// Ten devices of one user, all long-polling, each get every message.
func TestTenDevicesEachGetEveryMessage(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		devices := []user{bob}
		for i := 1; i < 10; i++ {
			r := passwordLogin(t, hs, "bob", "password", nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			devices = append(devices, user{hs, bob.id, r.JSON["access_token"].(string)})
		}
		const n = 20
		var wg sync.WaitGroup
		got := make([][]string, len(devices))
		for i, d := range devices {
			tok := d.sync(t, "", "").JSON["next_batch"].(string)
			wg.Add(1)
			go func() {
				defer wg.Done()
				deadline := time.Now().Add(20 * time.Second)
				for len(got[i]) < n && time.Now().Before(deadline) {
					// A timeline limit above n: a device that falls behind
					// (a busy machine) gets a limited timeline otherwise,
					// which is correct sync behaviour but not what this tests.
					r := d.hs.Do(t, "GET", "/_matrix/client/v3/sync?timeout=5000&filter="+url.QueryEscape(`{"room":{"timeline":{"limit":50}}}`)+"&since="+url.QueryEscape(tok), d.token, nil)
					if r.Status != http.StatusOK {
						return
					}
					tok = r.JSON["next_batch"].(string)
					got[i] = append(got[i], timelineBodies(joinedRoom(t, r, roomID))...)
				}
			}()
		}
		for i := 0; i < n; i++ {
			hearthtest.Expect(t, alice.send(t, roomID, fmt.Sprintf("m%d", i)), http.StatusOK, "")
		}
		wg.Wait()
		for i, g := range got {
			if len(g) != n {
				t.Fatalf("device %d got %d messages, want %d: %v", i, len(g), n, g)
			}
			for j, body := range g {
				if body != fmt.Sprintf("m%d", j) {
					t.Fatalf("device %d message %d is %q", i, j, body)
				}
			}
		}
	})
}

// A long-poll wakes for an event in the user's room, and not for one in a
// room the user is not in.
func TestLongPollWakesOnlyForRelevantEvents(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
	shared := alice.createRoom(t, map[string]any{"preset": "public_chat"})
	hearthtest.Expect(t, bob.member(t, shared, "join", nil), http.StatusOK, "")
	other := carol.createRoom(t, nil)
	tok := bob.sync(t, "", "").JSON["next_batch"].(string)
	done := make(chan time.Time, 1)
	go func() {
		bob.sync(t, tok, "timeout=30000")
		done <- time.Now()
	}()
	time.Sleep(100 * time.Millisecond)
	carol.send(t, other, "irrelevant")
	select {
	case <-done:
		t.Fatal("long-poll woke for an event in a room bob is not in")
	case <-time.After(500 * time.Millisecond):
	}
	sent := time.Now()
	alice.send(t, shared, "relevant")
	select {
	case at := <-done:
		if d := at.Sub(sent); d > 2*time.Second {
			t.Fatalf("woke %v after the event", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("long-poll did not wake for a relevant event")
	}
}
