package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestRoomUpgrade(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, mallory := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "mallory")
		old := alice.createRoom(t, map[string]any{"room_version": "10", "preset": "public_chat", "visibility": "public",
			"name": "Old name", "topic": "Old topic", "room_alias_name": "upgrade-me",
			"creation_content":             map[string]any{"type": "m.space"},
			"power_level_content_override": map[string]any{"users": map[string]any{alice.id: 100, bob.id: 50}}})
		alice.putState(t, old, "m.room.history_visibility", "", map[string]any{"history_visibility": "world_readable"})
		alice.putState(t, old, "m.room.avatar", "", map[string]any{"url": "mxc://hearth.test/avatar"})
		alice.putState(t, old, "com.example.custom", "", map[string]any{"not": "copied"})
		hearthtest.Expect(t, bob.member(t, old, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, mallory.member(t, old, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.member(t, old, "ban", map[string]any{"user_id": mallory.id}), http.StatusOK, "")
		up := "/_matrix/client/v3/rooms/" + url.PathEscape(old) + "/upgrade"

		hearthtest.Expect(t, bob.do(t, "POST", up, map[string]any{"new_version": "11"}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, alice.do(t, "POST", up, map[string]any{"new_version": "999"}), http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
		hearthtest.Expect(t, alice.do(t, "POST", up, map[string]any{}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/rooms/!nope:hearth.test/upgrade", map[string]any{"new_version": "11"}), http.StatusNotFound, "M_NOT_FOUND")

		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape(old),
			map[string]any{"actions": []any{"dont_notify"}}), http.StatusOK, "")
		r := alice.do(t, "POST", up, map[string]any{"new_version": "11"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		newRoom := r.JSON["replacement_room"].(string)
		// Bob's push rule for the old room was copied for the new one.
		r = bob.do(t, "GET", "/_matrix/client/v3/pushrules/global/room/"+url.PathEscape(newRoom), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if acts, _ := r.JSON["actions"].([]any); len(acts) != 1 || acts[0] != "dont_notify" {
			t.Fatalf("copied push rule: %s", r.Body)
		}
		state := func(u user, roomID, evType, key string) map[string]any {
			t.Helper()
			r := u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+evType+"/"+url.PathEscape(key), nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r.JSON
		}
		create := state(alice, newRoom, "m.room.create", "")
		if create["room_version"] != "11" || create["type"] != "m.space" || path(create, "predecessor", "room_id") != old {
			t.Fatalf("new create event: %v", create)
		}
		if state(alice, newRoom, "m.room.name", "")["name"] != "Old name" || state(alice, newRoom, "m.room.topic", "")["topic"] != "Old topic" ||
			state(alice, newRoom, "m.room.join_rules", "")["join_rule"] != "public" ||
			state(alice, newRoom, "m.room.history_visibility", "")["history_visibility"] != "world_readable" ||
			state(alice, newRoom, "m.room.avatar", "")["url"] != "mxc://hearth.test/avatar" {
			t.Fatalf("transferable state not copied")
		}
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(newRoom)+"/state/com.example.custom/", nil), http.StatusNotFound, "M_NOT_FOUND")
		if pl := state(alice, newRoom, "m.room.power_levels", ""); path(pl, "users", bob.id) != float64(50) {
			t.Fatalf("power levels not copied: %v", pl)
		}
		if m := state(alice, newRoom, "m.room.member", mallory.id); m["membership"] != "ban" {
			t.Fatalf("ban not copied: %v", m)
		}
		if ca := state(alice, newRoom, "m.room.canonical_alias", ""); ca["alias"] != "#upgrade-me:hearth.test" {
			t.Fatalf("canonical alias: %v", ca)
		}
		r = hs.Do(t, "GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#upgrade-me:hearth.test"), "", nil)
		if r.JSON["room_id"] != newRoom {
			t.Fatalf("alias not moved: %s", r.Body)
		}
		if r = hs.Do(t, "GET", "/_matrix/client/v3/directory/list/room/"+newRoom, "", nil); r.JSON["visibility"] != "public" {
			t.Fatalf("new room not published: %s", r.Body)
		}
		if r = hs.Do(t, "GET", "/_matrix/client/v3/directory/list/room/"+old, "", nil); r.JSON["visibility"] != "private" {
			t.Fatalf("old room still published: %s", r.Body)
		}
		// The old room: tombstone, no canonical alias, silenced.
		if ts := state(bob, old, "m.room.tombstone", ""); ts["replacement_room"] != newRoom {
			t.Fatalf("tombstone: %v", ts)
		}
		if ca := state(bob, old, "m.room.canonical_alias", ""); ca["alias"] != nil {
			t.Fatalf("old canonical alias: %v", ca)
		}
		if pl := state(bob, old, "m.room.power_levels", ""); pl["events_default"] != float64(50) || pl["invite"] != float64(50) {
			t.Fatalf("old power levels: %v", pl)
		}
		// Bob (level 50) may still talk there; a new member (level 0) may not.
		carol := newUser(t, hs, "carol")
		hearthtest.Expect(t, carol.member(t, old, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, carol.send(t, old, "hello?"), http.StatusForbidden, "M_FORBIDDEN")
		// The new room is joinable.
		hearthtest.Expect(t, bob.member(t, newRoom, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, mallory.member(t, newRoom, "join", nil), http.StatusForbidden, "M_FORBIDDEN")
	})
}
