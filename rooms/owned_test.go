package rooms

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/storage"
)

// Remote owned state (MSC3757) takes the one road with the room's rule:
// checks on receipt accept what the rule allows and reject the rest, and
// state resolution between two forks keeps the owned keys (gomatrixserverlib's
// resolution would drop them by its own rule 8).
func TestOwnedStateOnReceiptAndInResolution(t *testing.T) {
	for _, ver := range []gomatrixserverlib.RoomVersion{RoomVersionOwned10, RoomVersionOwned11} {
		t.Run(string(ver), func(t *testing.T) {
			const typ = "com.example.test"
			pl, _ := json.Marshal(map[string]any{roadAlice: 100, roadBob: 50})
			f := newRoadFixtureWith(t, CreateRequest{Creator: roadAlice, Preset: "public_chat", Version: ver,
				PowerLevelContentOverride: map[string]json.RawMessage{"events": json.RawMessage(`{"` + typ + `":0}`), "users": pl}})
			if v := f.room().Version; v != string(ver) {
				t.Fatalf("room version %q", v)
			}
			bob := roadBob
			head := f.stored(f.room().Extremities[0])
			join := f.arrive(arriveLive, f.remote(bob, spec.MRoomMember, &bob, map[string]any{"membership": spec.Join}, head), head)
			key := func(k string) *string { return &k }
			own := f.arrive(arriveLive, f.remote(bob, typ, key(bob+"_dev"), map[string]any{"n": 1}, join), join)
			lower := f.arrive(arriveLive, f.remote(bob, typ, key("@carol:b.test_dev"), map[string]any{"n": 2}, join), join)
			higher := f.arrive(arriveLive, f.remote(bob, typ, key(roadAlice+"_dev"), map[string]any{"n": 3}, join), join)
			malformed := f.arrive(arriveLive, f.remote(bob, typ, key("@oops_dev"), map[string]any{"n": 4}, join), join)
			own2 := f.arrive(arriveLive, f.remote(bob, typ, key(bob+"_dev"), map[string]any{"n": 5}, join), join)
			for _, ev := range []*Event{own, lower, own2} {
				if ev := f.stored(ev.EventID); ev.Rejected || ev.SoftFailed {
					t.Errorf("%s: rejected %v, soft-failed %v", *ev.PDU.StateKey(), ev.Rejected, ev.SoftFailed)
				}
			}
			for _, ev := range []*Event{higher, malformed} {
				if ev := f.stored(ev.EventID); !ev.Rejected {
					t.Errorf("%s was not rejected", *ev.PDU.StateKey())
				}
			}
			// own, lower and own2 are three forks on bob's join: the current
			// state is their resolution, which holds lower and one of own
			// and own2 (the same key: a conflict the auth rules decide).
			if ext := f.room().Extremities; len(ext) != 3 {
				t.Fatalf("extremities %v, want own, lower and own2", ext)
			}
			cur, err := f.r.CurrentState(context.Background(), f.roomID)
			if err != nil {
				t.Fatal(err)
			}
			if id := cur[storage.StateKey{Type: typ, StateKey: "@carol:b.test_dev"}]; id != lower.EventID {
				t.Errorf("current state of carol's key: %q, want %s", id, lower.EventID)
			}
			if id := cur[storage.StateKey{Type: typ, StateKey: bob + "_dev"}]; id != own.EventID && id != own2.EventID {
				t.Errorf("current state of bob's key: %q, want %s or %s", id, own.EventID, own2.EventID)
			}
			if _, ok := cur[storage.StateKey{Type: typ, StateKey: roadAlice + "_dev"}]; ok {
				t.Error("the rejected overwrite is in current state")
			}
		})
	}
}

func TestStateKeyOwner(t *testing.T) {
	for key, want := range map[string]string{
		"@a:hs":             "@a:hs",
		"@a:hs_":            "@a:hs",
		"@a:hs_x_y:z":       "@a:hs",
		"@a:hs:8448_dev":    "@a:hs:8448",
		"@a:[::1]:8448_dev": "@a:[::1]:8448",
		"@a_b:hs_dev":       "@a_b:hs",
		"@prefix_@a:hs_x":   "@prefix_@a:hs",
		"@a:hsx_dev":        "@a:hsx",
		"@oops":             "",
		"@oops_x":           "",
		"@a:hs@x_y":         "",
		"@a:_x":             "",
		"@a:bad host_x":     "",
		"@:hs":              "@:hs", // as Synapse: the localpart is not checked
	} {
		got, ok := stateKeyOwner(key)
		if !ok {
			got = ""
		}
		if got != want {
			t.Errorf("stateKeyOwner(%q) = %q, want %q", key, got, want)
		}
	}
}
