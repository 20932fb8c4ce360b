package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// user is a test user: an ID and a token on a server.
type user struct {
	hs    *hearthtest.Server
	id    string
	token string
}

func newUser(t testing.TB, hs *hearthtest.Server, name string) user {
	id, tok := hs.RegisterUser(t, name)
	return user{hs, id, tok}
}

func (u user) do(t testing.TB, method, path string, body any) hearthtest.Response {
	t.Helper()
	return u.hs.Do(t, method, path, u.token, body)
}

func (u user) createRoom(t testing.TB, body map[string]any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	r := u.do(t, "POST", "/_matrix/client/v3/createRoom", body)
	hearthtest.Expect(t, r, http.StatusOK, "")
	id, _ := r.JSON["room_id"].(string)
	if !strings.HasPrefix(id, "!") {
		t.Fatalf("createRoom: %s", r.Body)
	}
	return id
}

var txnCounter struct {
	sync.Mutex
	n int
}

func nextTxn() string {
	txnCounter.Lock()
	defer txnCounter.Unlock()
	txnCounter.n++
	return fmt.Sprintf("txn%d", txnCounter.n)
}

func (u user) send(t testing.TB, roomID, body string) hearthtest.Response {
	t.Helper()
	return u.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+nextTxn(),
		map[string]any{"msgtype": "m.text", "body": body})
}

func (u user) messages(t *testing.T, roomID, query string) hearthtest.Response {
	t.Helper()
	return u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?"+query, nil)
}

func (u user) member(t testing.TB, roomID, action string, body map[string]any) hearthtest.Response {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	return u.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/"+action, body)
}

func bodies(t *testing.T, r hearthtest.Response) []string {
	t.Helper()
	var out []string
	chunk, _ := r.JSON["chunk"].([]any)
	for _, c := range chunk {
		ev := c.(map[string]any)
		if ev["type"] == "m.room.message" {
			content, _ := ev["content"].(map[string]any)
			b, _ := content["body"].(string)
			out = append(out, b)
		}
	}
	return out
}

func TestCreateSendAndPaginate(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		roomID := alice.createRoom(t, map[string]any{"name": "Test room", "topic": "testing", "preset": "public_chat", "room_alias_name": "test"})
		for i := 0; i < 25; i++ {
			hearthtest.Expect(t, alice.send(t, roomID, fmt.Sprintf("msg %d", i)), http.StatusOK, "")
		}
		// Page backwards through all 25 messages, 10 at a time.
		var got []string
		from := ""
		for page := 0; page < 10; page++ {
			q := "dir=b&limit=10"
			if from != "" {
				q += "&from=" + url.QueryEscape(from)
			}
			r := alice.messages(t, roomID, q)
			hearthtest.Expect(t, r, http.StatusOK, "")
			got = append(got, bodies(t, r)...)
			end, ok := r.JSON["end"].(string)
			if !ok {
				break
			}
			from = end
		}
		if len(got) != 25 || got[0] != "msg 24" || got[24] != "msg 0" {
			t.Fatalf("paginated messages: %d %v", len(got), got)
		}
		// Forwards from the start gives them oldest first, after the state events.
		r := alice.messages(t, roomID, "dir=f&limit=100")
		fwd := bodies(t, r)
		if len(fwd) != 25 || fwd[0] != "msg 0" {
			t.Fatalf("forward messages: %v", fwd)
		}
		// State is readable: name, topic, canonical alias.
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.name/", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["name"] != "Test room" {
			t.Errorf("name: %s", r.Body)
		}
		// public_chat forbids guests by having no m.room.guest_access
		// (absent means forbidden); private_chat lets them join.
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.guest_access/", nil)
		hearthtest.Expect(t, r, http.StatusNotFound, "M_NOT_FOUND")
		private := alice.createRoom(t, map[string]any{"preset": "private_chat"})
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+private+"/state/m.room.guest_access/", nil)
		if r.JSON["guest_access"] != "can_join" {
			t.Errorf("private_chat guest_access: %s", r.Body)
		}
		r = alice.do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#test:hearth.test"), nil)
		if r.JSON["room_id"] != roomID {
			t.Errorf("alias: %s", r.Body)
		}
		r = alice.do(t, "GET", "/_matrix/client/v3/joined_rooms", nil)
		if rooms, _ := r.JSON["joined_rooms"].([]any); len(rooms) != 2 || rooms[0] != roomID && rooms[1] != roomID {
			t.Errorf("joined_rooms: %s", r.Body)
		}
	})
}

func TestTxnIdempotency(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		roomID := alice.createRoom(t, nil)
		path := "/_matrix/client/v3/rooms/" + roomID + "/send/m.room.message/same-txn"
		r1 := alice.do(t, "PUT", path, map[string]any{"body": "once"})
		r2 := alice.do(t, "PUT", path, map[string]any{"body": "once"})
		hearthtest.Expect(t, r1, http.StatusOK, "")
		if r1.JSON["event_id"] != r2.JSON["event_id"] {
			t.Fatalf("retry made a second event: %s vs %s", r1.Body, r2.Body)
		}
		// Another device of the same user has its own transaction scope.
		_, tok2 := hs.RegisterUser(t, "alice2")
		_ = tok2
		if got := len(bodies(t, alice.messages(t, roomID, "limit=50"))); got != 1 {
			t.Fatalf("%d messages after a retried send, want 1", got)
		}
	})
}

func TestSendBadInput(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		bob := newUser(t, hs, "bob")
		roomID := alice.createRoom(t, nil)
		send := func(u user, body string) hearthtest.Response {
			return u.do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/"+nextTxn(), body)
		}
		hearthtest.Expect(t, send(alice, `{"body": 1.5}`), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, send(alice, `{"body": 9007199254740992}`), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, send(alice, `{"body": "x"`), http.StatusBadRequest, "M_NOT_JSON")
		hearthtest.Expect(t, send(alice, `{"body": "`+strings.Repeat("x", 70000)+`"}`), http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		hearthtest.Expect(t, send(bob, `{"body": "not a member"}`), http.StatusForbidden, "M_FORBIDDEN")
		r := alice.do(t, "PUT", "/_matrix/client/v3/rooms/!nope:hearth.test/send/m.room.message/x1", map[string]any{"body": "x"})
		hearthtest.Expect(t, r, http.StatusNotFound, "M_NOT_FOUND")
		r = alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.topic/"+strings.Repeat("k", 256), map[string]any{"topic": "x"})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_BAD_JSON")
		r = alice.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"room_version": "999"})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
		// Nothing partial: only the room's initial events plus zero messages.
		if got := bodies(t, alice.messages(t, roomID, "limit=100")); len(got) != 0 {
			t.Fatalf("failed sends left messages: %v", got)
		}
	})
}

// Membership transitions through the auth rules, for several room versions.
func TestMembershipTransitions(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
		for _, version := range []string{"1", "5", "6", "9", "10", "11"} {
			t.Run("v"+version, func(t *testing.T) {
				// Private room: join needs an invite.
				roomID := alice.createRoom(t, map[string]any{"room_version": version, "preset": "private_chat"})
				steps := []struct {
					who    user
					action string
					body   map[string]any
					status int
				}{
					{bob, "join", nil, http.StatusForbidden},                                   // not invited
					{bob, "invite", map[string]any{"user_id": carol.id}, http.StatusForbidden}, // not a member
					{alice, "invite", map[string]any{"user_id": bob.id}, http.StatusOK},
					{alice, "invite", map[string]any{"user_id": bob.id}, http.StatusOK}, // invite again is fine
					{bob, "join", nil, http.StatusOK},
					{alice, "invite", map[string]any{"user_id": bob.id}, http.StatusForbidden}, // already joined
					{bob, "kick", map[string]any{"user_id": alice.id}, http.StatusForbidden},   // power 0 < kick 50
					{bob, "ban", map[string]any{"user_id": alice.id}, http.StatusForbidden},
					{alice, "kick", map[string]any{"user_id": bob.id, "reason": "bye"}, http.StatusOK},
					{bob, "join", nil, http.StatusForbidden}, // kicked from an invite-only room
					{alice, "ban", map[string]any{"user_id": bob.id}, http.StatusOK},
					{alice, "invite", map[string]any{"user_id": bob.id}, http.StatusForbidden},  // banned
					{alice, "unban", map[string]any{"user_id": carol.id}, http.StatusForbidden}, // not banned
					{alice, "unban", map[string]any{"user_id": bob.id}, http.StatusOK},
					{alice, "invite", map[string]any{"user_id": bob.id}, http.StatusOK},
					{bob, "leave", nil, http.StatusOK}, // rejects the invite
					{bob, "forget", nil, http.StatusOK},
					{alice, "forget", nil, http.StatusBadRequest}, // still joined
				}
				for i, s := range steps {
					r := s.who.member(t, roomID, s.action, s.body)
					if r.Status != s.status {
						t.Fatalf("step %d: %s %s %v: got %d %s, want %d", i, s.who.id, s.action, s.body, r.Status, r.Body, s.status)
					}
				}
				// A public room lets anyone join; a banned user still cannot.
				pub := alice.createRoom(t, map[string]any{"room_version": version, "preset": "public_chat"})
				hearthtest.Expect(t, carol.member(t, pub, "join", nil), http.StatusOK, "")
				hearthtest.Expect(t, alice.member(t, pub, "ban", map[string]any{"user_id": bob.id}), http.StatusOK, "")
				hearthtest.Expect(t, bob.member(t, pub, "join", nil), http.StatusForbidden, "M_FORBIDDEN")
				r := carol.do(t, "GET", "/_matrix/client/v3/rooms/"+pub+"/joined_members", nil)
				joined, _ := r.JSON["joined"].(map[string]any)
				if len(joined) != 2 || joined[alice.id] == nil || joined[carol.id] == nil {
					t.Fatalf("joined_members: %s", r.Body)
				}
				r = carol.do(t, "GET", "/_matrix/client/v3/rooms/"+pub+"/members?membership=ban", nil)
				if chunk, _ := r.JSON["chunk"].([]any); len(chunk) != 1 {
					t.Fatalf("members?membership=ban: %s", r.Body)
				}
			})
		}
	})
}

func TestPowerLevels(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		topic := "/_matrix/client/v3/rooms/" + roomID + "/state/m.room.topic/"
		hearthtest.Expect(t, bob.do(t, "PUT", topic, map[string]any{"topic": "bob's"}), http.StatusForbidden, "M_FORBIDDEN")
		// Alice raises bob to 50 (state_default): now he may.
		r := alice.do(t, "GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.power_levels/", nil)
		pl := r.JSON
		pl["users"].(map[string]any)[bob.id] = 50
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.power_levels/", pl), http.StatusOK, "")
		hearthtest.Expect(t, bob.do(t, "PUT", topic, map[string]any{"topic": "bob's"}), http.StatusOK, "")
		// But he cannot give himself 100 or change power levels (needs 100).
		pl["users"].(map[string]any)[bob.id] = 100
		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.power_levels/", pl), http.StatusForbidden, "M_FORBIDDEN")
		// power_level_content_override at creation.
		room2 := alice.createRoom(t, map[string]any{"power_level_content_override": map[string]any{"events_default": 100}})
		hearthtest.Expect(t, alice.member(t, room2, "invite", map[string]any{"user_id": bob.id}), http.StatusOK, "")
		hearthtest.Expect(t, bob.member(t, room2, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, bob.send(t, room2, "hi"), http.StatusForbidden, "M_FORBIDDEN")
	})
}

func TestRedaction(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		aliceMsg := alice.send(t, roomID, "alice's secret").JSON["event_id"].(string)
		bobMsg := bob.send(t, roomID, "bob's").JSON["event_id"].(string)
		redact := func(u user, id string) hearthtest.Response {
			return u.do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/redact/"+url.PathEscape(id)+"/"+nextTxn(), map[string]any{"reason": "oops"})
		}
		hearthtest.Expect(t, redact(bob, aliceMsg), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, redact(bob, bobMsg), http.StatusOK, "")
		hearthtest.Expect(t, redact(alice, aliceMsg), http.StatusOK, "")
		for _, id := range []string{aliceMsg, bobMsg} {
			r := bob.do(t, "GET", "/_matrix/client/v3/rooms/"+roomID+"/event/"+url.PathEscape(id), nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			if c, _ := r.JSON["content"].(map[string]any); len(c) != 0 {
				t.Fatalf("redacted event still has content: %s", r.Body)
			}
			if u, _ := r.JSON["unsigned"].(map[string]any); u["redacted_because"] == nil {
				t.Fatalf("no redacted_because: %s", r.Body)
			}
		}
		// Redactions through /send, with redacts in the content, work in
		// every room version (v1.18), and, as through /redact, only for
		// one's own events without the redact power.
		for _, version := range []string{"10", "11"} {
			room := alice.createRoom(t, map[string]any{"preset": "public_chat", "room_version": version})
			hearthtest.Expect(t, bob.member(t, room, "join", nil), http.StatusOK, "")
			mine := bob.send(t, room, "bob's "+version).JSON["event_id"].(string)
			theirs := alice.send(t, room, "alice's "+version).JSON["event_id"].(string)
			send := func(id string) hearthtest.Response {
				return bob.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.redaction/"+nextTxn(), map[string]any{"redacts": id})
			}
			hearthtest.Expect(t, send(mine), http.StatusOK, "")
			hearthtest.Expect(t, send(theirs), http.StatusForbidden, "M_FORBIDDEN")
			for id, redacted := range map[string]bool{mine: true, theirs: false} {
				r := alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/event/"+url.PathEscape(id), nil)
				c, _ := r.JSON["content"].(map[string]any)
				if (len(c) == 0) != redacted {
					t.Errorf("room version %s: event %s redacted=%v: %s", version, id, len(c) == 0, r.Body)
				}
			}
		}
	})
}

// Who may read history, by history_visibility and membership.
func TestHistoryVisibility(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		cases := []struct {
			visibility   string
			beforeInvite bool // bob sees messages sent before he was invited
			whileInvited bool // bob sees messages sent while he was invited
			beforeJoin   bool
		}{
			{"world_readable", true, true, true},
			{"shared", true, true, true},
			{"invited", false, true, true},
			{"joined", false, false, false},
		}
		for _, c := range cases {
			t.Run(c.visibility, func(t *testing.T) {
				roomID := alice.createRoom(t, map[string]any{"initial_state": []map[string]any{
					{"type": "m.room.history_visibility", "state_key": "", "content": map[string]any{"history_visibility": c.visibility}},
				}})
				alice.send(t, roomID, "before invite")
				if c.visibility == "world_readable" {
					r := bob.messages(t, roomID, "limit=50")
					hearthtest.Expect(t, r, http.StatusOK, "")
					if got := bodies(t, r); len(got) != 1 {
						t.Fatalf("world_readable, not joined: %v", got)
					}
				} else {
					hearthtest.Expect(t, bob.messages(t, roomID, "limit=50"), http.StatusForbidden, "M_FORBIDDEN")
				}
				hearthtest.Expect(t, alice.member(t, roomID, "invite", map[string]any{"user_id": bob.id}), http.StatusOK, "")
				alice.send(t, roomID, "while invited")
				hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
				alice.send(t, roomID, "after join")
				got := strings.Join(bodies(t, bob.messages(t, roomID, "limit=50")), ",")
				want := []string{"after join"}
				if c.whileInvited {
					want = append(want, "while invited")
				}
				if c.beforeInvite {
					want = append(want, "before invite")
				}
				if got != strings.Join(want, ",") {
					t.Fatalf("bob sees %q, want %q", got, strings.Join(want, ","))
				}
				// After leaving, bob sees nothing new.
				hearthtest.Expect(t, bob.member(t, roomID, "leave", nil), http.StatusOK, "")
				alice.send(t, roomID, "after leave")
				got = strings.Join(bodies(t, bob.messages(t, roomID, "limit=50")), ",")
				if c.visibility != "world_readable" && strings.Contains(got, "after leave") {
					t.Fatalf("bob sees messages after he left: %q", got)
				}
			})
		}
	})
}

// 50 concurrent senders in one room: every event accepted, one linear DAG,
// no transaction lost.
func TestConcurrentSenders(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		var users []user
		for i := 0; i < 50; i++ {
			u := newUser(t, hs, fmt.Sprintf("sender%d", i))
			hearthtest.Expect(t, u.member(t, roomID, "join", nil), http.StatusOK, "")
			users = append(users, u)
		}
		var wg sync.WaitGroup
		ids := make([]string, len(users))
		errs := make(chan string, len(users))
		for i, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := u.hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/c1", u.token, map[string]any{"body": u.id})
				if r.Status != http.StatusOK {
					errs <- string(r.Body)
					return
				}
				ids[i], _ = r.JSON["event_id"].(string)
			}()
		}
		wg.Wait()
		close(errs)
		for e := range errs {
			t.Fatalf("concurrent send failed: %s", e)
		}
		expectLinearDAG(t, hs, roomID)
		seen := map[string]bool{}
		for _, id := range ids {
			if id == "" || seen[id] {
				t.Fatalf("missing or duplicate event id %q", id)
			}
			seen[id] = true
		}
		if got := len(bodies(t, alice.messages(t, roomID, "limit=100"))); got != 50 {
			t.Fatalf("%d messages, want 50", got)
		}
	})
}

// expectLinearDAG checks that each event of the room (up to 1,000) has the
// event before it as its only prev_event.
func expectLinearDAG(t *testing.T, hs *hearthtest.Server, roomID string) {
	t.Helper()
	end, err := hs.Rooms.End(t.Context(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	evs, _, err := hs.Rooms.Page(t.Context(), roomID, end, true, 1000)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(evs); i++ {
		prev := evs[i].PDU.PrevEventIDs()
		if len(prev) != 1 || prev[0] != evs[i+1].EventID {
			t.Fatalf("event %s has prev_events %v, want [%s]", evs[i].EventID, prev, evs[i+1].EventID)
		}
	}
}

// Sends that wait for a room are committed together; one that fails (not a
// member, too large) must fail alone, a retry racing its first attempt
// must get the same event, and the DAG must stay linear.
func TestConcurrentSendsFailAlone(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		var members, outsiders []user
		for i := 0; i < 30; i++ {
			u := newUser(t, hs, fmt.Sprintf("member%d", i))
			hearthtest.Expect(t, u.member(t, roomID, "join", nil), http.StatusOK, "")
			members = append(members, u)
			outsiders = append(outsiders, newUser(t, hs, fmt.Sprintf("outsider%d", i)))
		}
		huge := strings.Repeat("x", 70000)
		type result struct {
			who, kind string
			r         hearthtest.Response
		}
		results := make(chan result, 4*len(members))
		var wg sync.WaitGroup
		send := func(u user, kind, txn, body string) {
			defer wg.Done()
			r := u.hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/"+txn, u.token, map[string]any{"body": body})
			results <- result{u.id, kind, r}
		}
		for i := range members {
			wg.Add(4)
			go send(members[i], "ok", "t1", members[i].id)
			go send(members[i], "ok", "t1", members[i].id) // the same transaction twice at once
			go send(outsiders[i], "forbidden", "t1", "not a member")
			go send(members[i], "large", "t2", huge)
		}
		wg.Wait()
		close(results)
		eventOf := map[string]string{}
		for res := range results {
			switch res.kind {
			case "ok":
				hearthtest.Expect(t, res.r, http.StatusOK, "")
				id, _ := res.r.JSON["event_id"].(string)
				if prev, ok := eventOf[res.who]; ok && prev != id {
					t.Fatalf("one transaction of %s gave two events: %s and %s", res.who, prev, id)
				}
				eventOf[res.who] = id
			case "forbidden":
				hearthtest.Expect(t, res.r, http.StatusForbidden, "M_FORBIDDEN")
			case "large":
				hearthtest.Expect(t, res.r, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
			}
		}
		expectLinearDAG(t, hs, roomID)
		if got := len(bodies(t, alice.messages(t, roomID, "limit=1000"))); got != len(members) {
			t.Fatalf("%d messages, want %d", got, len(members))
		}
	})
}

// A display name change reaches the member event of every joined room.
func TestProfileChangeUpdatesMembership(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		room1, room2 := alice.createRoom(t, nil), alice.createRoom(t, nil)
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/profile/"+alice.id+"/displayname", map[string]any{"displayname": "Alice A."}), http.StatusOK, "")
		for _, roomID := range []string{room1, room2} {
			r := alice.do(t, "GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.member/"+alice.id, nil)
			if r.JSON["displayname"] != "Alice A." || r.JSON["membership"] != "join" {
				t.Fatalf("member event after profile change: %s", r.Body)
			}
		}
	})
}

// TestStateFormatEvent: GET .../state/{type}/{key}?format=event (v1.16)
// answers the whole client event, not its content, and a state event
// that replaced another carries unsigned.replaces_state (v1.19) with
// prev_content.
func TestStateFormatEvent(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		roomID := alice.createRoom(t, nil)
		first := alice.putState(t, roomID, "m.room.topic", "", map[string]any{"topic": "one"})
		second := alice.putState(t, roomID, "m.room.topic", "", map[string]any{"topic": "two"})
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/state/m.room.topic/"

		if r := alice.do(t, "GET", path, nil); r.Status != http.StatusOK || r.JSON["topic"] != "two" || r.JSON["event_id"] != nil {
			t.Fatalf("state content: %d %s", r.Status, r.Body)
		}
		r := alice.do(t, "GET", path+"?format=event", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		content, _ := r.JSON["content"].(map[string]any)
		unsigned, _ := r.JSON["unsigned"].(map[string]any)
		prev, _ := unsigned["prev_content"].(map[string]any)
		if r.JSON["event_id"] != second || r.JSON["type"] != "m.room.topic" || r.JSON["state_key"] != "" || r.JSON["sender"] != alice.id ||
			content["topic"] != "two" || unsigned["replaces_state"] != first || prev["topic"] != "one" {
			t.Fatalf("state as an event: %s", r.Body)
		}
		// The room's first name replaces nothing.
		name := alice.putState(t, roomID, "m.room.name", "", map[string]any{"name": "Room"})
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.name/?format=event", nil)
		if u, _ := r.JSON["unsigned"].(map[string]any); r.JSON["event_id"] != name || u["replaces_state"] != nil {
			t.Fatalf("first name as an event: %s", r.Body)
		}
	})
}

// TestPutSameStateAgain: the same state from the same sender again is a
// no-op that answers with the event already there; other content is a new
// event.
func TestPutSameStateAgain(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		roomID := alice.createRoom(t, nil)
		path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/state/org.example.thing/k"
		put := func(v string) string {
			r := alice.do(t, "PUT", path, map[string]any{"v": v})
			hearthtest.Expect(t, r, http.StatusOK, "")
			id, _ := r.JSON["event_id"].(string)
			return id
		}
		first := put("a")
		if again := put("a"); again != first {
			t.Errorf("the same state again: event %s, want the existing %s", again, first)
		}
		if other := put("b"); other == first || other == "" {
			t.Errorf("other content: event %q, want a new one", other)
		}
	})
}
