package clientapi_test

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestAccountLocking: an admin locks an account with PUT
// /v1/admin/lock/{userId} (v1.18); the locked account's tokens then get
// 401 M_USER_LOCKED with soft_logout on everything but /logout and
// /logout/all (v1.12), even when they were cached, no new token can be had
// by login or refresh, and the old ones work again once it is unlocked. Only admins may look, before any account lookup, and admins
// cannot be locked.
func TestAccountLocking(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		login, err := hs.Accounts.Register(t.Context(), accountsNewAdmin("admin", "password"))
		if err != nil {
			t.Fatal(err)
		}
		admin := user{hs, login.UserID, login.AccessToken}
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		lock := func(userID string) string { return "/_matrix/client/v1/admin/lock/" + url.PathEscape(userID) }
		const whoami = "/_matrix/client/v3/account/whoami"

		// Only admins, and before any lookup: bob learns nothing.
		hearthtest.Expect(t, bob.do(t, "GET", lock(alice.id), nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, bob.do(t, "GET", lock("@nobody:hearth.test"), nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, bob.do(t, "PUT", lock(alice.id), map[string]any{"locked": true}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, admin.do(t, "GET", lock("@nobody:hearth.test"), nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, admin.do(t, "GET", lock("@alice:elsewhere.test"), nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, admin.do(t, "PUT", lock(admin.id), map[string]any{"locked": true}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, admin.do(t, "PUT", lock(alice.id), map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		if r := admin.do(t, "GET", lock(alice.id), nil); r.Status != http.StatusOK || r.JSON["locked"] != false {
			t.Fatalf("alice before the lock: %d %s", r.Status, r.Body)
		}

		// The capability is the admins' alone.
		caps := func(u user) any {
			r := u.do(t, "GET", "/_matrix/client/v3/capabilities", nil)
			c, _ := r.JSON["capabilities"].(map[string]any)
			return c["m.account_moderation"]
		}
		if got := fmt.Sprint(caps(admin)); got != "map[lock:true suspend:true]" {
			t.Errorf("admin m.account_moderation: %s", got)
		}
		if got := caps(bob); got != nil {
			t.Errorf("user m.account_moderation: %v", got)
		}

		// A second device of alice's, its token cached by a first use.
		passwordLogin := func() hearthtest.Response {
			return hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password", "refresh_token": true})
		}
		second := passwordLogin()
		hearthtest.Expect(t, second, http.StatusOK, "")
		secondTok := second.JSON["access_token"].(string)
		hearthtest.Expect(t, hs.Do(t, "GET", whoami, secondTok, nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "GET", whoami, nil), http.StatusOK, "")

		r := admin.do(t, "PUT", lock(alice.id), map[string]any{"locked": true})
		if r.Status != http.StatusOK || r.JSON["locked"] != true {
			t.Fatalf("locking alice: %d %s", r.Status, r.Body)
		}
		for _, path := range []string{whoami, "/_matrix/client/v3/capabilities", "/_matrix/client/v3/joined_rooms"} {
			r := alice.do(t, "GET", path, nil)
			hearthtest.Expect(t, r, http.StatusUnauthorized, "M_USER_LOCKED")
			if r.JSON["soft_logout"] != true {
				t.Errorf("%s for a locked account: %s", path, r.Body)
			}
		}
		if r := admin.do(t, "GET", lock(alice.id), nil); r.JSON["locked"] != true {
			t.Fatalf("alice after the lock: %s", r.Body)
		}
		hearthtest.Expect(t, bob.do(t, "GET", whoami, nil), http.StatusOK, "")
		// No new access token either: not by logging in, not by refreshing.
		hearthtest.Expect(t, passwordLogin(), http.StatusUnauthorized, "M_USER_LOCKED")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/refresh", "", map[string]any{"refresh_token": second.JSON["refresh_token"]}),
			http.StatusUnauthorized, "M_USER_LOCKED")

		// Unlocked, the same token works: the session was kept.
		hearthtest.Expect(t, admin.do(t, "PUT", lock(alice.id), map[string]any{"locked": false}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "GET", whoami, nil), http.StatusOK, "")

		// Locked again, logging out still works.
		hearthtest.Expect(t, admin.do(t, "PUT", lock(alice.id), map[string]any{"locked": true}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/logout", secondTok, map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", whoami, secondTok, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/logout/all", map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "GET", whoami, nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
}

// TestAccountSuspension: an admin suspends an account with PUT
// /v1/admin/suspend/{userId} (v1.18). The suspended account (v1.13) may
// still read, log in (the new session is suspended too), redact its own
// events, leave and reject invites, use keys and backup, typing and
// receipts, and join and talk in its server notices room; it gets 403
// M_USER_SUSPENDED for joining, knocking, inviting, sending, other state,
// redacting others' events, profile changes, creating and upgrading rooms,
// kicking and banning. Unsuspended, it acts again with the same token.
func TestAccountSuspension(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.ServerNoticesLocalpart = "notices" })
		login, err := hs.Accounts.Register(t.Context(), accountsNewAdmin("admin", "password"))
		if err != nil {
			t.Fatal(err)
		}
		admin := user{hs, login.UserID, login.AccessToken}
		login2, err := hs.Accounts.Register(t.Context(), accountsNewAdmin("admin2", "password"))
		if err != nil {
			t.Fatal(err)
		}
		alice, bob, carol := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "carol")
		suspend := func(userID string) string { return "/_matrix/client/v1/admin/suspend/" + url.PathEscape(userID) }

		// Only admins, before any lookup; not admins, not oneself.
		hearthtest.Expect(t, bob.do(t, "GET", suspend(alice.id), nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, bob.do(t, "GET", suspend("@nobody:hearth.test"), nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, bob.do(t, "PUT", suspend(alice.id), map[string]any{"suspended": true}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, admin.do(t, "GET", suspend("@nobody:hearth.test"), nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, admin.do(t, "GET", suspend("@alice:elsewhere.test"), nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, admin.do(t, "GET", suspend(login2.UserID), nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, admin.do(t, "PUT", suspend(admin.id), map[string]any{"suspended": true}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, admin.do(t, "PUT", suspend(login2.UserID), map[string]any{"suspended": true}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, admin.do(t, "PUT", suspend(alice.id), map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, admin.do(t, "PUT", suspend(alice.id), map[string]any{"suspended": "yes"}), http.StatusBadRequest, "M_BAD_JSON")
		if r := admin.do(t, "GET", suspend(admin.id), nil); r.Status != http.StatusOK || r.JSON["suspended"] != false {
			t.Fatalf("admin looking at itself: %d %s", r.Status, r.Body)
		}
		caps := admin.do(t, "GET", "/_matrix/client/v3/capabilities", nil)
		if got := fmt.Sprint(path(caps.JSON, "capabilities", "m.account_moderation")); got != "map[lock:true suspend:true]" {
			t.Errorf("admin m.account_moderation: %s", got)
		}

		// Before: alice is in bob's room, has a message there, an invite
		// to another room and one to reject.
		room := bob.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, alice.member(t, room, "join", nil), http.StatusOK, "")
		own := alice.sendEvent(t, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "mine"})
		own2 := alice.sendEvent(t, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "mine too"})
		bobs := bob.sendEvent(t, room, "m.room.message", map[string]any{"msgtype": "m.text", "body": "bob's"})
		invited := bob.createRoom(t, map[string]any{"invite": []string{alice.id}})
		toReject := bob.createRoom(t, map[string]any{"invite": []string{alice.id}})
		knockable := bob.createRoom(t, map[string]any{"room_version": "11", "initial_state": []map[string]any{
			{"type": "m.room.join_rules", "state_key": "", "content": map[string]any{"join_rule": "knock"}}}})
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusOK, "") // token cached

		r := admin.do(t, "PUT", suspend(alice.id), map[string]any{"suspended": true})
		if r.Status != http.StatusOK || r.JSON["suspended"] != true {
			t.Fatalf("suspending alice: %d %s", r.Status, r.Body)
		}
		if r := admin.do(t, "GET", suspend(alice.id), nil); r.JSON["suspended"] != true {
			t.Fatalf("alice after the suspension: %s", r.Body)
		}

		rooms := "/_matrix/client/v3/rooms/" + url.PathEscape(room)
		refused := []struct{ method, path string }{
			{"POST", "/_matrix/client/v3/createRoom"},
			{"PUT", rooms + "/send/m.room.message/s1"},
			{"PUT", rooms + "/state/m.room.topic/"},
			{"PUT", rooms + "/redact/" + url.PathEscape(bobs) + "/s2"},
			{"PUT", rooms + "/send/m.room.redaction/s3"},
			{"POST", "/_matrix/client/v3/rooms/" + url.PathEscape(invited) + "/join"},
			{"POST", "/_matrix/client/v3/join/" + url.PathEscape(invited)},
			{"POST", "/_matrix/client/v3/knock/" + url.PathEscape(knockable)},
			{"POST", rooms + "/invite"},
			{"POST", rooms + "/kick"},
			{"POST", rooms + "/ban"},
			{"POST", rooms + "/unban"},
			{"POST", rooms + "/upgrade"},
			{"PUT", "/_matrix/client/v3/profile/" + url.PathEscape(alice.id) + "/displayname"},
			{"DELETE", "/_matrix/client/v3/profile/" + url.PathEscape(alice.id) + "/displayname"},
			{"POST", "/_matrix/client/v3/account/3pid/delete"},
		}
		bodies := map[string]map[string]any{
			rooms + "/send/m.room.redaction/s3": {"redacts": bobs},
			rooms + "/state/m.room.topic/":      {"topic": "new"},
			rooms + "/invite":                   {"user_id": carol.id},
			rooms + "/kick":                     {"user_id": bob.id},
			rooms + "/ban":                      {"user_id": bob.id},
			rooms + "/unban":                    {"user_id": bob.id},
			rooms + "/upgrade":                  {"new_version": "11"},
			rooms + "/send/m.room.message/s1":   {"msgtype": "m.text", "body": "hi"},
			"/_matrix/client/v3/profile/" + url.PathEscape(alice.id) + "/displayname": {"displayname": "Al"},
		}
		for _, q := range refused {
			body := bodies[q.path]
			if body == nil && q.method != "DELETE" {
				body = map[string]any{}
			}
			r := alice.do(t, q.method, q.path, body)
			hearthtest.Expect(t, r, http.StatusForbidden, "M_USER_SUSPENDED")
			if r.JSON["error"] != "You cannot perform this action while suspended." {
				t.Errorf("%s %s: %s", q.method, q.path, r.Body)
			}
		}
		// Nothing of it happened.
		if got := alice.messages(t, room, "dir=b&limit=1"); !strings.Contains(string(got.Body), "bob's") {
			t.Fatalf("something was sent: %s", got.Body)
		}

		// What a suspended account may still do.
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/sync?timeout=0", nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.messages(t, room, "dir=b"), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", rooms+"/redact/"+url.PathEscape(own)+"/"+nextTxn(), map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", rooms+"/send/m.room.redaction/"+nextTxn(), map[string]any{"redacts": own2}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", rooms+"/typing/"+url.PathEscape(alice.id), map[string]any{"typing": true, "timeout": 1000}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "POST", rooms+"/receipt/m.read/"+url.PathEscape(bobs), map[string]any{}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/room_keys/version",
			map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "abc"}}), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/user/"+url.PathEscape(alice.id)+"/account_data/m.example", map[string]any{"a": 1}), http.StatusOK, "")
		hearthtest.Expect(t, alice.member(t, toReject, "leave", nil), http.StatusOK, "")
		// A new session works, and is suspended too.
		l := hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "password"})
		hearthtest.Expect(t, l, http.StatusOK, "")
		second := user{hs, alice.id, l.JSON["access_token"].(string)}
		hearthtest.Expect(t, second.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{}), http.StatusForbidden, "M_USER_SUSPENDED")
		// Her server notices room: joining it is allowed.
		hearthtest.Expect(t, admin.do(t, "POST", "/_synapse/admin/v1/send_server_notice", map[string]any{"user_id": alice.id,
			"content": map[string]any{"msgtype": "m.server_notice", "body": "you are suspended"}}), http.StatusOK, "")
		var notices string
		for id := range path(alice.sync(t, "", "").JSON, "rooms", "invite").(map[string]any) {
			if id != invited {
				notices = id
			}
		}
		hearthtest.Expect(t, alice.member(t, notices, "join", nil), http.StatusOK, "")
		// Leaving through the state endpoint is leaving.
		hearthtest.Expect(t, alice.do(t, "PUT", rooms+"/state/m.room.member/"+url.PathEscape(alice.id), map[string]any{"membership": "leave"}), http.StatusOK, "")

		// Unsuspended: the same tokens act again.
		hearthtest.Expect(t, admin.do(t, "PUT", suspend(alice.id), map[string]any{"suspended": false}), http.StatusOK, "")
		hearthtest.Expect(t, alice.member(t, invited, "join", nil), http.StatusOK, "")
		alice.sendEvent(t, invited, "m.room.message", map[string]any{"msgtype": "m.text", "body": "back"})
		alice.createRoom(t, nil)
		hearthtest.Expect(t, second.do(t, "PUT", "/_matrix/client/v3/profile/"+url.PathEscape(alice.id)+"/displayname", map[string]any{"displayname": "Al"}), http.StatusOK, "")
	})
}
