package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/syncstream"
)

func (u user) sync(t *testing.T, since string, query string) hearthtest.Response {
	t.Helper()
	q := url.Values{}
	if since != "" {
		q.Set("since", since)
	}
	path := "/_matrix/client/v3/sync?" + q.Encode()
	if query != "" {
		path += "&" + query
	}
	r := u.do(t, "GET", path, nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r
}

func joinedRoom(t *testing.T, r hearthtest.Response, roomID string) map[string]any {
	t.Helper()
	rooms, _ := r.JSON["rooms"].(map[string]any)
	join, _ := rooms["join"].(map[string]any)
	room, _ := join[roomID].(map[string]any)
	return room
}

func timelineBodies(room map[string]any) []string {
	tl, _ := room["timeline"].(map[string]any)
	evs, _ := tl["events"].([]any)
	var out []string
	for _, e := range evs {
		ev := e.(map[string]any)
		if ev["type"] == "m.room.message" {
			out = append(out, ev["content"].(map[string]any)["body"].(string))
		}
	}
	return out
}

func TestSyncInitialAndIncremental(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "sync test"})
		alice.send(t, roomID, "first")
		r := alice.sync(t, "", "")
		room := joinedRoom(t, r, roomID)
		if room == nil {
			t.Fatalf("initial sync lacks the room: %s", r.Body)
		}
		if got := timelineBodies(room); len(got) != 1 || got[0] != "first" {
			t.Fatalf("initial timeline: %v", got)
		}
		// The room's state is in state plus the timeline (here all of it
		// fits in the timeline).
		seen := map[string]bool{}
		for _, part := range []any{room["state"], room["timeline"]} {
			for _, e := range part.(map[string]any)["events"].([]any) {
				seen[e.(map[string]any)["type"].(string)] = true
			}
		}
		if !seen["m.room.create"] || !seen["m.room.name"] || !seen["m.room.power_levels"] {
			t.Fatalf("initial sync lacks room state: %s", r.Body)
		}
		// With a timeline limit of 1 the rest comes as state.
		r1 := alice.sync(t, "", `filter={"room":{"timeline":{"limit":1}}}`)
		if st := joinedRoom(t, r1, roomID)["state"].(map[string]any)["events"].([]any); len(st) < 6 {
			t.Fatalf("limited initial sync has %d state events", len(st))
		}
		next := r.JSON["next_batch"].(string)
		// Nothing new: an incremental sync with no timeout is empty.
		r = alice.sync(t, next, "timeout=0")
		if joinedRoom(t, r, roomID) != nil {
			t.Fatalf("empty incremental sync lists the room: %s", r.Body)
		}
		// Bob is invited: his sync shows the invite with stripped state.
		hearthtest.Expect(t, alice.member(t, roomID, "invite", map[string]any{"user_id": bob.id}), http.StatusOK, "")
		rb := bob.sync(t, "", "")
		inv, _ := path(rb.JSON, "rooms", "invite", roomID).(map[string]any)
		stripped := inv["invite_state"].(map[string]any)["events"].([]any)
		types := map[string]bool{}
		for _, e := range stripped {
			types[e.(map[string]any)["type"].(string)] = true
		}
		if !types["m.room.create"] || !types["m.room.member"] || !types["m.room.name"] {
			t.Fatalf("invite stripped state lacks create/member/name: %s", rb.Body)
		}
		// A long-poll wakes when a message arrives.
		next = alice.sync(t, next, "timeout=0").JSON["next_batch"].(string)
		done := make(chan hearthtest.Response, 1)
		go func() { done <- alice.sync(t, next, "timeout=10000") }()
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		alice.send(t, roomID, "second")
		select {
		case r = <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("long-poll did not wake")
		}
		if waited := time.Since(start); waited > 3*time.Second {
			t.Fatalf("long-poll woke after %v", waited)
		}
		if got := timelineBodies(joinedRoom(t, r, roomID)); len(got) != 1 || got[0] != "second" {
			t.Fatalf("incremental timeline: %v (%s)", got, r.Body)
		}
	})
}

// A device that was away while many messages arrived gets a limited
// timeline and can page back through the rest with prev_batch.
func TestSyncCatchUpAfterOffline(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		bobToken := bob.sync(t, "", "").JSON["next_batch"].(string)
		const n = 500
		for i := 0; i < n; i++ {
			hearthtest.Expect(t, alice.send(t, roomID, fmt.Sprintf("m%d", i)), http.StatusOK, "")
		}
		r := bob.sync(t, bobToken, "")
		room := joinedRoom(t, r, roomID)
		tl := room["timeline"].(map[string]any)
		if tl["limited"] != true {
			t.Fatalf("timeline of 500 new messages is not limited")
		}
		got := timelineBodies(room)
		prev := tl["prev_batch"].(string)
		for page := 0; page < 100 && prev != ""; page++ {
			mr := bob.messages(t, roomID, "dir=b&limit=50&from="+url.QueryEscape(prev))
			older := bodies(t, mr)
			for i, j := 0, len(older)-1; i < j; i, j = i+1, j-1 {
				older[i], older[j] = older[j], older[i]
			}
			got = append(older, got...)
			prev, _ = mr.JSON["end"].(string)
		}
		if len(got) != n {
			t.Fatalf("caught up with %d messages, want %d", len(got), n)
		}
		for i, body := range got {
			if body != fmt.Sprintf("m%d", i) {
				t.Fatalf("message %d is %q: order or duplicates wrong", i, body)
			}
		}
	})
}

func TestSyncBadInput(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	alice := newUser(t, hs, "alice")
	hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/sync?since=garbage", nil), http.StatusBadRequest, "M_INVALID_PARAM")
	hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/sync?filter=12345", nil), http.StatusNotFound, "M_NOT_FOUND")
	hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/sync?filter=%7Bnot", nil), http.StatusBadRequest, "M_NOT_JSON")
	hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/sync?timeout=abc", nil), http.StatusBadRequest, "M_INVALID_PARAM")
}

// A room the user left appears in rooms.leave with the leave event, in an
// incremental sync and, with include_leave, in an initial one.
func TestSyncLeaveSection(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		tok := bob.sync(t, "", "").JSON["next_batch"].(string)
		hearthtest.Expect(t, bob.member(t, roomID, "leave", nil), http.StatusOK, "")
		hasLeave := func(r hearthtest.Response) bool {
			left, _ := path(r.JSON, "rooms", "leave", roomID).(map[string]any)
			if left == nil {
				return false
			}
			for _, e := range left["timeline"].(map[string]any)["events"].([]any) {
				ev := e.(map[string]any)
				if ev["type"] == "m.room.member" && ev["state_key"] == bob.id && ev["content"].(map[string]any)["membership"] == "leave" {
					return true
				}
			}
			return false
		}
		if r := bob.sync(t, tok, "timeout=5000"); !hasLeave(r) {
			t.Fatalf("incremental sync lacks the leave: %s", r.Body)
		}
		if r := bob.sync(t, "", `filter={"room":{"include_leave":true}}`); !hasLeave(r) {
			t.Fatalf("include_leave initial sync lacks the leave: %s", r.Body)
		}
		if r := bob.sync(t, "", ""); hasLeave(r) {
			t.Fatalf("initial sync without include_leave lists the left room")
		}
		// A kick or a ban shows even without include_leave.
		carol := newUser(t, hs, "carol")
		for _, how := range []string{"kick", "ban"} {
			kicked := alice.createRoom(t, map[string]any{"preset": "public_chat"})
			hearthtest.Expect(t, carol.member(t, kicked, "join", nil), http.StatusOK, "")
			hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(kicked)+"/"+how, map[string]any{"user_id": carol.id}), http.StatusOK, "")
			r := carol.sync(t, "", "")
			left, _ := r.JSON["rooms"].(map[string]any)["leave"].(map[string]any)[kicked].(map[string]any)
			if left == nil {
				t.Fatalf("initial sync without include_leave lacks the room carol was removed from (%s): %s", how, r.Body)
			}
		}
		// /members of the left room shows bob as having left.
		r := bob.do(t, "GET", "/_matrix/client/v3/rooms/"+roomID+"/members", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		for _, e := range r.JSON["chunk"].([]any) {
			ev := e.(map[string]any)
			if ev["state_key"] == bob.id && ev["content"].(map[string]any)["membership"] != "leave" {
				t.Fatalf("bob's membership in /members after leaving: %v", ev["content"])
			}
		}
		hearthtest.Expect(t, bob.do(t, "GET", "/_matrix/client/v3/rooms/"+roomID+"/joined_members", nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, bob.do(t, "GET", "/_matrix/client/v3/rooms/!nope:hearth.test/messages", nil), http.StatusForbidden, "M_FORBIDDEN")
	})
}

// stateKeys lists a sync section's state events as "type|state_key".
func stateKeys(section any) map[string]string {
	out := map[string]string{}
	evs, _ := path(section, "events").([]any)
	for _, e := range evs {
		ev := e.(map[string]any)
		out[fmt.Sprint(ev["type"], "|", ev["state_key"])] = fmt.Sprint(ev["event_id"])
	}
	return out
}

// TestSyncStateAfter covers use_state_after (spec v1.16): state_after
// replaces state and runs to the end of the timeline, repeating state
// events that are in the timeline; lazy loading still trims members.
func TestSyncStateAfter(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		for _, u := range []user{bob, carol} {
			hearthtest.Expect(t, u.member(t, roomID, "join", nil), http.StatusOK, "")
		}
		topic := alice.putState(t, roomID, "m.room.topic", "", map[string]any{"topic": "first"})

		// Initial sync: the full state at the end, timeline state included.
		r := bob.sync(t, "", "use_state_after=true")
		room := joinedRoom(t, r, roomID)
		if _, ok := room["state"]; ok {
			t.Fatalf("state must be omitted with use_state_after: %s", r.Body)
		}
		got := stateKeys(room["state_after"])
		for _, k := range []string{"m.room.create|", "m.room.member|" + alice.id, "m.room.member|" + bob.id, "m.room.member|" + carol.id} {
			if got[k] == "" {
				t.Errorf("initial state_after lacks %s: %v", k, got)
			}
		}
		if got["m.room.topic|"] != topic {
			t.Errorf("state_after topic = %q, want %q (in the timeline too)", got["m.room.topic|"], topic)
		}
		since, _ := r.JSON["next_batch"].(string)

		// Incremental: a state change in the timeline appears in state_after.
		topic2 := alice.putState(t, roomID, "m.room.topic", "", map[string]any{"topic": "second"})
		alice.send(t, roomID, "hello")
		r = bob.sync(t, since, "use_state_after=true")
		got = stateKeys(joinedRoom(t, r, roomID)["state_after"])
		if len(got) != 1 || got["m.room.topic|"] != topic2 {
			t.Fatalf("incremental state_after = %v, want only the new topic %s", got, topic2)
		}
		since, _ = r.JSON["next_batch"].(string)
		// A message alone changes no state: state_after is present and empty.
		alice.send(t, roomID, "again")
		r = bob.sync(t, since, "use_state_after=true")
		sa, ok := joinedRoom(t, r, roomID)["state_after"].(map[string]any)
		if !ok || len(stateKeys(sa)) != 0 {
			t.Fatalf("state_after after a message: %s", r.Body)
		}

		// Lazy loading: only the timeline's senders (and the syncing user).
		filter := url.QueryEscape(`{"room":{"state":{"lazy_load_members":true},"timeline":{"limit":1}}}`)
		got = stateKeys(joinedRoom(t, bob.sync(t, "", "use_state_after=true&filter="+filter), roomID)["state_after"])
		if got["m.room.member|"+alice.id] == "" || got["m.room.member|"+bob.id] == "" || got["m.room.member|"+carol.id] != "" {
			t.Fatalf("lazy-loaded state_after members: %v", got)
		}

		// Without the parameter: state, never state_after.
		room = joinedRoom(t, bob.sync(t, "", ""), roomID)
		if _, ok := room["state_after"]; ok || room["state"] == nil {
			t.Fatalf("default sync must use state: %v", room)
		}
		hearthtest.Expect(t, bob.do(t, "GET", "/_matrix/client/v3/sync?use_state_after=yes", nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// A sync token from a process that is ahead of this one (several processes
// on one PostgreSQL, round-robin behind a balancer) names positions this
// process has not heard of yet. Forced here by a token ahead of the
// server: next_batch never goes behind it on any stream, so the client is
// not sent the same events again (typing and presence positions compare
// across processes too).
func TestSyncNeverGoesBehindSince(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		roomID := alice.createRoom(t, map[string]any{"name": "ahead"})
		alice.send(t, roomID, "before")
		first := alice.sync(t, "", "")
		cur, err := syncstream.ParseToken(first.JSON["next_batch"].(string))
		if err != nil {
			t.Fatal(err)
		}
		ahead := cur
		ahead.Events += 5
		ahead.AccountData += 3
		ahead.Receipts += 2
		ahead.ToDevice += 4
		ahead.DeviceLists += 6
		ahead.Typing += 100
		r := alice.sync(t, ahead.String(), "timeout=0")
		next, err := syncstream.ParseToken(r.JSON["next_batch"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if ahead.After(next) {
			t.Fatalf("next_batch %s went behind since %s", next, ahead)
		}
		if next.Typing != ahead.Typing {
			t.Fatalf("typing position %d, want the token's %d", next.Typing, ahead.Typing)
		}
		if room := joinedRoom(t, r, roomID); room != nil && len(timelineBodies(room)) > 0 {
			t.Fatalf("a sync from a token ahead of the server repeated events: %v", timelineBodies(room))
		}
	})
}
