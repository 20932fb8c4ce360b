package federation_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// A user on A reads the published room directory of B (server=).
func TestPublicRoomsOfRemoteServer(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat", "visibility": "public", "name": "Bob's lounge"})
		server := url.QueryEscape(bob.hs.Config.ServerName)

		r := alice.do(t, "GET", "/_matrix/client/v3/publicRooms?server="+server, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !strings.Contains(string(r.Body), roomID) || !strings.Contains(string(r.Body), "Bob's lounge") {
			t.Fatalf("B's directory through A: %s", r.Body)
		}
		r = alice.do(t, "POST", "/_matrix/client/v3/publicRooms?server="+server, map[string]any{"filter": map[string]any{"generic_search_term": "lounge"}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !strings.Contains(string(r.Body), roomID) {
			t.Fatalf("filtered directory: %s", r.Body)
		}
		r = alice.do(t, "POST", "/_matrix/client/v3/publicRooms?server="+server, map[string]any{"filter": map[string]any{"generic_search_term": "nothing like it"}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if strings.Contains(string(r.Body), roomID) {
			t.Fatalf("the filter matched: %s", r.Body)
		}
		// A's own directory does not list B's room.
		r = alice.do(t, "GET", "/_matrix/client/v3/publicRooms", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if strings.Contains(string(r.Body), roomID) {
			t.Fatalf("A lists B's room: %s", r.Body)
		}
	})
}

// A space on A has a child room on B: the hierarchy shows it, asked of B.
func TestHierarchyWithRemoteChild(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		space := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "A space", "creation_content": map[string]any{"type": "m.space"}})
		child := bob.createRoom(t, map[string]any{"preset": "public_chat", "name": "Room on B"})
		private := bob.createRoom(t, map[string]any{"preset": "private_chat", "name": "Secret on B"})
		for _, id := range []string{child, private} {
			r := alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(space)+"/state/m.space.child/"+url.PathEscape(id),
				map[string]any{"via": []string{bob.hs.Config.ServerName}})
			hearthtest.Expect(t, r, http.StatusOK, "")
		}
		r := alice.do(t, "GET", "/_matrix/client/v1/rooms/"+url.PathEscape(space)+"/hierarchy", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !strings.Contains(string(r.Body), "Room on B") || !strings.Contains(string(r.Body), child) {
			t.Fatalf("the remote child is missing: %s", r.Body)
		}
		if strings.Contains(string(r.Body), "Secret on B") {
			t.Fatalf("a private remote room is shown: %s", r.Body)
		}
	})
}

// TestRemoteRoomSummary: a user of A asks for the summary of rooms only B
// is in (v1.15): A asks the via servers (or the servers the alias names)
// with the federation hierarchy endpoint. A public room is summarised,
// with the encryption and room version fields and membership leave; a
// private one is 404, as is one without via servers to ask, and an
// unauthenticated caller sees only the public one, without membership.
// Once alice is invited, the private one is hers to see, membership
// invite.
func TestRemoteRoomSummary(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		public := bob.createRoom(t, map[string]any{"preset": "public_chat", "name": "Room on B", "topic": "B's topic", "room_alias_name": "onb",
			"initial_state": []map[string]any{{"type": "m.room.encryption", "state_key": "", "content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2"}}}})
		private := bob.createRoom(t, map[string]any{"preset": "private_chat", "name": "Secret on B"})
		onB := "?via=" + url.QueryEscape(bob.hs.Config.ServerName)
		summary := func(u fedUser, idOrAlias, query string) hearthtest.Response {
			return u.hs.Do(t, "GET", "/_matrix/client/v1/room_summary/"+url.PathEscape(idOrAlias)+query, u.token, nil)
		}

		r := summary(alice, public, onB)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["room_id"] != public || r.JSON["name"] != "Room on B" || r.JSON["topic"] != "B's topic" || r.JSON["join_rule"] != "public" ||
			r.JSON["encryption"] != "m.megolm.v1.aes-sha2" || r.JSON["room_version"] == nil || r.JSON["membership"] != "leave" ||
			r.JSON["num_joined_members"] != 1.0 || r.JSON["guest_can_join"] != false || r.JSON["world_readable"] != false {
			t.Fatalf("summary of B's public room: %s", r.Body)
		}
		// By alias: B's directory names B.
		r = summary(alice, "#onb:"+bob.hs.Config.ServerName, "")
		if r.Status != http.StatusOK || r.JSON["room_id"] != public {
			t.Fatalf("summary by alias: %d %s", r.Status, r.Body)
		}
		// Unauthenticated: the public room, no membership.
		r = summary(fedUser{hs: alice.hs}, public, onB)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if _, ok := r.JSON["membership"]; ok || r.JSON["room_id"] != public {
			t.Fatalf("unauthenticated summary: %s", r.Body)
		}
		hearthtest.Expect(t, summary(alice, private, onB), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, summary(fedUser{hs: alice.hs}, private, onB), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, summary(alice, public, ""), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, summary(alice, "!unknown:"+bob.hs.Config.ServerName, onB), http.StatusNotFound, "M_NOT_FOUND")

		// Invited, alice may see the private room.
		r = bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(private)+"/invite", map[string]any{"user_id": alice.id})
		hearthtest.Expect(t, r, http.StatusOK, "")
		r = summary(alice, private, onB)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["name"] != "Secret on B" || r.JSON["membership"] != "invite" {
			t.Fatalf("summary of the room alice is invited to: %s", r.Body)
		}
	})
}

// A user on A jumps to a date before their server joined a room on B: the
// answer comes from B.
func TestTimestampToEventFromRemote(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		time.Sleep(20 * time.Millisecond)
		before := time.Now().UnixMilli()
		time.Sleep(20 * time.Millisecond)
		r := bob.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/old", map[string]any{"msgtype": "m.text", "body": "old news"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		oldID := r.JSON["event_id"].(string)
		time.Sleep(20 * time.Millisecond)
		between := time.Now().UnixMilli()
		time.Sleep(20 * time.Millisecond)
		r = alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")

		// Looking forwards from before B's message: A's first event is its
		// join, after a gap; B knows the message in between.
		r = alice.do(t, "GET", fmt.Sprintf("/_matrix/client/v1/rooms/%s/timestamp_to_event?dir=f&ts=%d", url.PathEscape(roomID), before), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["event_id"] != oldID {
			t.Fatalf("looking forwards: got %s, want B's message %s", r.Body, oldID)
		}
		r = alice.do(t, "GET", fmt.Sprintf("/_matrix/client/v1/rooms/%s/timestamp_to_event?dir=b&ts=%d", url.PathEscape(roomID), between), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["event_id"] != oldID {
			t.Fatalf("got %s, want B's message %s", r.Body, oldID)
		}
		// The event is now ours to show in context.
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/context/"+url.PathEscape(oldID)+"?limit=2", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !strings.Contains(string(r.Body), "old news") {
			t.Fatalf("context of the remote event: %s", r.Body)
		}
	})
}
