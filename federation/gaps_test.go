package federation_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// A server that missed a run of events and gets only part of it back
// through get_missing_events shows a limited sync timeline that starts
// after the hole, and /messages from its prev_batch fills the hole.
func TestSyncTimelineAfterFederationGap(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		r := alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		filter := url.QueryEscape(`{"room":{"timeline":{"limit":30}}}`)
		r = alice.do(t, "GET", "/_matrix/client/v3/sync?filter="+filter, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		since := r.JSON["next_batch"].(string)
		// A full page of history before the hole, so /messages has to
		// notice the hole at its starting point, not at its end.
		for i := 0; i < 10; i++ {
			alice.send(t, roomID, fmt.Sprintf("alice %d", i))
		}
		bob.waitForMessage(t, roomID, "alice 9")

		// A swallows B's transactions: B thinks them delivered.
		var swallowed atomic.Int64
		alice.hs.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if req.Method != http.MethodPut || !strings.Contains(req.URL.Path, "/federation/v1/send/") {
					fedH.ServeHTTP(w, req)
					return
				}
				body, _ := io.ReadAll(req.Body)
				var txn struct {
					PDUs []json.RawMessage `json:"pdus"`
				}
				_ = json.Unmarshal(body, &txn)
				swallowed.Add(int64(len(txn.PDUs)))
				w.Header().Set("Content-Type", "application/json")
				_, _ = w.Write([]byte(`{"pdus":{}}`))
			})
		})
		const missed = 30
		for i := 0; i < missed; i++ {
			bob.send(t, roomID, fmt.Sprintf("gap %d", i))
		}
		for deadline := time.Now().Add(15 * time.Second); swallowed.Load() < missed; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("B sent %d of the %d events", swallowed.Load(), missed)
			}
		}
		alice.hs.WrapFederation(func(fedH, _ http.Handler) http.Handler { return fedH })
		bob.send(t, roomID, "End")
		alice.waitForMessage(t, roomID, "End")

		r = alice.do(t, "GET", "/_matrix/client/v3/sync?filter="+filter+"&since="+url.QueryEscape(since), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		tl, _ := get(r.JSON, "rooms", "join", roomID, "timeline").(map[string]any)
		evs, _ := tl["events"].([]any)
		if len(evs) == 0 || get(evs[len(evs)-1], "content", "body") != "End" {
			t.Fatalf("timeline does not end with End: %s", r.Body)
		}
		if tl["limited"] != true {
			t.Fatalf("timeline across the hole is not limited: %s", r.Body)
		}
		first := get(evs[0], "content", "body")
		for _, ev := range evs {
			if get(ev, "sender") == alice.id {
				t.Fatalf("timeline shows alice's message from before the hole: %s", r.Body)
			}
		}
		// get_missing_events brought back the last 20 of the 30 missed.
		if first != fmt.Sprintf("gap %d", missed-20) {
			t.Fatalf("timeline starts at %v, want the first event after the hole: %s", first, r.Body)
		}

		// /messages back from prev_batch fills the hole from B.
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=10&from="+url.QueryEscape(tl["prev_batch"].(string)), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		chunk, _ := r.JSON["chunk"].([]any)
		var bodies []string
		for _, ev := range chunk {
			body, _ := get(ev, "content", "body").(string)
			bodies = append(bodies, body)
		}
		want := make([]string, 0, 10)
		for i := missed - 21; i >= missed-30; i-- {
			want = append(want, fmt.Sprintf("gap %d", i))
		}
		if strings.Join(bodies, "|") != strings.Join(want, "|") {
			t.Fatalf("/messages from prev_batch = %q, want %q", bodies, want)
		}
	})
}
