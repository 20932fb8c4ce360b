package rooms_test

import (
	"context"
	"errors"
	"maps"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// The point lookups that replace copies of the whole state agree with
// that state: CurrentStateIDs, CurrentStateOfType and StateIDsAt give
// exactly the entries of CurrentState or StateAt they are asked for (a
// missing key is absent), and PowerLevels and SpaceChildren still say
// ErrNotFound for an unknown room.
func TestStateLookupsAgreeWithWholeState(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		ctx := context.Background()
		roomID := c.createRoom(t, "private_chat")
		c.send(t, roomID, stateProto(alice, "org.example.a", "x", map[string]int{"v": 1}))
		mid := c.send(t, roomID, stateProto(alice, "org.example.a", "y", map[string]int{"v": 1}))
		c.send(t, roomID, stateProto(alice, "org.example.a", "x", map[string]int{"v": 2})) // replaces
		c.send(t, roomID, stateProto(alice, "org.example.a", "z", map[string]int{"v": 1}))
		c.send(t, roomID, stateProto(alice, "org.example.b", "x", map[string]int{"v": 1}))
		c.send(t, roomID, message(alice, "not state"))

		r := c.fresh()
		whole, err := r.CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		only := func(st rooms.State, keep func(storage.StateKey) bool) rooms.State {
			out := rooms.State{}
			for k, id := range st {
				if keep(k) {
					out[k] = id
				}
			}
			return out
		}
		ofType, err := r.CurrentStateOfType(ctx, roomID, "org.example.a")
		if err != nil {
			t.Fatal(err)
		}
		if want := only(whole, func(k storage.StateKey) bool { return k.Type == "org.example.a" }); len(want) != 3 || !maps.Equal(ofType, want) {
			t.Fatalf("CurrentStateOfType = %v, want %v", ofType, want)
		}
		if none, err := r.CurrentStateOfType(ctx, roomID, "m.space.child"); err != nil || len(none) != 0 {
			t.Fatalf("CurrentStateOfType of an absent type = %v, %v", none, err)
		}

		keys := []storage.StateKey{{Type: spec.MRoomCreate}, {Type: "org.example.a", StateKey: "x"},
			{Type: spec.MRoomName}, {Type: "org.example.b", StateKey: "y"}} // the last two absent
		got, err := r.CurrentStateIDs(ctx, roomID, keys...)
		if err != nil {
			t.Fatal(err)
		}
		want := only(whole, func(k storage.StateKey) bool { return k == keys[0] || k == keys[1] })
		if len(want) != 2 || !maps.Equal(got, want) {
			t.Fatalf("CurrentStateIDs = %v, want %v", got, want)
		}

		before, err := r.StateAt(ctx, mid.SnapshotAfter)
		if err != nil {
			t.Fatal(err)
		}
		at, err := r.StateIDsAt(ctx, mid.SnapshotAfter, keys...)
		if err != nil {
			t.Fatal(err)
		}
		if want := only(before, func(k storage.StateKey) bool { return k == keys[0] || k == keys[1] }); len(want) != 2 || !maps.Equal(at, want) {
			t.Fatalf("StateIDsAt = %v, want %v", at, want)
		}
		if at[keys[1]] == got[keys[1]] {
			t.Fatal("StateIDsAt gave the current event of a key replaced since")
		}

		if pl, err := r.PowerLevels(ctx, roomID); err != nil || pl.UserLevel(spec.SenderID(alice)) != 100 {
			t.Fatalf("PowerLevels = %v, %v", pl, err)
		}
		unknown := "!unknown:hearth.test"
		if _, err := r.PowerLevels(ctx, unknown); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("PowerLevels of an unknown room: %v", err)
		}
		if _, err := r.SpaceChildren(ctx, unknown); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("SpaceChildren of an unknown room: %v", err)
		}
	})
}
