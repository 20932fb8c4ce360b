package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func thread(root string) map[string]any {
	return map[string]any{"event_id": root, "rel_type": "m.thread"}
}

func TestRelations(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, eve := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "eve")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		root := alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "root"})
		var replies []string
		for i := range 5 {
			replies = append(replies, bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": fmt.Sprintf("reply %d", i), "m.relates_to": thread(root)}))
		}
		reaction := bob.sendEvent(t, roomID, "m.reaction", map[string]any{"m.relates_to": map[string]any{"event_id": root, "rel_type": "m.annotation", "key": "👍"}})
		// A relation of a relation, for recurse.
		nested := alice.sendEvent(t, roomID, "m.reaction", map[string]any{"m.relates_to": map[string]any{"event_id": replies[0], "rel_type": "m.annotation", "key": "x"}})
		base := "/_matrix/client/v1/rooms/" + url.PathEscape(roomID) + "/relations/" + url.PathEscape(root)

		r := alice.do(t, "GET", base, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		want := []string{reaction, replies[4], replies[3], replies[2], replies[1], replies[0]}
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, want) {
			t.Fatalf("all relations, newest first: %v, want %v", got, want)
		}
		if _, ok := r.JSON["recursion_depth"]; ok {
			t.Errorf("recursion_depth without recurse: %s", r.Body)
		}
		// Backwards pages of two, then forwards.
		r = alice.do(t, "GET", base+"/m.thread?limit=2", nil)
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{replies[4], replies[3]}) {
			t.Fatalf("first page: %v", got)
		}
		r = alice.do(t, "GET", base+"/m.thread?limit=2&from="+url.QueryEscape(r.JSON["next_batch"].(string)), nil)
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{replies[2], replies[1]}) || r.JSON["prev_batch"] == nil {
			t.Fatalf("second page: %s", r.Body)
		}
		r = alice.do(t, "GET", base+"/m.thread?dir=f&limit=3", nil)
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{replies[0], replies[1], replies[2]}) {
			t.Fatalf("forwards: %v", got)
		}
		r = alice.do(t, "GET", base+"/m.thread?dir=f&limit=3&from="+url.QueryEscape(r.JSON["next_batch"].(string)), nil)
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{replies[3], replies[4]}) || r.JSON["next_batch"] != nil {
			t.Fatalf("forwards, last page: %s", r.Body)
		}
		// Relation type and event type.
		r = alice.do(t, "GET", base+"/m.annotation/m.reaction", nil)
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{reaction}) {
			t.Fatalf("m.annotation/m.reaction: %v", got)
		}
		r = alice.do(t, "GET", base+"/m.thread/m.reaction", nil)
		if got := eventIDs(r.JSON["chunk"]); len(got) != 0 {
			t.Fatalf("m.thread/m.reaction: %v", got)
		}
		// recurse reaches the reaction to a reply.
		r = alice.do(t, "GET", base+"/m.annotation?recurse=true", nil)
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{nested, reaction}) || r.JSON["recursion_depth"] == nil {
			t.Fatalf("recurse: %s", r.Body)
		}
		// A sync token works as from.
		s := alice.do(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil)
		after := bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "later", "m.relates_to": thread(root)})
		r = alice.do(t, "GET", base+"?dir=f&from="+url.QueryEscape(s.JSON["next_batch"].(string)), nil)
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{after}) {
			t.Fatalf("from a sync token: %v", got)
		}

		// Errors.
		hearthtest.Expect(t, alice.do(t, "GET", base+"?dir=x", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?limit=-1", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?recurse=maybe", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?from=junk", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(roomID)+"/relations/$nope", nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v1/rooms/!nope:hearth.test/relations/"+url.PathEscape(root), nil), http.StatusNotFound, "M_NOT_FOUND")
		// Eve never joined a room with shared history: the parent is invisible.
		hearthtest.Expect(t, eve.do(t, "GET", base, nil), http.StatusNotFound, "M_NOT_FOUND")
	})
}

func TestBundledAggregations(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		root := alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "root"})
		bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "t1", "m.relates_to": thread(root)})
		latest := bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "t2", "m.relates_to": thread(root)})
		edit := func(u user, body string) string {
			return u.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "* " + body,
				"m.new_content": map[string]any{"body": body}, "m.relates_to": map[string]any{"event_id": root, "rel_type": "m.replace"}})
		}
		edit(alice, "first edit")
		// The newest edit wins by origin_server_ts (ties go to the greater
		// event ID): keep the two apart.
		time.Sleep(5 * time.Millisecond)
		lastEdit := edit(alice, "second edit")
		edit(bob, "not alice's: invalid") // another sender's edit does not count
		// An edit without m.new_content is invalid too.
		alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "bad", "m.relates_to": map[string]any{"event_id": root, "rel_type": "m.replace"}})
		ref := bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "see above", "m.relates_to": map[string]any{"event_id": root, "rel_type": "m.reference"}})

		check := func(where string, ev any) {
			t.Helper()
			rel := path(ev, "unsigned", "m.relations")
			th := path(rel, "m.thread")
			if path(th, "count") != float64(2) || path(th, "latest_event", "event_id") != latest || path(th, "current_user_participated") != true {
				t.Fatalf("%s: m.thread: %v", where, th)
			}
			if path(rel, "m.replace", "event_id") != lastEdit {
				t.Fatalf("%s: m.replace: %v", where, path(rel, "m.replace"))
			}
			if got := eventIDs(path(rel, "m.reference", "chunk")); !sameStrings(got, []string{ref}) {
				t.Fatalf("%s: m.reference: %v", where, got)
			}
		}
		r := alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(root), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		check("/event", r.JSON)
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/context/"+url.PathEscape(root)+"?limit=0", nil)
		check("/context", r.JSON["event"])
		r = alice.messages(t, roomID, "dir=b&limit=50")
		for _, ev := range r.JSON["chunk"].([]any) {
			if path(ev, "event_id") == root {
				check("/messages", ev)
			}
		}
		r = alice.do(t, "GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(`{"room":{"timeline":{"limit":50}}}`), nil)
		found := false
		for _, ev := range path(r.JSON, "rooms", "join", roomID, "timeline", "events").([]any) {
			if path(ev, "event_id") == root {
				check("/sync", ev)
				found = true
			}
		}
		if !found {
			t.Fatalf("root not in sync timeline")
		}
		// Participation is per viewer: a new member did not take part.
		carol := newUser(t, hs, "carol")
		hearthtest.Expect(t, carol.member(t, roomID, "join", nil), http.StatusOK, "")
		r = carol.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(root), nil)
		if path(r.JSON, "unsigned", "m.relations", "m.thread", "current_user_participated") != false {
			t.Fatalf("carol participated? %s", r.Body)
		}
		// A redacted event carries no aggregations.
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape(root)+"/"+nextTxn(), map[string]any{}), http.StatusOK, "")
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape(root), nil)
		if path(r.JSON, "unsigned", "m.relations") != nil {
			t.Fatalf("redacted event has aggregations: %s", r.Body)
		}
	})
}

func TestThreads(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, eve := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "eve")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		rootA := alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "A"})
		rootB := bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "B"})
		rootC := bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "C"})
		bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "in A", "m.relates_to": thread(rootA)})
		bob.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "in C", "m.relates_to": thread(rootC)})
		alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "in B", "m.relates_to": thread(rootB)})
		base := "/_matrix/client/v1/rooms/" + url.PathEscape(roomID) + "/threads"

		r := alice.do(t, "GET", base, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{rootB, rootC, rootA}) {
			t.Fatalf("threads by latest activity: %v", got)
		}
		if path(r.JSON["chunk"].([]any)[0], "unsigned", "m.relations", "m.thread", "count") != float64(1) {
			t.Fatalf("thread roots carry m.thread: %s", r.Body)
		}
		r = alice.do(t, "GET", base+"?limit=2", nil)
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{rootB, rootC}) {
			t.Fatalf("first page: %v", got)
		}
		r = alice.do(t, "GET", base+"?limit=2&from="+url.QueryEscape(r.JSON["next_batch"].(string)), nil)
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{rootA}) {
			t.Fatalf("second page: %v", got)
		}
		// Alice sent A's root and a reply in B; C is bob's alone.
		r = alice.do(t, "GET", base+"?include=participated", nil)
		if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, []string{rootB, rootA}) {
			t.Fatalf("participated: %v", got)
		}
		hearthtest.Expect(t, alice.do(t, "GET", base+"?include=some", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?from=x", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base+"?limit=x", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, eve.do(t, "GET", base, nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v1/rooms/!nope:hearth.test/threads", nil), http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestMessagesFilterByRelType covers MSC3874's rel_types / not_rel_types in
// the /messages filter: an allow list matches only events with one of those
// relations; a deny list drops them and keeps events without a relation.
func TestMessagesFilterByRelType(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		roomID := alice.createRoom(t, nil)
		root := alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "root"})
		threaded := alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "in thread",
			"m.relates_to": map[string]any{"event_id": root, "rel_type": "m.thread"}})
		ref := alice.sendEvent(t, roomID, "m.room.message", map[string]any{"body": "reference",
			"m.relates_to": map[string]any{"event_id": root, "rel_type": "m.reference"}})
		for _, tc := range []struct {
			filter string
			want   []string
		}{
			{`{"types":["m.room.message"],"org.matrix.msc3874.rel_types":["m.thread"]}`, []string{threaded}},
			{`{"types":["m.room.message"],"org.matrix.msc3874.rel_types":["m.thread","m.reference"]}`, []string{threaded, ref}},
			{`{"types":["m.room.message"],"org.matrix.msc3874.not_rel_types":["m.thread"]}`, []string{root, ref}},
			{`{"types":["m.room.message"],"org.matrix.msc3874.not_rel_types":["m.thread","m.reference"]}`, []string{root}},
		} {
			r := alice.messages(t, roomID, "dir=f&limit=50&filter="+url.QueryEscape(tc.filter))
			hearthtest.Expect(t, r, http.StatusOK, "")
			if got := eventIDs(r.JSON["chunk"]); !sameStrings(got, tc.want) {
				t.Errorf("filter %s: got %v, want %v", tc.filter, got, tc.want)
			}
		}
	})
}
