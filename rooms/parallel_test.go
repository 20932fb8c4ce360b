package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/serverkey"
	"github.com/hearth-matrix/hearth/storage"
)

// authOrder puts each event after its auth events in the set, whatever
// order they came in, keeps events whose auth events are outside the set,
// and loses none.
func TestAuthOrder(t *testing.T) {
	key, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	build := func(typ, stateKey string, auth ...gomatrixserverlib.PDU) gomatrixserverlib.PDU {
		t.Helper()
		ids := []string{}
		for _, a := range auth {
			ids = append(ids, a.EventID())
		}
		c, _ := json.Marshal(map[string]any{"k": typ + stateKey})
		sk := stateKey
		b := ver.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{SenderID: "@a:a.test", RoomID: "!r:a.test",
			Type: typ, StateKey: &sk, Content: c, PrevEvents: []string{}, AuthEvents: ids, Depth: 1, Version: ver})
		p, err := b.Build(time.Now(), "a.test", key.ID, key.Private)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	create := build("m.room.create", "")
	member := build("m.room.member", "@a:a.test", create)
	pl := build("m.room.power_levels", "", create, member)
	outside := build("m.room.member", "@b:a.test", create) // its auth event is not in the set below
	var custom []gomatrixserverlib.PDU
	for i := range 50 {
		custom = append(custom, build("org.example", string(rune('a'+i%26))+string(rune('a'+i/26)), create, member, pl))
	}
	in := slices.Concat(custom, []gomatrixserverlib.PDU{pl, outside, member, create})
	withoutCreate := slices.Concat(custom, []gomatrixserverlib.PDU{pl, outside, member})
	for _, set := range [][]gomatrixserverlib.PDU{in, withoutCreate} {
		out := authOrder(set)
		if len(out) != len(set) {
			t.Fatalf("%d events in, %d out", len(set), len(out))
		}
		pos := map[string]int{}
		for i, p := range out {
			pos[p.EventID()] = i
		}
		for _, p := range set {
			if _, ok := pos[p.EventID()]; !ok {
				t.Fatalf("lost %s", p.EventID())
			}
			for _, a := range p.AuthEventIDs() {
				if j, ok := pos[a]; ok && j > pos[p.EventID()] {
					t.Fatalf("%s (%s) comes before its auth event %s", p.EventID(), p.Type(), a)
				}
			}
		}
	}
}

// A snapshot read when an ancestor is cached (the deltas after it applied
// to a copy) is the state LoadSnapshot assembles from the database, for
// every snapshot of a chain longer than one full copy's interval.
func TestSnapshotFromCachedAncestor(t *testing.T) {
	f := newRoadFixture(t)
	ctx := context.Background()
	var snaps []int64
	for i := range 120 {
		k := strconv.Itoa(i % 70) // some keys set twice
		c, _ := json.Marshal(map[string]int{"v": i})
		evs, err := f.r.Send(ctx, f.roomID, Proto{Sender: roadAlice, Type: "org.example.s", StateKey: &k, Content: c})
		if err != nil {
			t.Fatal(err)
		}
		snaps = append(snaps, f.stored(evs[0].EventID).SnapshotAfter)
	}
	for i, id := range snaps {
		want, _, err := storage.LoadSnapshot(ctx, f.r.db.Read(), id)
		if err != nil {
			t.Fatal(err)
		}
		for _, back := range []int{1, 5, 47, 60} {
			if i < back {
				continue
			}
			f.r.snapshots.clear()
			anc, err := f.r.snapshotState(ctx, f.r.db.Read(), snaps[i-back])
			if err != nil {
				t.Fatal(err)
			}
			f.r.snapshots.clear()
			f.r.snapshots.put(anc.id, anc)
			got, err := f.r.snapshotState(ctx, f.r.db.Read(), id)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got.state, want) {
				t.Fatalf("snapshot %d (event %d) from the one %d events before: %d entries, want %d", id, i, back, len(got.state), len(want))
			}
		}
	}
}

// readInParts reads a big list in parts and joins every result once; an
// error of any part is the read's.
func TestReadInParts(t *testing.T) {
	for _, n := range []int{0, 10, readInPartsFrom - 1, readInPartsFrom, 3*readInPartsFrom + 7} {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = strconv.Itoa(i)
		}
		got, err := readInParts(ids, func(part []string) ([]string, error) { return slices.Clone(part), nil })
		if err != nil {
			t.Fatal(err)
		}
		slices.SortFunc(got, func(a, b string) int { x, _ := strconv.Atoi(a); y, _ := strconv.Atoi(b); return x - y })
		if !slices.Equal(got, ids) {
			t.Fatalf("%d ids: got %d back, not each once", n, len(got))
		}
	}
	ids := make([]string, 2*readInPartsFrom)
	ids[len(ids)-1] = "bad"
	if _, err := readInParts(ids, func(part []string) ([]string, error) {
		if slices.Contains(part, "bad") {
			return nil, errors.New("bad part")
		}
		return part, nil
	}); err == nil {
		t.Fatal("a part's error was lost")
	}
}
