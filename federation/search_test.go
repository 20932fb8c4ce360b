package federation_test

import (
	"net/http"
	"net/url"
	"sort"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// Events from another server reach the search index the way local ones
// do: live events as they arrive, older ones when /messages backfills them.
func TestSearchFindsRemoteEvents(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		r := bob.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		bob.send(t, roomID, "kumquat before alice")
		r = alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		bob.send(t, roomID, "kumquat after alice")
		alice.waitForMessage(t, roomID, "kumquat after alice")
		search := func() []string {
			t.Helper()
			r := alice.do(t, "POST", "/_matrix/client/v3/search", map[string]any{"search_categories": map[string]any{
				"room_events": map[string]any{"search_term": "kumquat", "order_by": "recent"}}})
			hearthtest.Expect(t, r, http.StatusOK, "")
			var bodies []string
			for _, res := range r.JSON["search_categories"].(map[string]any)["room_events"].(map[string]any)["results"].([]any) {
				bodies = append(bodies, res.(map[string]any)["result"].(map[string]any)["content"].(map[string]any)["body"].(string))
			}
			sort.Strings(bodies)
			return bodies
		}
		if got := search(); len(got) != 1 || got[0] != "kumquat after alice" {
			t.Fatalf("live: %v", got)
		}
		// Paging back past the join backfills the earlier message from B.
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=50", nil), http.StatusOK, "")
		if got := search(); len(got) != 2 || got[0] != "kumquat after alice" || got[1] != "kumquat before alice" {
			t.Fatalf("after backfill: %v", got)
		}
	})
}
