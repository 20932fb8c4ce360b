package admin_test

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestRoomJoinAndMakeRoomAdmin: the admin joins a user to a public room
// by alias; make_room_admin raises the caller through the room's own
// admin and invites them to a private room.
func TestRoomJoinAndMakeRoomAdmin(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		bob := newUser(t, hs, "bob")
		carol := newUser(t, hs, "carol")
		public := bob.createRoom(t, map[string]any{"preset": "public_chat", "room_alias_name": "pub"})
		private := bob.createRoom(t, map[string]any{"preset": "private_chat"})

		j := admin.ok(t, "POST", path("/_synapse/admin/v1/join", "#pub:hearth.test"), map[string]any{"user_id": carol.id})
		if j["room_id"] != public || carol.membership(t, public) != "join" {
			t.Fatalf("join: %v, membership %q", j, carol.membership(t, public))
		}
		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/join", private), map[string]any{"user_id": carol.id}), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/join", private), map[string]any{"user_id": "@x:elsewhere.test"}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/join", "#nope:hearth.test"), map[string]any{"user_id": carol.id}), http.StatusNotFound, "M_NOT_FOUND")

		admin.ok(t, "POST", path("/_synapse/admin/v1/rooms", private, "make_room_admin"), map[string]any{})
		if m := admin.membership(t, private); m != "" {
			t.Fatalf("admin not yet a member, got %q", m)
		}
		hearthtest.Expect(t, admin.join(t, private), http.StatusOK, "") // invited by bob
		pl := admin.ok(t, "GET", path("/_matrix/client/v3/rooms", private, "state", "m.room.power_levels", ""), nil)
		if pl["users"].(map[string]any)[admin.id] != float64(100) {
			t.Fatalf("power levels after make_room_admin: %v", pl)
		}
		// A room with no local member able to change power levels.
		carolsRoom := carol.createRoom(t, nil)
		carol.ok(t, "POST", path("/_matrix/client/v3/rooms", carolsRoom, "leave"), map[string]any{})
		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/rooms", carolsRoom, "make_room_admin"), map[string]any{}), http.StatusBadRequest, "M_BAD_JSON")
	})
}

// TestRoomTimelineAPIs: messages, context, timestamp_to_event,
// forward_extremities, fetch_event and hierarchy, for an admin who is not
// in the room.
func TestRoomTimelineAPIs(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		bob := newUser(t, hs, "bob")
		room := bob.createRoom(t, map[string]any{"preset": "private_chat"})
		var ids []string
		for i := range 3 {
			r := bob.ok(t, "PUT", path("/_matrix/client/v3/rooms", room, "send", "m.room.message", "t"+strconv.Itoa(i)), map[string]any{"msgtype": "m.text", "body": "m" + strconv.Itoa(i)})
			ids = append(ids, r["event_id"].(string))
		}
		base := path("/_synapse/admin/v1/rooms", room)
		m := admin.ok(t, "GET", base+"/messages?limit=2", nil)
		chunk := m["chunk"].([]any)
		if len(chunk) != 2 || chunk[0].(map[string]any)["event_id"] != ids[2] || chunk[1].(map[string]any)["event_id"] != ids[1] {
			t.Fatalf("messages: %v", m)
		}
		m = admin.ok(t, "GET", base+"/messages?limit=1&from="+url.QueryEscape(m["end"].(string)), nil)
		if m["chunk"].([]any)[0].(map[string]any)["event_id"] != ids[0] {
			t.Fatalf("messages, second page: %v", m)
		}
		f := admin.ok(t, "GET", base+"/messages?dir=f&limit=50&filter="+url.QueryEscape(`{"types":["m.room.message"]}`), nil)
		if len(f["chunk"].([]any)) != 3 {
			t.Fatalf("filtered forwards: %v", f)
		}
		hearthtest.Expect(t, admin.do(t, "GET", base+"/messages?dir=x", nil), http.StatusBadRequest, "M_INVALID_PARAM")

		c := admin.ok(t, "GET", base+"/context/"+url.PathEscape(ids[1])+"?limit=2", nil)
		if c["event"].(map[string]any)["event_id"] != ids[1] || c["events_before"].([]any)[0].(map[string]any)["event_id"] != ids[0] ||
			c["events_after"].([]any)[0].(map[string]any)["event_id"] != ids[2] || len(c["state"].([]any)) == 0 {
			t.Fatalf("context: %v", c)
		}
		hearthtest.Expect(t, admin.do(t, "GET", base+"/context/$nope", nil), http.StatusNotFound, "M_NOT_FOUND")

		ts := admin.ok(t, "GET", base+"/timestamp_to_event?ts=99999999999999&dir=b", nil)
		if ts["event_id"] != ids[2] {
			t.Fatalf("timestamp_to_event: %v", ts)
		}
		hearthtest.Expect(t, admin.do(t, "GET", base+"/timestamp_to_event", nil), http.StatusBadRequest, "M_MISSING_PARAM")

		fe := admin.ok(t, "GET", base+"/forward_extremities", nil)
		if fe["count"] != float64(1) || fe["results"].([]any)[0].(map[string]any)["event_id"] != ids[2] {
			t.Fatalf("forward_extremities: %v", fe)
		}
		if e := admin.ok(t, "GET", path("/_synapse/admin/v1/fetch_event", ids[0]), nil); e["event"].(map[string]any)["content"].(map[string]any)["body"] != "m0" {
			t.Fatalf("fetch_event: %v", e)
		}
		hearthtest.Expect(t, admin.do(t, "GET", path("/_synapse/admin/v1/fetch_event", "$nope"), nil), http.StatusNotFound, "M_NOT_FOUND")

		space := bob.createRoom(t, map[string]any{"creation_content": map[string]any{"type": "m.space"}, "name": "Space"})
		bob.ok(t, "PUT", path("/_matrix/client/v3/rooms", space, "state", "m.space.child", room), map[string]any{"via": []string{"hearth.test"}})
		h := admin.ok(t, "GET", path("/_synapse/admin/v1/rooms", space, "hierarchy"), nil)
		rs := h["rooms"].([]any)
		if len(rs) != 2 || rs[0].(map[string]any)["room_id"] != space || rs[1].(map[string]any)["room_id"] != room ||
			len(rs[0].(map[string]any)["children_state"].([]any)) != 1 {
			t.Fatalf("hierarchy: %v", h)
		}
		if h := admin.ok(t, "GET", path("/_synapse/admin/v1/rooms", space, "hierarchy")+"?limit=1", nil); h["next_batch"] != "1" {
			t.Fatalf("hierarchy page: %v", h)
		}
	})
}
