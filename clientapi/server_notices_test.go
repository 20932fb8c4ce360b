package clientapi_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// noticesServer is a server with notices on, a user alice and an admin.
func noticesServer(t *testing.T, b hearthtest.Backend) (hs *hearthtest.Server, alice, admin user) {
	t.Helper()
	hs = hearthtest.NewServer(t, b, func(c *config.Config) { c.ServerNoticesLocalpart = "notices" })
	alice = newUser(t, hs, "alice")
	login, err := hs.Accounts.Register(t.Context(), accountsNewAdmin("admin", "password"))
	if err != nil {
		t.Fatal(err)
	}
	return hs, alice, user{hs, login.UserID, login.AccessToken}
}

// TestServerNotices: an admin's notice makes the user's notices room
// (invite, m.server_notice tag), the invite cannot be rejected, the user
// may leave after joining and the next notice re-invites into the same
// room; PUT with a txnId is idempotent; only admins may send.
func TestServerNotices(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs, alice, admin := noticesServer(t, b)
		const send = "/_synapse/admin/v1/send_server_notice"
		notice := map[string]any{"user_id": alice.id, "content": map[string]any{"msgtype": "m.server_notice", "body": "maintenance at noon"}}

		hearthtest.Expect(t, alice.do(t, "POST", send, notice), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, admin.do(t, "POST", send, map[string]any{"user_id": "@nobody:hearth.test", "content": map[string]any{}}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, admin.do(t, "POST", send, map[string]any{"user_id": alice.id}), http.StatusBadRequest, "M_BAD_JSON")
		// The notices account's name cannot be registered by anyone.
		r := hs.Do(t, "GET", "/_matrix/client/v3/register/available?username=notices", "", nil)
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_USER_IN_USE")

		r = admin.do(t, "POST", send, notice)
		hearthtest.Expect(t, r, http.StatusOK, "")
		first, _ := r.JSON["event_id"].(string)
		sync := alice.sync(t, "", "")
		var roomID string
		for id := range path(sync.JSON, "rooms", "invite").(map[string]any) {
			roomID = id
		}
		if roomID == "" {
			t.Fatalf("no invite: %s", sync.Body)
		}
		tags := "/_matrix/client/v3/user/" + url.PathEscape(alice.id) + "/rooms/" + url.PathEscape(roomID) + "/tags"
		if jsonPath(alice.do(t, "GET", tags, nil).JSON, "tags", "m.server_notice") == nil {
			t.Fatal("the notices room lacks the m.server_notice tag")
		}
		hearthtest.Expect(t, alice.member(t, roomID, "leave", nil), http.StatusForbidden, "M_CANNOT_LEAVE_SERVER_NOTICE_ROOM")
		hearthtest.Expect(t, alice.member(t, roomID, "join", nil), http.StatusOK, "")
		r = alice.messages(t, roomID, "dir=b&limit=5")
		if got := eventIDs(r.JSON["chunk"]); len(got) < 2 || got[1] != first {
			t.Fatalf("the notice should come just before alice's join: %v (notice %s)", got, first)
		}
		// Users read notices, they do not talk in the room.
		hearthtest.Expect(t, alice.send(t, roomID, "hello?"), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, alice.member(t, roomID, "leave", nil), http.StatusOK, "")

		// The next notice invites her back into the same room.
		hearthtest.Expect(t, admin.do(t, "POST", send, notice), http.StatusOK, "")
		sync = alice.sync(t, "", "")
		if path(sync.JSON, "rooms", "invite", roomID) == nil {
			t.Fatalf("not re-invited to %s: %s", roomID, sync.Body)
		}
		// Idempotent per transaction ID.
		r1 := admin.do(t, "PUT", send+"/txn1", notice)
		r2 := admin.do(t, "PUT", send+"/txn1", notice)
		hearthtest.Expect(t, r1, http.StatusOK, "")
		if r1.JSON["event_id"] != r2.JSON["event_id"] {
			t.Fatalf("a retried notice was sent twice: %s %s", r1.Body, r2.Body)
		}
		// Nobody can log in as the notices account.
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "notices"}, "password": "anything"}), http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestServerNoticesRoomReplaced: when the recorded notices room can no
// longer serve (deleted by an admin, so the notices account is out of it;
// or purged altogether) the next notice makes a new room, tagged
// m.server_notice in place of the old one, instead of failing.
func TestServerNoticesRoomReplaced(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		_, alice, admin := noticesServer(t, b)
		notice := map[string]any{"user_id": alice.id, "content": map[string]any{"msgtype": "m.server_notice", "body": "hello"}}
		noticeRoom := func() string {
			t.Helper()
			hearthtest.Expect(t, admin.do(t, "POST", "/_synapse/admin/v1/send_server_notice", notice), http.StatusOK, "")
			invites, _ := path(alice.sync(t, "", "").JSON, "rooms", "invite").(map[string]any)
			if len(invites) != 1 {
				t.Fatalf("alice is invited to %d rooms, not her one notices room: %v", len(invites), invites)
			}
			for id := range invites {
				return id
			}
			return ""
		}
		tagged := func(roomID string) bool {
			tags := "/_matrix/client/v3/user/" + url.PathEscape(alice.id) + "/rooms/" + url.PathEscape(roomID) + "/tags"
			return jsonPath(alice.do(t, "GET", tags, nil).JSON, "tags", "m.server_notice") != nil
		}
		first := noticeRoom()
		if noticeRoom() != first {
			t.Fatal("a second notice made another room")
		}
		// Deleted (the notices account and alice are made to leave), not
		// purged.
		hearthtest.Expect(t, admin.do(t, "DELETE", "/_synapse/admin/v1/rooms/"+url.PathEscape(first), map[string]any{"purge": false}), http.StatusOK, "")
		second := noticeRoom()
		if second == first {
			t.Fatal("the notice went to the deleted room")
		}
		if !tagged(second) || tagged(first) {
			t.Fatalf("tags: new room %v, old room %v", tagged(second), tagged(first))
		}
		// Purged: the room is gone from the database.
		hearthtest.Expect(t, admin.do(t, "DELETE", "/_synapse/admin/v1/rooms/"+url.PathEscape(second), map[string]any{"purge": true}), http.StatusOK, "")
		third := noticeRoom()
		if third == second || third == first || !tagged(third) {
			t.Fatalf("after the purge: room %s (before %s, %s), tagged %v", third, first, second, tagged(third))
		}
		hearthtest.Expect(t, alice.member(t, third, "join", nil), http.StatusOK, "")
		r := alice.messages(t, third, "dir=b&limit=10")
		if !strings.Contains(string(r.Body), `"body":"hello"`) {
			t.Fatalf("the notice is not in the new room: %s", r.Body)
		}
	})
}
