package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestSearch(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "private_chat"})
		var ids []string
		for i := 0; i < 15; i++ {
			ids = append(ids, alice.send(t, roomID, fmt.Sprintf("Message number %d", i)).JSON["event_id"].(string))
		}
		alice.send(t, roomID, "something else")
		search := func(u user, term, nextBatch string, extra map[string]any) hearthtest.Response {
			re := map[string]any{"search_term": term, "keys": []string{"content.body"}, "order_by": "recent",
				"filter": map[string]any{"limit": 10}}
			for k, v := range extra {
				re[k] = v
			}
			path := "/_matrix/client/v3/search"
			if nextBatch != "" {
				path += "?next_batch=" + url.QueryEscape(nextBatch)
			}
			r := u.do(t, "POST", path, map[string]any{"search_categories": map[string]any{"room_events": re}})
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r
		}
		re := func(r hearthtest.Response) map[string]any {
			return r.JSON["search_categories"].(map[string]any)["room_events"].(map[string]any)
		}
		// Words match at their start, in any order; newest first; pages of 10.
		r1 := re(search(alice, "Message", "", nil))
		if r1["count"] != float64(15) || len(r1["results"].([]any)) != 10 {
			t.Fatalf("first page: %v", r1)
		}
		first := r1["results"].([]any)[0].(map[string]any)["result"].(map[string]any)
		if first["event_id"] != ids[14] {
			t.Fatalf("newest first: got %v", first["event_id"])
		}
		r2 := re(search(alice, "Message", r1["next_batch"].(string), nil))
		if len(r2["results"].([]any)) != 5 {
			t.Fatalf("second page: %v", r2)
		}
		if _, more := r2["next_batch"]; more {
			t.Fatalf("a page that is not full has a next_batch")
		}
		if r := re(search(alice, "number 7", "", nil)); r["count"] != float64(1) {
			t.Fatalf("two words: %v", r)
		}
		if r := re(search(alice, "mess", "", nil)); r["count"] != float64(15) {
			t.Fatalf("prefix: %v", r)
		}
		// Context around a result.
		r := re(search(alice, "number 7", "", map[string]any{"event_context": map[string]any{"before_limit": 2, "after_limit": 2}}))
		ctx := r["results"].([]any)[0].(map[string]any)["context"].(map[string]any)
		if len(ctx["events_before"].([]any)) != 2 || len(ctx["events_after"].([]any)) != 2 {
			t.Fatalf("context: %v", ctx)
		}
		// Redacted events and rooms one is not in are not searched.
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/redact/"+url.PathEscape(ids[3])+"/red1", map[string]any{}), http.StatusOK, "")
		if r := re(search(alice, "Message", "", map[string]any{"filter": map[string]any{"limit": 50}})); r["count"] != float64(14) {
			t.Fatalf("after a redaction: %v", r["count"])
		}
		if r := re(search(bob, "Message", "", nil)); r["count"] != float64(0) {
			t.Fatalf("bob, not in the room, finds %v", r["count"])
		}
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/search", map[string]any{"search_categories": map[string]any{
			"room_events": map[string]any{"search_term": "x", "keys": []string{"content.bogus"}}}}), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}
