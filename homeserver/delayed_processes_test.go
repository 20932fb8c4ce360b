package homeserver_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// countByKey counts the room's events of type com.example.test whose
// content has n = value.
func countByKey(t *testing.T, u user, roomID, value string) int {
	t.Helper()
	r := u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=1000", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	n := 0
	chunk, _ := r.JSON["chunk"].([]any)
	for _, e := range chunk {
		ev := e.(map[string]any)
		if c, _ := ev["content"].(map[string]any); ev["type"] == "com.example.test" && c["n"] == value {
			n++
		}
	}
	return n
}

func scheduleDelayed(t *testing.T, u user, roomID, value string, delayMS int) {
	t.Helper()
	r := u.do(t, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/com.example.test/%s?org.matrix.msc4140.delay=%d",
		url.PathEscape(roomID), value, delayMS), map[string]any{"n": value})
	hearthtest.Expect(t, r, http.StatusOK, "")
	if r.JSON["delay_id"] == nil {
		t.Fatalf("no delay_id: %s", r.Body)
	}
}

// With two processes on one database, delayed events are sent by the
// leader only, each once, whichever process scheduled them; when the
// leader stops, the other takes over and sends what comes due.
func TestDelayedEventsSentOnceAcrossProcesses(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		p1, _, alice, bob, roomID := twoProcesses(t, nil)
		values := []string{"from-follower-1", "from-follower-2", "from-leader"}
		scheduleDelayed(t, bob, roomID, values[0], 800)
		scheduleDelayed(t, bob, roomID, values[1], 900)
		scheduleDelayed(t, alice, roomID, values[2], 800)
		waitSent := func(u user, vs ...string) {
			t.Helper()
			deadline := time.Now().Add(10 * time.Second)
			for _, v := range vs {
				for countByKey(t, u, roomID, v) == 0 {
					if time.Now().After(deadline) {
						t.Fatalf("delayed event %s never sent", v)
					}
					time.Sleep(50 * time.Millisecond)
				}
			}
			time.Sleep(1500 * time.Millisecond) // time for a second send, if there were one
			for _, v := range vs {
				if n := countByKey(t, u, roomID, v); n != 1 {
					t.Fatalf("delayed event %s sent %d times, want 1", v, n)
				}
			}
		}
		waitSent(bob, values...)

		// The leader stops 0.5 s before alice's next delayed event is due:
		// the other process takes over and sends it, once.
		scheduleDelayed(t, alice, roomID, "after-takeover", 1000)
		scheduleDelayed(t, bob, roomID, "after-takeover-2", 1200)
		time.Sleep(500 * time.Millisecond)
		p1.Stop(t)
		waitSent(bob, "after-takeover", "after-takeover-2")
	})
}
