package admin_test

import (
	"database/sql"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

type user struct {
	hs    *hearthtest.Server
	id    string
	token string
}

func newUser(t testing.TB, hs *hearthtest.Server, name string) user {
	t.Helper()
	id, tok := hs.RegisterUser(t, name)
	return user{hs, id, tok}
}

func newAdmin(t testing.TB, hs *hearthtest.Server, name string) user {
	t.Helper()
	login, err := hs.Accounts.Register(t.Context(), accounts.NewUser{Localpart: name, Password: "password", Admin: true})
	if err != nil {
		t.Fatal(err)
	}
	return user{hs, login.UserID, login.AccessToken}
}

func (u user) do(t testing.TB, method, path string, body any) hearthtest.Response {
	t.Helper()
	return u.hs.Do(t, method, path, u.token, body)
}

func (u user) ok(t testing.TB, method, path string, body any) map[string]any {
	t.Helper()
	r := u.do(t, method, path, body)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON
}

func (u user) createRoom(t testing.TB, body map[string]any) string {
	t.Helper()
	if body == nil {
		body = map[string]any{}
	}
	j := u.ok(t, "POST", "/_matrix/client/v3/createRoom", body)
	return j["room_id"].(string)
}

func (u user) join(t testing.TB, roomID string) hearthtest.Response {
	t.Helper()
	return u.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/join", map[string]any{})
}

func (u user) membership(t testing.TB, roomID string) string {
	t.Helper()
	r := u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.member/"+url.PathEscape(u.id), nil)
	if r.Status != http.StatusOK {
		return ""
	}
	m, _ := r.JSON["membership"].(string)
	return m
}

func names(list any, key string) []string {
	var out []string
	for _, x := range list.([]any) {
		out = append(out, x.(map[string]any)[key].(string))
	}
	return out
}

const (
	v1 = "/_synapse/admin/v1"
	v2 = "/_synapse/admin/v2"
)

// TestAdminAccess: every admin endpoint wants a server admin's token: 401
// without one, 403 M_FORBIDDEN for another user's.
func TestAdminAccess(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newUser(t, hs, "alice")
		u, room := url.PathEscape(alice.id), url.PathEscape("!room:hearth.test")
		routes := [][2]string{
			{"GET", v1 + "/server_version"}, {"GET", v2 + "/users"}, {"GET", "/_synapse/admin/v3/users"},
			{"GET", v2 + "/users/" + u}, {"PUT", v2 + "/users/" + u}, {"POST", v1 + "/deactivate/" + u},
			{"POST", v1 + "/reset_password/" + u}, {"GET", v1 + "/whois/" + u}, {"GET", v1 + "/users/" + u + "/admin"},
			{"PUT", v1 + "/users/" + u + "/admin"}, {"GET", v1 + "/users/" + u + "/joined_rooms"},
			{"GET", v2 + "/users/" + u + "/devices"}, {"GET", v2 + "/users/" + u + "/devices/D"},
			{"DELETE", v2 + "/users/" + u + "/devices/D"}, {"POST", v2 + "/users/" + u + "/delete_devices"},
			{"GET", v1 + "/username_available?username=x"}, {"DELETE", v1 + "/rooms/" + room},
			{"GET", v1 + "/users/" + u + "/media"}, {"GET", v1 + "/rooms"}, {"GET", v1 + "/rooms/" + room},
			{"GET", v1 + "/rooms/" + room + "/members"}, {"GET", v1 + "/rooms/" + room + "/state"},
			{"GET", v1 + "/rooms/" + room + "/block"}, {"PUT", v1 + "/rooms/" + room + "/block"},
			{"DELETE", v2 + "/rooms/" + room}, {"GET", v2 + "/rooms/" + room + "/delete_status"},
			{"GET", v2 + "/rooms/delete_status/x"}, {"GET", v1 + "/event_reports"}, {"GET", v1 + "/event_reports/1"},
			{"DELETE", v1 + "/event_reports/1"}, {"GET", v1 + "/registration_tokens"},
			{"POST", v1 + "/registration_tokens/new"}, {"GET", v1 + "/registration_tokens/abc"},
			{"PUT", v1 + "/registration_tokens/abc"}, {"DELETE", v1 + "/registration_tokens/abc"},
			{"POST", v1 + "/media/quarantine/hearth.test/m"}, {"POST", v1 + "/media/unquarantine/hearth.test/m"},
			{"DELETE", v1 + "/media/hearth.test/m"},
		}
		for _, rt := range routes {
			hearthtest.Expect(t, hs.Do(t, rt[0], rt[1], "", map[string]any{}), http.StatusUnauthorized, "M_MISSING_TOKEN")
			hearthtest.Expect(t, alice.do(t, rt[0], rt[1], map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
		}
		admin := newAdmin(t, hs, "admin")
		if v, _ := admin.ok(t, "GET", v1+"/server_version", nil)["server_version"].(string); !strings.HasPrefix(v, "Hearth") {
			t.Fatalf("server_version: %q", v)
		}
	})
}

// TestAdminUsers: create and modify with PUT, the list's filters, order
// and paging, parameter validation, password reset, admin flag, devices,
// whois, joined rooms, username availability, and deactivation (with
// erasure) leaving the user's rooms through the room core.
func TestAdminUsers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		bob := newUser(t, hs, "bob")

		// Create (201) and modify (200).
		r := admin.do(t, "PUT", v2+"/users/@carol:hearth.test", map[string]any{"password": "secret1", "displayname": "Carol C", "admin": false})
		hearthtest.Expect(t, r, http.StatusCreated, "")
		if r.JSON["name"] != "@carol:hearth.test" || r.JSON["displayname"] != "Carol C" || r.JSON["admin"] != false {
			t.Fatalf("created: %s", r.Body)
		}
		login := hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "carol"}, "password": "secret1"})
		hearthtest.Expect(t, login, http.StatusOK, "")
		carol := user{hs, "@carol:hearth.test", login.JSON["access_token"].(string)}
		j := admin.ok(t, "PUT", v2+"/users/@carol:hearth.test", map[string]any{"displayname": "Carol", "admin": true})
		if j["displayname"] != "Carol" || j["admin"] != true {
			t.Fatalf("modified: %v", j)
		}
		hearthtest.Expect(t, admin.do(t, "PUT", v2+"/users/@carol:other.test", map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, admin.do(t, "PUT", v2+"/users/carol", map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, admin.do(t, "PUT", v2+"/users/@Dave:hearth.test", map[string]any{}), http.StatusBadRequest, "M_INVALID_USERNAME")
		hearthtest.Expect(t, admin.do(t, "GET", v2+"/users/@nobody:hearth.test", nil), http.StatusNotFound, "M_NOT_FOUND")

		// The list: total, paging with next_token, filters, order.
		j = admin.ok(t, "GET", v2+"/users?limit=2", nil)
		if j["total"] != float64(3) || len(j["users"].([]any)) != 2 || j["next_token"] != "2" {
			t.Fatalf("page 1: %v", j)
		}
		if got := names(j["users"], "name"); got[0] != "@admin:hearth.test" || got[1] != "@bob:hearth.test" {
			t.Fatalf("order: %v", got)
		}
		j = admin.ok(t, "GET", v2+"/users?limit=2&from=2", nil)
		if _, more := j["next_token"]; more || len(j["users"].([]any)) != 1 {
			t.Fatalf("page 2: %v", j)
		}
		j = admin.ok(t, "GET", v2+"/users?dir=b&limit=1", nil)
		if got := names(j["users"], "name"); got[0] != "@carol:hearth.test" {
			t.Fatalf("dir=b: %v", got)
		}
		j = admin.ok(t, "GET", v2+"/users?name=caro", nil) // display name or localpart
		if got := names(j["users"], "name"); len(got) != 1 || got[0] != "@carol:hearth.test" {
			t.Fatalf("name filter: %v", got)
		}
		if j = admin.ok(t, "GET", v2+"/users?name=hearth.test", nil); j["total"] != float64(0) { // not the server name
			t.Fatalf("name matched the server name: %v", j)
		}
		j = admin.ok(t, "GET", v2+"/users?admins=true", nil)
		if got := names(j["users"], "name"); len(got) != 2 {
			t.Fatalf("admins filter: %v", got)
		}
		for _, o := range []string{"name", "is_guest", "admin", "user_type", "deactivated", "shadow_banned",
			"displayname", "avatar_url", "creation_ts", "last_seen_ts", "locked", "approved"} {
			for _, dir := range []string{"f", "b"} {
				if j := admin.ok(t, "GET", v2+"/users?order_by="+o+"&dir="+dir, nil); j["total"] != float64(3) {
					t.Fatalf("order_by=%s: %v", o, j)
				}
			}
		}
		j = admin.ok(t, "GET", v2+"/users?order_by=creation_ts&dir=b", nil)
		if got := names(j["users"], "name"); got[0] != "@carol:hearth.test" {
			t.Fatalf("newest first: %v", got)
		}
		for _, q := range []string{"from=-1", "limit=x", "guests=maybe", "dir=up", "order_by=shoe_size", "deactivated=1"} {
			hearthtest.Expect(t, admin.do(t, "GET", v2+"/users?"+q, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		}

		// Admin flag.
		if admin.ok(t, "GET", v1+"/users/"+bob.id+"/admin", nil)["admin"] != false {
			t.Fatal("bob is no admin")
		}
		admin.ok(t, "PUT", v1+"/users/"+bob.id+"/admin", map[string]any{"admin": true})
		if admin.ok(t, "GET", v1+"/users/"+bob.id+"/admin", nil)["admin"] != true {
			t.Fatal("bob was made admin")
		}
		hearthtest.Expect(t, admin.do(t, "PUT", v1+"/users/"+admin.id+"/admin", map[string]any{"admin": false}), http.StatusForbidden, "M_FORBIDDEN")

		// Devices and whois.
		j = admin.ok(t, "GET", v2+"/users/"+bob.id+"/devices", nil)
		if j["total"] != float64(1) {
			t.Fatalf("devices: %v", j)
		}
		dev := names(j["devices"], "device_id")[0]
		admin.ok(t, "GET", v2+"/users/"+bob.id+"/devices/"+dev, nil)
		hearthtest.Expect(t, admin.do(t, "GET", v2+"/users/"+bob.id+"/devices/NOPE", nil), http.StatusNotFound, "M_NOT_FOUND")
		login2 := hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "password", "device_id": "SECOND"})
		hearthtest.Expect(t, login2, http.StatusOK, "")
		admin.ok(t, "DELETE", v2+"/users/"+bob.id+"/devices/SECOND", nil)
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", login2.JSON["access_token"].(string), nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		login3 := hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "password", "device_id": "THIRD"})
		hearthtest.Expect(t, login3, http.StatusOK, "")
		admin.ok(t, "POST", v2+"/users/"+bob.id+"/delete_devices", map[string]any{"devices": []string{"THIRD", "UNKNOWN"}})
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", login3.JSON["access_token"].(string), nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, admin.do(t, "POST", v2+"/users/"+bob.id+"/delete_devices", map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		bob.ok(t, "GET", "/_matrix/client/v3/account/whoami", nil)
		if j = admin.ok(t, "GET", v1+"/whois/"+bob.id, nil); j["user_id"] != bob.id {
			t.Fatalf("whois: %v", j)
		}

		// Joined rooms, then deactivation with erasure: bob leaves through
		// the room core (his leave is in the room), his profile is gone.
		room := carol.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.join(t, room), http.StatusOK, "")
		invited := carol.createRoom(t, map[string]any{"invite": []string{bob.id}})
		j = admin.ok(t, "GET", v1+"/users/"+bob.id+"/joined_rooms", nil)
		if j["total"] != float64(1) || j["joined_rooms"].([]any)[0] != room {
			t.Fatalf("joined_rooms: %v", j)
		}
		if j = admin.ok(t, "POST", v1+"/deactivate/"+bob.id, map[string]any{"erase": true}); j["id_server_unbind_result"] != "success" {
			t.Fatalf("deactivate: %v", j)
		}
		hearthtest.Expect(t, bob.do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		for _, rm := range []string{room, invited} {
			if m := carol.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(rm)+"/state/m.room.member/"+url.PathEscape(bob.id), nil); m.JSON["membership"] != "leave" {
				t.Fatalf("bob's membership after deactivation: %s", m.Body)
			}
		}
		j = admin.ok(t, "GET", v2+"/users/"+bob.id, nil)
		if j["deactivated"] != true || j["erased"] != true || j["displayname"] != nil {
			t.Fatalf("deactivated bob: %v", j)
		}
		// v2 hides deactivated users unless asked; v3 filters both ways.
		if got := names(admin.ok(t, "GET", v2+"/users", nil)["users"], "name"); len(got) != 2 {
			t.Fatalf("v2 default: %v", got)
		}
		if got := names(admin.ok(t, "GET", v2+"/users?deactivated=true", nil)["users"], "name"); len(got) != 3 {
			t.Fatalf("v2 deactivated=true: %v", got)
		}
		if got := names(admin.ok(t, "GET", "/_synapse/admin/v3/users?deactivated=true", nil)["users"], "name"); len(got) != 1 || got[0] != bob.id {
			t.Fatalf("v3 deactivated=true: %v", got)
		}
		// Reactivation needs a password.
		hearthtest.Expect(t, admin.do(t, "PUT", v2+"/users/"+bob.id, map[string]any{"deactivated": false}), http.StatusBadRequest, "M_INVALID_PARAM")
		admin.ok(t, "PUT", v2+"/users/"+bob.id, map[string]any{"deactivated": false, "password": "again"})

		// Password reset logs out unless logout_devices is false.
		admin.ok(t, "POST", v1+"/reset_password/"+carol.id, map[string]any{"new_password": "pw2", "logout_devices": false})
		carol.ok(t, "GET", "/_matrix/client/v3/account/whoami", nil)
		admin.ok(t, "POST", v1+"/reset_password/"+carol.id, map[string]any{"new_password": "pw3"})
		hearthtest.Expect(t, carol.do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, admin.do(t, "POST", v1+"/reset_password/"+carol.id, map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")

		// Username availability.
		admin.ok(t, "GET", v1+"/username_available?username=dave", nil)
		hearthtest.Expect(t, admin.do(t, "GET", v1+"/username_available?username=carol", nil), http.StatusBadRequest, "M_USER_IN_USE")
		hearthtest.Expect(t, admin.do(t, "GET", v1+"/username_available?username=Bad%20Name", nil), http.StatusBadRequest, "M_INVALID_USERNAME")

		// Media (none uploaded).
		if j = admin.ok(t, "GET", v1+"/users/"+carol.id+"/media", nil); j["total"] != float64(0) {
			t.Fatalf("media: %v", j)
		}
	})
}

// TestAdminRooms: the room list (order, search, paging), details,
// members, state, blocking, and deletion: local members leave through the
// room core, the room is blocked, delete_status reports it.
func TestAdminRooms(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		apple := alice.createRoom(t, map[string]any{"name": "Apple", "preset": "public_chat", "room_alias_name": "apple", "visibility": "public"})
		banana := alice.createRoom(t, map[string]any{"name": "Banana", "preset": "public_chat"})
		cherry := bob.createRoom(t, map[string]any{"name": "Cherry"})
		hearthtest.Expect(t, bob.join(t, apple), http.StatusOK, "")

		j := admin.ok(t, "GET", v1+"/rooms", nil)
		if got := names(j["rooms"], "room_id"); j["total_rooms"] != float64(3) || len(got) != 3 || got[0] != apple || got[2] != cherry {
			t.Fatalf("list: %v", j)
		}
		j = admin.ok(t, "GET", v1+"/rooms?limit=1&from=1", nil)
		if got := names(j["rooms"], "room_id"); got[0] != banana || j["next_batch"] != float64(2) || j["prev_batch"] != float64(0) {
			t.Fatalf("page: %v", j)
		}
		j = admin.ok(t, "GET", v1+"/rooms?order_by=joined_members", nil)
		if got := names(j["rooms"], "room_id"); got[0] != apple {
			t.Fatalf("by size: %v", got)
		}
		j = admin.ok(t, "GET", v1+"/rooms?dir=b", nil)
		if got := names(j["rooms"], "room_id"); got[0] != cherry {
			t.Fatalf("dir=b: %v", got)
		}
		j = admin.ok(t, "GET", v1+"/rooms?search_term=ANAN", nil)
		if got := names(j["rooms"], "room_id"); len(got) != 1 || got[0] != banana {
			t.Fatalf("search: %v", got)
		}
		for _, o := range []string{"alphabetical", "size", "name", "canonical_alias", "joined_members", "joined_local_members",
			"version", "creator", "encryption", "federatable", "public", "join_rules", "guest_access", "history_visibility", "state_events"} {
			if j := admin.ok(t, "GET", v1+"/rooms?order_by="+o+"&dir=b", nil); j["total_rooms"] != float64(3) {
				t.Fatalf("order_by=%s: %v", o, j)
			}
		}
		if j = admin.ok(t, "GET", v1+"/rooms?public_rooms=true", nil); j["total_rooms"] != float64(1) || names(j["rooms"], "room_id")[0] != apple {
			t.Fatalf("public_rooms=true: %v", j)
		}
		if j = admin.ok(t, "GET", v1+"/rooms?public_rooms=false", nil); j["total_rooms"] != float64(2) {
			t.Fatalf("public_rooms=false: %v", j)
		}
		for _, q := range []string{"order_by=colour", "dir=sideways", "limit=-3", "from=one"} {
			hearthtest.Expect(t, admin.do(t, "GET", v1+"/rooms?"+q, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		}

		j = admin.ok(t, "GET", v1+"/rooms/"+apple, nil)
		if j["name"] != "Apple" || j["joined_members"] != float64(2) || j["joined_local_members"] != float64(2) ||
			j["creator"] != alice.id || j["canonical_alias"] != "#apple:hearth.test" || j["join_rules"] != "public" || j["forgotten"] != false ||
			j["public"] != true || j["joined_local_devices"] != float64(2) {
			t.Fatalf("details: %v", j)
		}
		hearthtest.Expect(t, admin.do(t, "GET", v1+"/rooms/!nope:hearth.test", nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, admin.do(t, "GET", v1+"/rooms/nope", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		j = admin.ok(t, "GET", v1+"/rooms/"+apple+"/members", nil)
		if j["total"] != float64(2) {
			t.Fatalf("members: %v", j)
		}
		j = admin.ok(t, "GET", v1+"/rooms/"+apple+"/state?type=m.room.name", nil)
		if st := j["state"].([]any); len(st) != 1 || st[0].(map[string]any)["content"].(map[string]any)["name"] != "Apple" {
			t.Fatalf("state: %v", j)
		}

		// A server admin may list the aliases of a room they are not in
		// (synadm's user membership does); others may not.
		aliases := "/_matrix/client/v3/rooms/" + url.PathEscape(apple) + "/aliases"
		if j = admin.ok(t, "GET", aliases, nil); len(j["aliases"].([]any)) != 1 {
			t.Fatalf("aliases for the admin: %v", j)
		}
		hearthtest.Expect(t, newUser(t, hs, "carol").do(t, "GET", aliases, nil), http.StatusForbidden, "M_FORBIDDEN")

		// Blocking (also of a room this server does not know).
		if j = admin.ok(t, "GET", v1+"/rooms/"+banana+"/block", nil); j["block"] != false {
			t.Fatalf("block status: %v", j)
		}
		admin.ok(t, "PUT", v1+"/rooms/"+banana+"/block", map[string]any{"block": true})
		if j = admin.ok(t, "GET", v1+"/rooms/"+banana+"/block", nil); j["block"] != true || j["user_id"] != admin.id {
			t.Fatalf("block status: %v", j)
		}
		hearthtest.Expect(t, bob.join(t, banana), http.StatusForbidden, "M_FORBIDDEN")
		admin.ok(t, "PUT", v1+"/rooms/"+banana+"/block", map[string]any{"block": false})
		hearthtest.Expect(t, bob.join(t, banana), http.StatusOK, "")
		admin.ok(t, "PUT", v1+"/rooms/!unknown:elsewhere.test/block", map[string]any{"block": true})
		hearthtest.Expect(t, admin.do(t, "PUT", v1+"/rooms/"+banana+"/block", map[string]any{}), http.StatusBadRequest, "M_BAD_JSON")

		// Deletion of apple: both members leave, the room is blocked, the
		// alias goes.
		hearthtest.Expect(t, admin.do(t, "DELETE", v2+"/rooms/!nope:hearth.test", map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
		j = admin.ok(t, "DELETE", v2+"/rooms/"+apple, map[string]any{"block": true})
		id, _ := j["delete_id"].(string)
		if id == "" {
			t.Fatalf("delete: %v", j)
		}
		var st map[string]any
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			st = admin.ok(t, "GET", v2+"/rooms/delete_status/"+id, nil)
			if st["status"] == "complete" || st["status"] == "failed" || time.Now().After(deadline) {
				break
			}
		}
		sr := st["shutdown_room"].(map[string]any)
		if st["status"] != "complete" || len(sr["kicked_users"].([]any)) != 2 || sr["local_aliases"].([]any)[0] != "#apple:hearth.test" {
			t.Fatalf("delete status: %v", st)
		}
		if m := alice.membership(t, apple); m != "" && m != "leave" {
			t.Fatalf("alice still %s", m)
		}
		j = admin.ok(t, "GET", v1+"/rooms/"+apple+"/members", nil)
		if j["total"] != float64(0) {
			t.Fatalf("members after deletion: %v", j)
		}
		if j = admin.ok(t, "GET", v1+"/rooms/"+apple, nil); j["public"] != false || j["canonical_alias"] != "#apple:hearth.test" {
			t.Fatalf("apple after the purge (unpublished; its state keeps the old canonical alias): %v", j)
		}
		hearthtest.Expect(t, bob.join(t, apple), http.StatusForbidden, "M_FORBIDDEN")
		j = admin.ok(t, "GET", v2+"/rooms/"+apple+"/delete_status", nil)
		if r := j["results"].([]any); len(r) != 1 || r[0].(map[string]any)["delete_id"] != id {
			t.Fatalf("delete_status by room: %v", j)
		}
		hearthtest.Expect(t, admin.do(t, "GET", v2+"/rooms/delete_status/nope", nil), http.StatusNotFound, "M_NOT_FOUND")

		// v1 deletes before answering; a room this server does not know
		// can only be blocked (v2 records that deletion complete at once).
		j = admin.ok(t, "DELETE", v1+"/rooms/"+banana, map[string]any{"purge": false})
		if k := j["kicked_users"].([]any); len(k) != 2 || j["new_room_id"] != nil {
			t.Fatalf("v1 delete: %v", j)
		}
		if j = admin.ok(t, "GET", v1+"/rooms/"+banana, nil); j["joined_members"] != float64(0) {
			t.Fatalf("banana after v1 delete: %v", j)
		}
		hearthtest.Expect(t, bob.join(t, banana), http.StatusOK, "") // not blocked
		hearthtest.Expect(t, admin.do(t, "DELETE", v1+"/rooms/"+cherry, map[string]any{"new_room_user_id": admin.id}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, admin.do(t, "DELETE", v1+"/rooms/"+cherry, map[string]any{"block": "yes"}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, admin.do(t, "DELETE", v1+"/rooms/"+cherry, nil), http.StatusBadRequest, "")
		unknown := "!unknown2:elsewhere.test"
		j = admin.ok(t, "DELETE", v2+"/rooms/"+unknown, map[string]any{"block": true})
		if st := admin.ok(t, "GET", v2+"/rooms/delete_status/"+j["delete_id"].(string), nil); st["status"] != "complete" {
			t.Fatalf("blocking an unknown room: %v", st)
		}
		if j = admin.ok(t, "GET", v1+"/rooms/"+unknown+"/block", nil); j["block"] != true {
			t.Fatalf("unknown room not blocked: %v", j)
		}
		hearthtest.Expect(t, admin.do(t, "GET", v2+"/rooms/"+cherry+"/delete_status", nil), http.StatusNotFound, "M_NOT_FOUND")
	})
}

// TestAdminEventReports: reports made through the client API are listed
// newest first with paging, shown with the event, and deleted.
func TestAdminEventReports(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		alice := newUser(t, hs, "alice")
		room := alice.createRoom(t, map[string]any{"name": "Reported"})
		var events []string
		for i, body := range []string{"one", "two", "three"} {
			j := alice.ok(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/send/m.room.message/t"+body, map[string]any{"msgtype": "m.text", "body": body})
			events = append(events, j["event_id"].(string))
			alice.ok(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/report/"+url.PathEscape(events[i]), map[string]any{"reason": "bad " + body, "score": -100})
			time.Sleep(2 * time.Millisecond)
		}
		alice.ok(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/report", map[string]any{"reason": "room"})

		j := admin.ok(t, "GET", v1+"/event_reports?limit=2", nil)
		reps := j["event_reports"].([]any)
		if j["total"] != float64(3) || len(reps) != 2 || j["next_token"] != float64(2) || reps[0].(map[string]any)["event_id"] != events[2] {
			t.Fatalf("reports: %v", j)
		}
		first := reps[0].(map[string]any)
		if first["name"] != "Reported" || first["sender"] != alice.id || first["user_id"] != alice.id || first["reason"] != "bad three" {
			t.Fatalf("report: %v", first)
		}
		j = admin.ok(t, "GET", v1+"/event_reports?dir=f&room_id="+url.QueryEscape(room), nil)
		if reps := j["event_reports"].([]any); len(reps) != 3 || reps[0].(map[string]any)["event_id"] != events[0] {
			t.Fatalf("dir=f: %v", j)
		}
		if j = admin.ok(t, "GET", v1+"/event_reports?user_id=nobody", nil); j["total"] != float64(0) {
			t.Fatalf("user filter: %v", j)
		}
		id := int(first["id"].(float64))
		path := v1 + "/event_reports/" + strconv.Itoa(id)
		j = admin.ok(t, "GET", path, nil)
		if ev, _ := j["event_json"].(map[string]any); ev == nil || ev["type"] != "m.room.message" {
			t.Fatalf("report details: %v", j)
		}
		admin.ok(t, "DELETE", path, nil)
		hearthtest.Expect(t, admin.do(t, "GET", path, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, admin.do(t, "DELETE", path, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, admin.do(t, "GET", v1+"/event_reports/x", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, admin.do(t, "GET", v1+"/event_reports?from=x", nil), http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// TestAdminRoomDeletionResumes: a deletion the process recorded but did
// not finish (as after kill -9: the row and the block committed, one
// member already gone) is finished by the next process to start.
func TestAdminRoomDeletionResumes(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		room := alice.createRoom(t, map[string]any{"preset": "public_chat", "room_alias_name": "doomed"})
		hearthtest.Expect(t, bob.join(t, room), http.StatusOK, "")
		ctx := t.Context()
		// What the DELETE request commits, and the progress of a first
		// process that got as far as bob: he left, alice did not.
		hearthtest.Expect(t, bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(room)+"/leave", map[string]any{}), http.StatusOK, "")
		err := hs.DB.WriteTx(ctx, func(tx *sql.Tx) error {
			d := storage.RoomDeletion{DeleteID: "crashed", RoomID: room, Requester: admin.id, Block: true, Purge: true,
				Status: "active", CreatedTS: time.Now().UnixMilli()}
			if err := storage.InsertRoomDeletion(ctx, tx, d); err != nil {
				return err
			}
			return storage.SetRoomBlocked(ctx, tx, room, true, admin.id)
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := hs.DB.UpdateRoomDeletion(ctx, storage.RoomDeletion{DeleteID: "crashed", Status: "active", KickedUsers: []string{bob.id}}); err != nil {
			t.Fatal(err)
		}
		hs.Restart(t)
		var st map[string]any
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			st = admin.ok(t, "GET", v2+"/rooms/delete_status/crashed", nil)
			if st["status"] == "complete" || st["status"] == "failed" || time.Now().After(deadline) {
				break
			}
		}
		sr := st["shutdown_room"].(map[string]any)
		if st["status"] != "complete" || len(sr["kicked_users"].([]any)) != 2 || len(sr["local_aliases"].([]any)) != 1 {
			t.Fatalf("resumed deletion: %v", st)
		}
		if j := admin.ok(t, "GET", v1+"/rooms/"+room+"/members", nil); j["total"] != float64(0) {
			t.Fatalf("members after the resumed deletion: %v", j)
		}
		hearthtest.Expect(t, alice.join(t, room), http.StatusForbidden, "M_FORBIDDEN")
	})
}
