package rooms

import (
	"encoding/json"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/serverkey"
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
