package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestServerNotices: an admin's notice makes the user's notices room
// (invite, m.server_notice tag), the invite cannot be rejected, the user
// may leave after joining and the next notice re-invites into the same
// room; PUT with a txnId is idempotent; only admins may send.
func TestServerNotices(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.ServerNoticesLocalpart = "notices" })
		alice := newUser(t, hs, "alice")
		login, err := hs.Accounts.Register(t.Context(), accountsNewAdmin("admin", "password"))
		if err != nil {
			t.Fatal(err)
		}
		admin := user{hs, login.UserID, login.AccessToken}
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
