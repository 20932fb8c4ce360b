package clientapi_test

import (
	"net/http"
	"slices"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

func toDeviceEvents(r hearthtest.Response) []map[string]any {
	var out []map[string]any
	td, _ := r.JSON["to_device"].(map[string]any)
	evs, _ := td["events"].([]any)
	for _, e := range evs {
		out = append(out, e.(map[string]any))
	}
	return out
}

// To-device messages reach each target device once, through its own sync,
// and never another device; they stay until a later sync acknowledges them.
func TestToDeviceThroughSync(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		r := passwordLogin(t, hs, "bob", "password", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		bob2 := user{hs, bob.id, r.JSON["access_token"].(string)}
		bob2Device := r.JSON["device_id"].(string)
		tok1 := bob.sync(t, "", "").JSON["next_batch"].(string)
		tok2 := bob2.sync(t, "", "").JSON["next_batch"].(string)
		// To bob's second device only.
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/t1", map[string]any{
			"messages": map[string]any{bob.id: map[string]any{bob2Device: map[string]any{"n": 1}}},
		}), http.StatusOK, "")
		r1 := bob.sync(t, tok1, "timeout=0")
		if len(toDeviceEvents(r1)) != 0 {
			t.Fatalf("message for device 2 reached device 1: %s", r1.Body)
		}
		r2 := bob2.sync(t, tok2, "timeout=5000")
		evs := toDeviceEvents(r2)
		if len(evs) != 1 || evs[0]["sender"] != alice.id || evs[0]["type"] != "m.test" {
			t.Fatalf("device 2 to-device: %s", r2.Body)
		}
		// Retrying the same sync (the response was lost) gives it again.
		if again := toDeviceEvents(bob2.sync(t, tok2, "timeout=0")); len(again) != 1 {
			t.Fatalf("to-device lost before acknowledgement: %v", again)
		}
		// Syncing from the new token acknowledges it: gone for good.
		next := r2.JSON["next_batch"].(string)
		if later := toDeviceEvents(bob2.sync(t, next, "timeout=0")); len(later) != 0 {
			t.Fatalf("to-device delivered twice: %v", later)
		}
		// "*" reaches every device of bob.
		hearthtest.Expect(t, alice.do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/t2", map[string]any{
			"messages": map[string]any{bob.id: map[string]any{"*": map[string]any{"n": 2}}},
		}), http.StatusOK, "")
		if n := len(toDeviceEvents(bob.sync(t, r1.JSON["next_batch"].(string), "timeout=5000"))); n != 1 {
			t.Fatalf("device 1 got %d messages for *", n)
		}
		if n := len(toDeviceEvents(bob2.sync(t, next, "timeout=5000"))); n != 1 {
			t.Fatalf("device 2 got %d messages for *", n)
		}
	})
}

// A new login shows up in device_lists.changed of the user's other devices
// and of users sharing a room.
func TestNewLoginInDeviceLists(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newUser(t, hs, "alice"), newUser(t, hs, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")
		aTok := alice.sync(t, "", "").JSON["next_batch"].(string)
		bTok := bob.sync(t, "", "").JSON["next_batch"].(string)
		hearthtest.Expect(t, passwordLogin(t, hs, "bob", "password", nil), http.StatusOK, "")
		for _, c := range []struct {
			u   user
			tok string
		}{{alice, aTok}, {bob, bTok}} {
			r := c.u.sync(t, c.tok, "timeout=5000")
			dl, _ := r.JSON["device_lists"].(map[string]any)
			changed, _ := dl["changed"].([]any)
			if !slices.Contains(changed, any(bob.id)) {
				t.Fatalf("%s's sync lacks bob in device_lists.changed: %s", c.u.id, r.Body)
			}
		}
	})
}
