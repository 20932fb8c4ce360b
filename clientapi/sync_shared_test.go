package clientapi_test

import (
	"maps"
	"net/http"
	"net/url"
	"reflect"
	"strconv"
	"sync"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestSyncSharedBundlesStayPerViewer: the members of a room woken by one
// message share its bundled aggregations (rooms.FormatAt), but what is
// a viewer's own is not shared: the transaction_id goes to the sending
// device only, thread participation is each member's, and an edit, a
// thread reply or a redaction after the first format shows in the next
// sync of every member that carries the event.
func TestSyncSharedBundlesStayPerViewer(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		phone := newUser(t, hs, "alice")
		laptop := phone.login(t, "alice")
		bob, carol := newUser(t, hs, "bob"), newUser(t, hs, "carol")
		roomID := phone.createRoom(t, map[string]any{"preset": "public_chat"})
		for _, u := range []user{bob, carol} {
			hearthtest.Expect(t, u.member(t, roomID, "join", nil), http.StatusOK, "")
		}
		type receiver struct {
			name string
			u    user
			// own: this device sent the message and edit; thread: took part in the thread.
			own, thread bool
		}
		receivers := []receiver{{"carol", carol, false, false}, {"alice's laptop", laptop, false, true}, {"bob", bob, false, true}, {"alice's phone", phone, true, true}}
		// Timelines only (hearth-bench's filter): presence does not wake.
		const filter = fanoutFilter
		syncFrom := func(u user, since string, timeout int) hearthtest.Response {
			t.Helper()
			q := "/_matrix/client/v3/sync?filter=" + url.QueryEscape(filter) + "&timeout=" + strconv.Itoa(timeout)
			if since != "" {
				q += "&since=" + url.QueryEscape(since)
			}
			r := u.do(t, "GET", q, nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r
		}
		eventIn := func(r hearthtest.Response, id string) map[string]any {
			evs, _ := path(r.JSON, "rooms", "join", roomID, "timeline", "events").([]any)
			for _, ev := range evs {
				if m, _ := ev.(map[string]any); m["event_id"] == id {
					return m
				}
			}
			return nil
		}
		since := make([]string, len(receivers))
		for i, rc := range receivers {
			since[i] = syncFrom(rc.u, "", 0).JSON["next_batch"].(string)
		}

		// Every receiver long-polls; one message wakes them all.
		woken := make([]hearthtest.Response, len(receivers))
		var wg sync.WaitGroup
		for i, rc := range receivers {
			wg.Go(func() { woken[i] = syncFrom(rc.u, since[i], 30000) })
		}
		r := phone.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/root-txn", map[string]any{"msgtype": "m.text", "body": "root"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		root := r.JSON["event_id"].(string)
		wg.Wait()
		for i, rc := range receivers {
			ev := eventIn(woken[i], root)
			if ev == nil {
				t.Fatalf("%s: woken without the message: %s", rc.name, woken[i].Body)
			}
			if txn, has := path(ev, "unsigned", "transaction_id").(string); has != rc.own || rc.own && txn != "root-txn" {
				t.Errorf("%s: transaction_id %q (shown %v)", rc.name, txn, has)
			}
			if rel := path(ev, "unsigned", "m.relations"); rel != nil {
				t.Errorf("%s: a new message with relations: %v", rc.name, rel)
			}
		}
		// The same syncs again (nothing new: the same position) are
		// served what the woken ones read (those may have shared one
		// reading in flight instead).
		before := hs.Rooms.CacheStats()
		for i, rc := range receivers {
			if again := eventIn(syncFrom(rc.u, since[i], 0), root); !reflect.DeepEqual(withoutAge(again), withoutAge(eventIn(woken[i], root))) {
				t.Errorf("%s: the same sync again differs: %v, then %v", rc.name, eventIn(woken[i], root), again)
			}
		}
		for _, name := range []string{"bundles", "recent"} {
			if hits := hs.Rooms.CacheStats()[name].Hits - before[name].Hits; hits != int64(len(receivers)) {
				t.Errorf("%s: %d cache hits for %d syncs at one position", name, hits, len(receivers))
			}
		}

		// After the first format: a thread reply from bob and an edit from
		// alice's phone. The next sync carrying the root shows both.
		bob.threadReply(t, roomID, root, "reply")
		r = phone.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/edit-txn", map[string]any{"msgtype": "m.text", "body": "* edited",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "edited"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": root}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		edit := r.JSON["event_id"].(string)
		for i, rc := range receivers {
			ev := eventIn(syncFrom(rc.u, since[i], 0), root)
			if got := path(ev, "unsigned", "m.relations", "m.replace", "event_id"); got != edit {
				t.Fatalf("%s: m.replace %v, want the edit", rc.name, got)
			}
			if txn, has := path(ev, "unsigned", "m.relations", "m.replace", "unsigned", "transaction_id").(string); has != rc.own || rc.own && txn != "edit-txn" {
				t.Errorf("%s: the bundled edit's transaction_id %q (shown %v)", rc.name, txn, has)
			}
			if p := path(ev, "unsigned", "m.relations", "m.thread", "current_user_participated"); p != rc.thread {
				t.Errorf("%s: current_user_participated %v, want %v", rc.name, p, rc.thread)
			}
		}

		// The edit is redacted: gone from the next sync of everyone.
		hearthtest.Expect(t, phone.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape(edit)+"/"+nextTxn(), map[string]any{}), http.StatusOK, "")
		for i, rc := range receivers {
			ev := eventIn(syncFrom(rc.u, since[i], 0), root)
			if rel := path(ev, "unsigned", "m.relations", "m.replace"); rel != nil {
				t.Errorf("%s: the redacted edit is still bundled: %v", rc.name, rel)
			}
			if path(ev, "unsigned", "m.relations", "m.thread", "count") != float64(1) {
				t.Errorf("%s: m.thread %v", rc.name, path(ev, "unsigned", "m.relations", "m.thread"))
			}
		}
	})
}

// TestLeftRoomTimelineAfterLeave: a left room's timeline ends at the leave,
// so every sync showing it asks at the leave's position, however long
// after: what the syncs there share must still follow a redaction made
// after the first of them, and a bundle holds only what came up to the
// leave (a later edit is not the former member's to see).
func TestLeftRoomTimelineAfterLeave(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		msg := alice.sendEvent(t, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "regrettable"})
		hearthtest.Expect(t, bob.member(t, roomID, "leave", nil), http.StatusOK, "")
		leftEvent := func() map[string]any {
			t.Helper()
			r := bob.sync(t, "", `filter={"room":{"include_leave":true,"timeline":{"limit":50}}}`)
			evs, _ := path(r.JSON, "rooms", "leave", roomID, "timeline", "events").([]any)
			for _, ev := range evs {
				if m, _ := ev.(map[string]any); m["event_id"] == msg {
					return m
				}
			}
			t.Fatalf("the message is not in the left room's timeline: %s", r.Body)
			return nil
		}
		alice.sendEvent(t, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* better",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "better"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": msg}})
		if ev := leftEvent(); path(ev, "content", "body") != "regrettable" || path(ev, "unsigned", "m.relations") != nil {
			t.Fatalf("an edit made after the leave is bundled: %v", ev)
		}
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/redact/"+url.PathEscape(msg)+"/"+nextTxn(), map[string]any{}), http.StatusOK, "")
		ev := leftEvent()
		if body := path(ev, "content", "body"); body != nil {
			t.Fatalf("the redacted message still has its body %q", body)
		}
		if path(ev, "unsigned", "redacted_because", "type") != "m.room.redaction" {
			t.Fatalf("no redacted_because: %v", path(ev, "unsigned"))
		}
	})
}

// withoutAge is a client event without unsigned.age, which moves.
func withoutAge(ev map[string]any) map[string]any {
	out := maps.Clone(ev)
	if u, ok := ev["unsigned"].(map[string]any); ok {
		u = maps.Clone(u)
		delete(u, "age")
		out["unsigned"] = u
	}
	return out
}
