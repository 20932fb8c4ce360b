package clientapi_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func stateContent(t *testing.T, u user, roomID, evType, key string) map[string]any {
	t.Helper()
	r := u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/"+evType+"/"+url.PathEscape(key), nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON
}

// createEventID finds the m.room.create event's ID in /state.
func createEventID(t *testing.T, u user, roomID string) string {
	t.Helper()
	r := u.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	var evs []map[string]any
	if err := json.Unmarshal(r.Body, &evs); err != nil {
		t.Fatal(err)
	}
	for _, ev := range evs {
		if ev["type"] == "m.room.create" {
			if ev["room_id"] != roomID {
				t.Errorf("create event's room_id: %v", ev["room_id"])
			}
			return ev["event_id"].(string)
		}
	}
	t.Fatalf("no create event in %s", r.Body)
	return ""
}

// Room version 12 (MSC4291, MSC4289): the room ID is the create event's
// hash; creators are not in the power levels and outrank everyone.
func TestRoomVersion12(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"room_version": "12", "preset": "public_chat", "name": "twelve"})
		if strings.Contains(roomID, ":") || len(roomID) != 44 {
			t.Fatalf("room ID %q is not domainless", roomID)
		}
		if id := createEventID(t, alice, roomID); id != "$"+roomID[1:] {
			t.Fatalf("room ID %s is not the create event %s", roomID, id)
		}
		pl := stateContent(t, alice, roomID, "m.room.power_levels", "")
		if users, _ := pl["users"].(map[string]any); len(users) != 0 {
			t.Errorf("power levels list users: %v", pl["users"])
		}
		if path(pl, "events", "m.room.tombstone") != float64(150) {
			t.Errorf("tombstone level: %v", path(pl, "events"))
		}
		if stateContent(t, alice, roomID, "m.room.create", "")["room_version"] != "12" {
			t.Errorf("room version")
		}
		// Sending, joining, names: the room works.
		hearthtest.Expect(t, alice.send(t, roomID, "hello"), http.StatusOK, "")
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, bob.send(t, roomID, "hi"), http.StatusOK, "")
		if got := bodies(t, alice.messages(t, roomID, "dir=b&limit=10")); !sameStrings(got, []string{"hi", "hello"}) {
			t.Errorf("messages: %v", got)
		}
		r := alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/event/"+url.PathEscape("$"+roomID[1:]), nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["room_id"] != roomID {
			t.Errorf("/event of the create event: %s", r.Body)
		}
		// The create event cannot be sent again.
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.create/", map[string]any{"room_version": "12", "x": 1}), http.StatusBadRequest, "")

		// The creator may not list herself in the power levels.
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.power_levels/",
			map[string]any{"users": map[string]any{alice.id: 100}}), http.StatusBadRequest, "M_BAD_JSON")
		// Bob at the highest canonical JSON integer is still below alice.
		alice.putState(t, roomID, "m.room.power_levels", "", map[string]any{"users": map[string]any{bob.id: int64(1)<<53 - 1}})
		hearthtest.Expect(t, bob.member(t, roomID, "kick", map[string]any{"user_id": alice.id}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, alice.member(t, roomID, "kick", map[string]any{"user_id": bob.id}), http.StatusOK, "")

		// Unknown room IDs without a domain are 404, not a crash.
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/rooms/!AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/state", nil), http.StatusNotFound, "M_NOT_FOUND")
	})
}

func TestRoomVersion12Creators(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, charlie := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "charlie")
		create := func(body map[string]any) hearthtest.Response {
			body["room_version"] = "12"
			return alice.do(t, "POST", "/_matrix/client/v3/createRoom", body)
		}
		for _, bad := range []any{"not-an-array", []any{"@foo:example.com", 42}, []any{"not-a-user-id"}, []any{"@invalid:dom$ain$.com"}} {
			hearthtest.Expect(t, create(map[string]any{"creation_content": map[string]any{"additional_creators": bad}}), http.StatusBadRequest, "M_BAD_JSON")
		}
		hearthtest.Expect(t, create(map[string]any{"power_level_content_override": map[string]any{"users": map[string]any{alice.id: 100}}}), http.StatusBadRequest, "")

		// An additional creator outranks the creator's kicks and may do
		// what creators do.
		r := create(map[string]any{"preset": "public_chat", "creation_content": map[string]any{"additional_creators": []string{bob.id}}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID := r.JSON["room_id"].(string)
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, alice.member(t, roomID, "kick", map[string]any{"user_id": bob.id}), http.StatusForbidden, "M_FORBIDDEN")
		bob.putState(t, roomID, "m.room.name", "", map[string]any{"name": "bob's"})
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.power_levels/",
			map[string]any{"users": map[string]any{bob.id: 100}}), http.StatusBadRequest, "M_BAD_JSON")
		// An admin at 100 cannot upgrade a new version 12 room: the
		// tombstone needs 150.
		hearthtest.Expect(t, charlie.member(t, roomID, "join", nil), http.StatusOK, "")
		pl := stateContent(t, alice, roomID, "m.room.power_levels", "")
		pl["users"] = map[string]any{charlie.id: 100}
		alice.putState(t, roomID, "m.room.power_levels", "", pl)
		hearthtest.Expect(t, charlie.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/upgrade", map[string]any{"new_version": "12"}), http.StatusForbidden, "M_FORBIDDEN")

		// trusted_private_chat: the invitees become additional creators,
		// next to those given in creation_content.
		r = create(map[string]any{"preset": "trusted_private_chat", "is_direct": true, "invite": []string{bob.id},
			"creation_content": map[string]any{"additional_creators": []string{charlie.id}}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		roomID = r.JSON["room_id"].(string)
		got, _ := stateContent(t, alice, roomID, "m.room.create", "")["additional_creators"].([]any)
		if len(got) != 2 || got[0] != charlie.id || got[1] != bob.id {
			t.Errorf("additional_creators: %v", got)
		}
		if users, _ := stateContent(t, alice, roomID, "m.room.power_levels", "")["users"].(map[string]any); len(users) != 0 {
			t.Errorf("power levels list creators: %v", users)
		}
		// Bob's invite shows the full create event (MSC4311).
		r = bob.sync(t, "", "")
		hearthtest.Expect(t, r, http.StatusOK, "")
		events, _ := path(r.JSON, "rooms", "invite", roomID, "invite_state", "events").([]any)
		found := false
		for _, e := range events {
			ev := e.(map[string]any)
			if ev["type"] == "m.room.create" {
				found = true
				if ev["origin_server_ts"] == nil || ev["signatures"] == nil {
					t.Errorf("create event in invite_state is not the full event: %v", ev)
				}
			} else if ev["origin_server_ts"] != nil {
				t.Errorf("other stripped events stay stripped: %v", ev)
			}
		}
		if !found {
			t.Errorf("no create event in invite_state: %s", r.Body)
		}
	})
}

func TestUpgradeToRoomVersion12(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob, charlie := newUser(t, hs, "alice"), newUser(t, hs, "bob"), newUser(t, hs, "charlie")
		old := alice.createRoom(t, map[string]any{"room_version": "11", "preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, old, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, charlie.member(t, old, "join", nil), http.StatusOK, "")
		alice.putState(t, old, "m.room.power_levels", "", map[string]any{"users": map[string]any{alice.id: 100, bob.id: 100, charlie.id: 50}})
		up := "/_matrix/client/v3/rooms/" + url.PathEscape(old) + "/upgrade"
		hearthtest.Expect(t, alice.do(t, "POST", up, map[string]any{"new_version": "11", "additional_creators": []string{bob.id}}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "POST", up, map[string]any{"new_version": "12", "additional_creators": []string{"nope"}}), http.StatusBadRequest, "M_INVALID_PARAM")
		r := alice.do(t, "POST", up, map[string]any{"new_version": "12", "additional_creators": []string{bob.id}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		newRoom := r.JSON["replacement_room"].(string)
		if id := createEventID(t, alice, newRoom); id != "$"+newRoom[1:] {
			t.Fatalf("upgraded room ID %s is not its create event %s", newRoom, id)
		}
		create := stateContent(t, alice, newRoom, "m.room.create", "")
		if create["room_version"] != "12" || path(create, "predecessor", "room_id") != old || path(create, "predecessor", "event_id") != nil {
			t.Errorf("create content: %v", create)
		}
		if ac, _ := create["additional_creators"].([]any); len(ac) != 1 || ac[0] != bob.id {
			t.Errorf("additional_creators: %v", create["additional_creators"])
		}
		users, _ := stateContent(t, alice, newRoom, "m.room.power_levels", "")["users"].(map[string]any)
		if len(users) != 1 || users[charlie.id] != float64(50) {
			t.Errorf("upgraded power levels users: %v", users)
		}
		if stateContent(t, alice, old, "m.room.tombstone", "")["replacement_room"] != newRoom {
			t.Errorf("tombstone")
		}
		// Bob, a creator, upgrades again, making charlie an extra creator.
		hearthtest.Expect(t, charlie.member(t, newRoom, "join", nil), http.StatusOK, "")
		hearthtest.Expect(t, bob.member(t, newRoom, "join", nil), http.StatusOK, "")
		bob.putState(t, newRoom, "m.room.power_levels", "", map[string]any{"users": map[string]any{charlie.id: 100}})
		up = "/_matrix/client/v3/rooms/" + url.PathEscape(newRoom) + "/upgrade"
		r = bob.do(t, "POST", up, map[string]any{"new_version": "12", "additional_creators": []string{charlie.id}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		third := r.JSON["replacement_room"].(string)
		if users, _ := stateContent(t, bob, third, "m.room.power_levels", "")["users"].(map[string]any); len(users) != 0 {
			t.Errorf("power levels after upgrade by a creator: %v", users)
		}
	})
}
