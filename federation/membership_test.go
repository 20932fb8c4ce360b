package federation_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// syncUntil syncs as u from *since until cond holds for a response, or
// fails; *since moves on to the next batch.
func (u fedUser) syncUntil(t *testing.T, since *string, what string, cond func(hearthtest.Response) bool) hearthtest.Response {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		path := "/_matrix/client/v3/sync?timeout=1000"
		if *since != "" {
			path += "&since=" + url.QueryEscape(*since)
		}
		r := u.do(t, "GET", path, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		*since, _ = r.JSON["next_batch"].(string)
		if cond(r) {
			return r
		}
	}
	t.Fatalf("%s: never saw %s", u.id, what)
	return hearthtest.Response{}
}

// roomIn reports whether sync's rooms.<section> holds roomID.
func roomIn(r hearthtest.Response, section, roomID string) bool {
	rooms, _ := r.JSON["rooms"].(map[string]any)
	sec, _ := rooms[section].(map[string]any)
	_, ok := sec[roomID]
	return ok
}

// waitMembership polls u's view of target's membership in a room.
func (u fedUser) waitMembership(t *testing.T, roomID, target, membership string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	var r hearthtest.Response
	for time.Now().Before(deadline) {
		r = u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.member/"+url.PathEscape(target), nil)
		if r.Status == http.StatusOK && r.JSON["membership"] == membership {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s never saw %s as %s in %s: %d %s", u.id, target, membership, roomID, r.Status, r.Body)
}

func (u fedUser) createRoom(t *testing.T, body map[string]any) string {
	t.Helper()
	r := u.do(t, "POST", "/_matrix/client/v3/createRoom", body)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["room_id"].(string)
}

// A user on A rejects an invite to a room on B: the leave goes through B
// (make_leave/send_leave), B sees it, and A's sync moves the room from
// invite to leave.
func TestRejectRemoteInvite(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "private_chat"})
		r := bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": alice.id})
		hearthtest.Expect(t, r, http.StatusOK, "")
		since := ""
		alice.syncUntil(t, &since, "the invite", func(r hearthtest.Response) bool { return roomIn(r, "invite", roomID) })

		r = alice.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{"reason": "no thanks"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		bob.waitMembership(t, roomID, alice.id, "leave")
		r = alice.syncUntil(t, &since, "the rejection", func(r hearthtest.Response) bool { return roomIn(r, "leave", roomID) })
		if !strings.Contains(string(r.Body), `"membership":"leave"`) || !strings.Contains(string(r.Body), "no thanks") {
			t.Fatalf("the leave is not in rooms.leave: %s", r.Body)
		}
		// Rejected means gone: a second leave finds no invite.
		r = alice.do(t, "GET", "/_matrix/client/v3/joined_rooms", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if strings.Contains(string(r.Body), roomID) {
			t.Fatalf("alice is in the room: %s", r.Body)
		}
	})
}

// When the inviting server cannot be reached, rejecting still works here.
func TestRejectRemoteInviteUnreachable(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "private_chat"})
		r := bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": alice.id})
		hearthtest.Expect(t, r, http.StatusOK, "")
		since := ""
		alice.syncUntil(t, &since, "the invite", func(r hearthtest.Response) bool { return roomIn(r, "invite", roomID) })
		fed[1].FederationDown(t)

		r = alice.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		alice.syncUntil(t, &since, "the rejection", func(r hearthtest.Response) bool { return roomIn(r, "leave", roomID) })
		r = alice.do(t, "GET", "/_matrix/client/v3/sync", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if roomIn(r, "invite", roomID) {
			t.Fatalf("the invite is still shown: %s", r.Body)
		}
	})
}

// A user on A leaves a room on B that nobody else on A is in; B sees it.
func TestLeaveRemoteRoom(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		r := alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		bob.waitMembership(t, roomID, alice.id, "join")
		r = alice.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		bob.waitMembership(t, roomID, alice.id, "leave")
	})
}

// A user on A knocks on a room on B; bob on B sees the knock and lets
// them in with an invite; the user joins.
func TestKnockOnRemoteRoom(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "private_chat", "name": "knock knock",
			"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
		r := alice.do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(roomID)+"?via="+url.QueryEscape(bob.hs.Config.ServerName),
			map[string]any{"reason": "let me in"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		since := ""
		r = alice.syncUntil(t, &since, "the knock", func(r hearthtest.Response) bool { return roomIn(r, "knock", roomID) })
		if !strings.Contains(string(r.Body), "knock knock") {
			t.Fatalf("knock_state lacks the room name: %s", r.Body)
		}
		bob.waitMembership(t, roomID, alice.id, "knock")

		r = bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": alice.id})
		hearthtest.Expect(t, r, http.StatusOK, "")
		alice.syncUntil(t, &since, "the invite", func(r hearthtest.Response) bool { return roomIn(r, "invite", roomID) })
		r = alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		bob.waitMembership(t, roomID, alice.id, "join")
	})
}

// Knocking on a room whose join rule is not knock is refused by the
// resident server, and nothing is recorded.
func TestKnockOnRemoteRoomRefused(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "private_chat"})
		r := alice.do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(roomID)+"?via="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusForbidden, "M_FORBIDDEN")
		r = alice.do(t, "GET", "/_matrix/client/v3/sync", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if roomIn(r, "knock", roomID) {
			t.Fatalf("a refused knock is shown: %s", r.Body)
		}
	})
}

// A user on A joins a room on B with 200 messages and pages back through
// all of them: /messages backfills from B.
func TestBackfillThroughMessages(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		const n = 200
		for i := 0; i < n; i++ {
			bob.send(t, roomID, fmt.Sprintf("message %d", i))
		}
		r := alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")

		var bodies []string
		sawCreate := false
		from := ""
		for page := 0; page < 50; page++ {
			path := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID) + "/messages?dir=b&limit=30"
			if from != "" {
				path += "&from=" + url.QueryEscape(from)
			}
			r := alice.do(t, "GET", path, nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			chunk, _ := r.JSON["chunk"].([]any)
			for _, e := range chunk {
				ev := e.(map[string]any)
				if ev["type"] == "m.room.create" {
					sawCreate = true
				}
				if c, ok := ev["content"].(map[string]any); ok && ev["type"] == "m.room.message" {
					bodies = append(bodies, c["body"].(string))
				}
			}
			end, _ := r.JSON["end"].(string)
			if len(chunk) == 0 || end == "" {
				break
			}
			from = end
		}
		if len(bodies) != n {
			t.Fatalf("paged back through %d messages, want %d", len(bodies), n)
		}
		for i, body := range bodies {
			if want := fmt.Sprintf("message %d", n-1-i); body != want {
				t.Fatalf("message %d is %q, want %q", i, body, want)
			}
		}
		if !sawCreate {
			t.Fatal("paging back never reached the room's creation")
		}
		// History is not news: an incremental sync after the backfill does
		// not hand the old messages out again.
		r = alice.do(t, "GET", "/_matrix/client/v3/sync", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		next := r.JSON["next_batch"].(string)
		bob.send(t, roomID, "fresh")
		alice.waitForMessage(t, roomID, "fresh")
		r = alice.do(t, "GET", "/_matrix/client/v3/sync?since="+url.QueryEscape(next), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if strings.Contains(string(r.Body), `"message 5"`) {
			t.Fatalf("an incremental sync repeats backfilled history: %s", r.Body)
		}
	})
}

// createRoom's invite list reaches users of other servers (through their
// server's /invite), who can then join.
func TestCreateRoomInvitesRemoteUserDirect(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "private_chat", "invite": []string{alice.id}, "is_direct": true})
		since := ""
		r := alice.syncUntil(t, &since, "the invite", func(r hearthtest.Response) bool { return roomIn(r, "invite", roomID) })
		if !strings.Contains(string(r.Body), `"is_direct":true`) {
			t.Fatalf("the invite is not direct: %s", r.Body)
		}
		r = alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		bob.waitMembership(t, roomID, alice.id, "join")
	})
}

// The inviter withdraws an invite to a room our server is not in: the
// invitee's sync moves the room to leave.
func TestRescindedRemoteInvite(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "private_chat", "invite": []string{alice.id}})
		since := ""
		alice.syncUntil(t, &since, "the invite", func(r hearthtest.Response) bool { return roomIn(r, "invite", roomID) })
		r := bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/kick", map[string]any{"user_id": alice.id, "reason": "oops"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		alice.syncUntil(t, &since, "the rescission", func(r hearthtest.Response) bool { return roomIn(r, "leave", roomID) })
	})
}

// A user on A leaves a room on B and rejoins after messages were sent:
// paging back fills the hole in A's copy from B.
func TestBackfillAfterRejoin(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		join := "/_matrix/client/v3/join/" + url.PathEscape(roomID) + "?server_name=" + url.QueryEscape(bob.hs.Config.ServerName)
		hearthtest.Expect(t, alice.do(t, "POST", join, map[string]any{}), http.StatusOK, "")
		bob.waitMembership(t, roomID, alice.id, "join")
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", nil), http.StatusOK, "")
		bob.waitMembership(t, roomID, alice.id, "leave")
		const n = 60
		for i := 0; i < n; i++ {
			bob.send(t, roomID, fmt.Sprintf("while away %d", i))
		}
		hearthtest.Expect(t, alice.do(t, "POST", join, map[string]any{}), http.StatusOK, "")

		r := alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=100", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		for i := 0; i < n; i++ {
			if !strings.Contains(string(r.Body), fmt.Sprintf(`"while away %d"`, i)) {
				t.Fatalf("message %d sent while away is missing: %s", i, r.Body)
			}
		}
	})
}

// An invite over federation to a user who blocks invites is refused by
// their server with M_INVITE_BLOCKED, which reaches the inviter's client.
func TestRemoteInviteBlocked(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		r := alice.do(t, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.id)+"/account_data/m.invite_permission_config", map[string]any{"default_action": "block"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := bob.createRoom(t, map[string]any{"preset": "private_chat"})
		r = bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/invite", map[string]any{"user_id": alice.id})
		hearthtest.Expect(t, r, http.StatusForbidden, "M_INVITE_BLOCKED")
	})
}

// Someone other than the inviter kicks an invitee of another server: the
// invitee's server cannot check that against a room it is not in and
// keeps the invite (only the inviter can withdraw it over federation).
func TestKickOfRemoteInviteeByOtherUserKeepsInvite(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, alice2, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[0], "alice2"), newFedUser(t, fed[1], "bob")
		// A room bob is in, to know when his server has caught up.
		room1 := alice.createRoom(t, map[string]any{"preset": "private_chat", "invite": []string{bob.id}})
		since := ""
		bob.syncUntil(t, &since, "the first invite", func(r hearthtest.Response) bool { return roomIn(r, "invite", room1) })
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room1), map[string]any{}), http.StatusOK, "")

		room2 := alice.createRoom(t, map[string]any{"preset": "private_chat", "invite": []string{alice2.id}})
		hearthtest.Expect(t, alice2.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(room2), map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, alice2.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room2)+"/invite", map[string]any{"user_id": bob.id}), http.StatusOK, "")
		bob.syncUntil(t, &since, "alice2's invite", func(r hearthtest.Response) bool { return roomIn(r, "invite", room2) })

		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room2)+"/kick", map[string]any{"user_id": bob.id, "reason": "not yours"}), http.StatusOK, "")
		alice.waitMembership(t, room2, bob.id, "leave")
		alice.send(t, room1, "after the kick")
		filter := url.QueryEscape(`{"room":{"include_leave":true}}`)
		for deadline := time.Now().Add(15 * time.Second); ; {
			if time.Now().After(deadline) {
				t.Fatal("bob never saw the message sent after the kick")
			}
			r := bob.do(t, "GET", "/_matrix/client/v3/sync?timeout=1000&filter="+filter+"&since="+url.QueryEscape(since), nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			since, _ = r.JSON["next_batch"].(string)
			if roomIn(r, "leave", room2) {
				t.Fatalf("bob's server took the kick by someone other than the inviter: %s", r.Body)
			}
			if strings.Contains(string(r.Body), "after the kick") {
				break
			}
		}
		r := bob.do(t, "GET", "/_matrix/client/v3/sync", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !roomIn(r, "invite", room2) {
			t.Fatalf("bob's initial sync lacks the invite: %s", r.Body)
		}
	})
}

// A user of another server banned, unbanned and invited again sees each
// step (the ban in an initial sync without include_leave) and can join.
func TestUnbanThroughInviteAcrossServers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		joinVia(t, alice, roomID, bob)
		room := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
		hearthtest.Expect(t, bob.do(t, "POST", room+"/ban", map[string]any{"user_id": alice.id}), http.StatusOK, "")
		banned := func(r hearthtest.Response) bool {
			left, _ := get(r.JSON, "rooms", "leave", roomID, "timeline", "events").([]any)
			for _, ev := range left {
				if get(ev, "state_key") == alice.id && get(ev, "content", "membership") == "ban" {
					return true
				}
			}
			return false
		}
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			r := alice.do(t, "GET", "/_matrix/client/v3/sync", nil) // initial, no include_leave
			hearthtest.Expect(t, r, http.StatusOK, "")
			if banned(r) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("alice's initial sync never showed the ban: %s", r.Body)
			}
		}
		hearthtest.Expect(t, bob.do(t, "POST", room+"/unban", map[string]any{"user_id": alice.id}), http.StatusOK, "")
		hearthtest.Expect(t, bob.do(t, "POST", room+"/invite", map[string]any{"user_id": alice.id}), http.StatusOK, "")
		since := ""
		alice.syncUntil(t, &since, "the invite", func(r hearthtest.Response) bool { return roomIn(r, "invite", roomID) })
		joinVia(t, alice, roomID, bob)
		bob.waitMembership(t, roomID, alice.id, "join")
	})
}

// An older membership change that reaches the invitee's server after a
// newer invite (the unban the invite follows, delivered late) does not
// undo the invite: only a change whose auth events name the invite can.
func TestLateUnbanKeepsInvite(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		joinVia(t, alice, roomID, bob)
		room := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
		hearthtest.Expect(t, bob.do(t, "POST", room+"/ban", map[string]any{"user_id": alice.id}), http.StatusOK, "")
		ctx := context.Background()
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if m, _, _ := storage.CurrentMembership(ctx, alice.hs.DB.Read(), roomID, alice.id); m == "ban" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("alice's server never saw the ban")
			}
		}
		// Alice's server misses the unban for now.
		var mu sync.Mutex
		var held []json.RawMessage
		holdTransactions(alice.hs, func(_ *http.Request, body []byte) {
			var txn struct {
				PDUs []json.RawMessage `json:"pdus"`
			}
			_ = json.Unmarshal(body, &txn)
			mu.Lock()
			held = append(held, txn.PDUs...)
			mu.Unlock()
		})
		hearthtest.Expect(t, bob.do(t, "POST", room+"/unban", map[string]any{"user_id": alice.id}), http.StatusOK, "")
		for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			mu.Lock()
			n := len(held)
			mu.Unlock()
			if n > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("bob's server never sent the unban")
			}
		}
		hearthtest.Expect(t, bob.do(t, "POST", room+"/invite", map[string]any{"user_id": alice.id}), http.StatusOK, "")
		// Now the unban arrives.
		alice.hs.WrapFederation(func(fedH, _ http.Handler) http.Handler { return fedH })
		mu.Lock()
		late := held
		mu.Unlock()
		if _, err := bob.hs.Federation.Client().SendTransaction(ctx, gomatrixserverlib.Transaction{TransactionID: "late-unban",
			Origin: serverName(bob.hs), Destination: serverName(alice.hs), OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: late}); err != nil {
			t.Fatal(err)
		}
		if m, _, _ := storage.CurrentMembership(ctx, alice.hs.DB.Read(), roomID, alice.id); m != "invite" {
			t.Fatalf("after the late unban alice's membership is %q, want the invite", m)
		}
		since := ""
		alice.syncUntil(t, &since, "the invite", func(r hearthtest.Response) bool { return roomIn(r, "invite", roomID) })
		joinVia(t, alice, roomID, bob)
	})
}

// TestKnockRoomStateFiltered: knock_room_state entries that are not
// properly formatted or signed are dropped before alice's client sees
// them (send_knock, v1.16): B's answer is changed on the way, its name
// event altered (hash check) and a bare stripped topic added; the knock
// goes through and alice sees the create and join rules, not the forged
// name or the topic.
func TestKnockRoomStateFiltered(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"room_version": "12", "preset": "private_chat", "name": "knock knock",
			"initial_state": []any{map[string]any{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
		bob.hs.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if !strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send_knock/") {
					fedH.ServeHTTP(w, r)
					return
				}
				rec := httptest.NewRecorder()
				fedH.ServeHTTP(rec, r)
				var body struct {
					State []map[string]any `json:"knock_room_state"`
				}
				if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &body) != nil {
					w.WriteHeader(rec.Code)
					_, _ = w.Write(rec.Body.Bytes())
					return
				}
				for _, ev := range body.State {
					if ev["type"] == "m.room.name" {
						ev["content"] = map[string]any{"name": "forged name"}
					}
				}
				body.State = append(body.State, map[string]any{"type": "m.room.topic", "state_key": "", "sender": bob.id, "content": map[string]any{"topic": "bare topic"}})
				w.Header().Set("Content-Type", "application/json")
				_ = json.NewEncoder(w).Encode(body)
			})
		})
		r := alice.do(t, "POST", "/_matrix/client/v3/knock/"+url.PathEscape(roomID)+"?via="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		since := ""
		r = alice.syncUntil(t, &since, "the knock", func(r hearthtest.Response) bool { return roomIn(r, "knock", roomID) })
		body := string(r.Body)
		if !strings.Contains(body, `"join_rule":"knock"`) || !strings.Contains(body, "m.room.create") {
			t.Fatalf("knock_state lacks the valid entries: %s", body)
		}
		if strings.Contains(body, "forged name") || strings.Contains(body, "bare topic") {
			t.Fatalf("knock_state shows entries that fail the checks: %s", body)
		}
	})
}
