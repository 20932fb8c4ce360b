package admin_test

import (
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// waitTask polls a status endpoint until the task is done.
func waitTask(t *testing.T, admin user, statusPath string) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); ; {
		s := admin.ok(t, "GET", statusPath, nil)
		if s["status"] == "complete" || s["status"] == "failed" {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("task never finished: %v", s)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func send(t *testing.T, u user, room, body string) string {
	t.Helper()
	return u.ok(t, "PUT", path("/_matrix/client/v3/rooms", room, "send", "m.room.message", body), map[string]any{"msgtype": "m.text", "body": body})["event_id"].(string)
}

// TestRedactUser: every message of the user in their rooms is redacted by
// them through the room core; another user's stay. scheduled_tasks lists
// the task.
func TestRedactUser(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		bob := newUser(t, hs, "bob")
		carol := newUser(t, hs, "carol")
		room := carol.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.join(t, room), http.StatusOK, "")
		b1, b2, c1 := send(t, bob, room, "spam 1"), send(t, bob, room, "spam 2"), send(t, carol, room, "fine")

		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/user", bob.id, "redact"), map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/user", bob.id, "redact"), map[string]any{"rooms": []string{}, "limit": 0}), http.StatusBadRequest, "M_INVALID_PARAM")
		id := admin.ok(t, "POST", path("/_synapse/admin/v1/user", bob.id, "redact"), map[string]any{"rooms": []string{}, "reason": "spam"})["redact_id"].(string)
		s := waitTask(t, admin, path("/_synapse/admin/v1/user/redact_status", id))
		if s["status"] != "complete" || len(s["failed_redactions"].(map[string]any)) != 0 {
			t.Fatalf("redact status: %v", s)
		}
		for _, ev := range []string{b1, b2} {
			e := carol.ok(t, "GET", path("/_matrix/client/v3/rooms", room, "event", ev), nil)
			if len(e["content"].(map[string]any)) != 0 || e["unsigned"].(map[string]any)["redacted_because"].(map[string]any)["sender"] != bob.id {
				t.Fatalf("bob's event not redacted by bob: %v", e)
			}
		}
		if e := carol.ok(t, "GET", path("/_matrix/client/v3/rooms", room, "event", c1), nil); e["content"].(map[string]any)["body"] != "fine" {
			t.Fatalf("carol's event: %v", e)
		}
		hearthtest.Expect(t, admin.do(t, "GET", "/_synapse/admin/v1/user/redact_status/nope", nil), http.StatusNotFound, "M_NOT_FOUND")
		st := admin.ok(t, "GET", "/_synapse/admin/v1/scheduled_tasks?action_name=redact_all_events", nil)["scheduled_tasks"].([]any)
		if len(st) != 1 || st[0].(map[string]any)["id"] != id || st[0].(map[string]any)["resource_id"] != bob.id || st[0].(map[string]any)["status"] != "complete" {
			t.Fatalf("scheduled tasks: %v", st)
		}
	})
}

// TestPurgeHistory: timeline events before the point go (local ones only
// with delete_local_events); state and later events stay and the room
// goes on. A purge recorded active before a restart finishes after it.
func TestPurgeHistory(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		bob := newUser(t, hs, "bob")
		room := bob.createRoom(t, map[string]any{"name": "History"})
		var ids []string
		for i := range 4 {
			ids = append(ids, send(t, bob, room, "m"+strconv.Itoa(i)))
		}
		fetch := func(id string) int { return admin.do(t, "GET", path("/_synapse/admin/v1/fetch_event", id), nil).Status }

		// Without delete_local_events local events stay.
		id := admin.ok(t, "POST", path("/_synapse/admin/v1/purge_history", room, ids[2]), map[string]any{})["purge_id"].(string)
		if s := waitTask(t, admin, path("/_synapse/admin/v1/purge_history_status", id)); s["status"] != "complete" || fetch(ids[0]) != http.StatusOK {
			t.Fatalf("purge without local events: %v", s)
		}
		id = admin.ok(t, "POST", path("/_synapse/admin/v1/purge_history", room), map[string]any{"purge_up_to_event_id": ids[2], "delete_local_events": true})["purge_id"].(string)
		if s := waitTask(t, admin, path("/_synapse/admin/v1/purge_history_status", id)); s["status"] != "complete" {
			t.Fatalf("purge: %v", s)
		}
		if fetch(ids[0]) != http.StatusNotFound || fetch(ids[1]) != http.StatusNotFound || fetch(ids[2]) != http.StatusOK || fetch(ids[3]) != http.StatusOK {
			t.Fatalf("after purge: %d %d %d %d", fetch(ids[0]), fetch(ids[1]), fetch(ids[2]), fetch(ids[3]))
		}
		if d := admin.ok(t, "GET", path("/_synapse/admin/v1/rooms", room), nil); d["name"] != "History" {
			t.Fatalf("room state after purge: %v", d)
		}
		m := bob.ok(t, "GET", path("/_matrix/client/v3/rooms", room, "messages")+"?dir=b&limit=50", nil)["chunk"].([]any)
		for _, e := range m {
			if id := e.(map[string]any)["event_id"]; id == ids[0] || id == ids[1] {
				t.Fatalf("purged event %s still in /messages", id)
			}
		}
		send(t, bob, room, "after")

		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/purge_history", room), map[string]any{}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/purge_history", room), map[string]any{"purge_up_to_ts": "x"}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, admin.do(t, "GET", "/_synapse/admin/v1/purge_history_status/nope", nil), http.StatusNotFound, "M_NOT_FOUND")

		// A purge by timestamp left active by a process that stopped.
		params, _ := json.Marshal(map[string]any{"room_id": room, "depth": 1 << 40, "stream_pos": 0, "delete_local_events": true})
		err := hs.DB.InsertAdminTask(t.Context(), storage.AdminTask{ID: "resumed", Action: "purge_history", ResourceID: room,
			Params: string(params), Status: "active", Result: "{}", CreatedTS: 1, UpdatedTS: 1})
		if err != nil {
			t.Fatal(err)
		}
		hs.Restart(t)
		if s := waitTask(t, admin, "/_synapse/admin/v1/purge_history_status/resumed"); s["status"] != "complete" || fetch(ids[3]) != http.StatusNotFound {
			t.Fatalf("resumed purge: %v", s)
		}
		if st := admin.ok(t, "GET", "/_synapse/admin/v1/scheduled_tasks?resource_id="+room+"&status=complete", nil)["scheduled_tasks"].([]any); len(st) != 3 {
			t.Fatalf("scheduled tasks of the room: %v", st)
		}
	})
}
