package rooms

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// FuzzParseTopoToken: an accepted pagination token re-encodes to a token
// that parses to the same value, and that encoding is a fixed point.
func FuzzParseTopoToken(f *testing.F) {
	for _, s := range []string{
		"t1_0", "t12_345", "t3_-7", "t5_9_120", "t0_0_1", "t9223372036854775807_-9223372036854775808_9223372036854775807",
		"", "t", "t1", "t1_", "t-1_0", "t1_2_0", "t1_2_-3", "t1_2_3_4", "s1_2_3_4_5_6_7", "t+1_2", "t01_2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseTopoToken(s)
		if err != nil {
			return
		}
		if !strings.HasPrefix(s, "t") || tok.Depth < 0 || tok.Stream < 0 {
			t.Fatalf("accepted %q as %+v", s, tok)
		}
		enc := tok.String()
		again, err := ParseTopoToken(enc)
		if err != nil || again != tok {
			t.Fatalf("%q parsed to %+v; its encoding %q parses to %+v, %v", s, tok, enc, again, err)
		}
		if again.String() != enc {
			t.Fatalf("encoding is not a fixed point: %q then %q", enc, again.String())
		}
	})
}

// seedPDUs builds a create, power levels, member and message event in each
// supported room version, signed with a fixed key, as a remote server
// would send them.
func seedPDUs(tb testing.TB) [][]byte {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	const origin = "remote.example"
	now := time.UnixMilli(1_700_000_000_000)
	var out [][]byte
	for _, v := range SupportedVersions {
		ver := gomatrixserverlib.MustGetRoomVersion(v)
		build := func(p gomatrixserverlib.ProtoEvent) gomatrixserverlib.PDU {
			ev, err := ver.NewEventBuilderFromProtoEvent(&p).Build(now, origin, "ed25519:fuzz", key)
			if err != nil {
				tb.Fatalf("building a %s event in version %s: %v", p.Type, v, err)
			}
			out = append(out, ev.JSON())
			return ev
		}
		empty := ""
		sender := "@alice:" + origin
		roomID := "!room:" + origin
		createContent := `{"creator":"` + sender + `","room_version":"` + string(v) + `"}`
		if ver.DomainlessRoomIDs() {
			createContent = `{"room_version":"` + string(v) + `","additional_creators":["@bob:other.example"]}`
			roomID = ""
		}
		create := build(gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: spec.MRoomCreate, StateKey: &empty,
			Content: []byte(createContent), PrevEvents: []string{}, AuthEvents: []string{}, Depth: 1})
		authOf := func(evs ...gomatrixserverlib.PDU) any {
			if v == gomatrixserverlib.RoomVersionV1 || v == gomatrixserverlib.RoomVersionV2 {
				refs := []any{}
				for _, e := range evs {
					refs = append(refs, []any{e.EventID(), map[string]string{"sha256": "abc"}})
				}
				return refs
			}
			ids := []string{}
			for _, e := range evs {
				if ver.DomainlessRoomIDs() && e.Type() == spec.MRoomCreate {
					continue
				}
				ids = append(ids, e.EventID())
			}
			return ids
		}
		if ver.DomainlessRoomIDs() {
			roomID = "!" + strings.TrimPrefix(create.EventID(), "$")
		}
		member := build(gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: spec.MRoomMember, StateKey: &sender,
			Content: []byte(`{"membership":"join","displayname":"Alice \"A\" \\o/"}`), PrevEvents: authOf(create), AuthEvents: authOf(create), Depth: 2})
		pl := build(gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: spec.MRoomPowerLevels, StateKey: &empty,
			Content:    []byte(`{"users":{"` + sender + `":100},"events":{"m.room.name":50},"notifications":{"room":50},"users_default":0}`),
			PrevEvents: authOf(member), AuthEvents: authOf(create, member), Depth: 3})
		build(gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: "m.room.message",
			Content:    []byte(`{"msgtype":"m.text","body":"hello ☃","m.mentions":{},"n":9007199254740991,"neg":-9007199254740991}`),
			PrevEvents: authOf(pl), AuthEvents: authOf(create, member, pl), Depth: 4})
	}
	return out
}

// TestSeedPDUsParse keeps the fuzz seeds honest: each parses, unredacted, in
// its own room version.
func TestSeedPDUsParse(t *testing.T) {
	seeds := seedPDUs(t)
	if len(seeds) != 4*len(SupportedVersions) {
		t.Fatalf("%d seeds", len(seeds))
	}
	for i, raw := range seeds {
		ver := gomatrixserverlib.MustGetRoomVersion(SupportedVersions[i/4])
		pdu, err := ver.NewEventFromUntrustedJSON(raw)
		if err != nil {
			t.Fatalf("seed %d (version %s): %v", i, ver.Version(), err)
		}
		if pdu.Redacted() {
			t.Errorf("seed %d (version %s) is redacted on parsing", i, ver.Version())
		}
	}
}

// FuzzPDU parses untrusted PDU JSON in every supported room version, as
// /send and the other inbound federation paths do (parseRemote: the
// version's parser, tolerating the byte limits of old versions). An event
// that parses must:
//   - have JSON that is valid, canonical (canonicalising it again changes
//     nothing) and means the same as the input's fields it kept;
//   - parse again from its own JSON to the same event ID, room, sender,
//     type and state key (what the server stores is pdu.JSON());
//   - name the room that /send's own room_id read finds in the input, or
//     the transaction would route it to one room and store it in another
//     (but for version 12 create events, whose room is derived);
//   - give a stored row and stripped state without panicking.
func FuzzPDU(f *testing.F) {
	for _, raw := range seedPDUs(f) {
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, v := range SupportedVersions {
			ver := gomatrixserverlib.MustGetRoomVersion(v)
			pdu, err := parsePDU(ver, raw)
			if err != nil {
				continue
			}
			js := pdu.JSON()
			if !json.Valid(js) {
				t.Fatalf("version %s: parsed event has invalid JSON %q", v, js)
			}
			canon, err := gomatrixserverlib.CanonicalJSON(js)
			if err != nil || !bytes.Equal(canon, js) {
				t.Fatalf("version %s: event JSON is not canonical:\n%s\n%s (%v)", v, js, canon, err)
			}
			again, err := parsePDU(ver, js)
			if err != nil {
				t.Fatalf("version %s: event JSON %s does not parse again: %v", v, js, err)
			}
			if again.EventID() != pdu.EventID() || again.RoomID() != pdu.RoomID() || again.SenderID() != pdu.SenderID() ||
				again.Type() != pdu.Type() || !reflect.DeepEqual(again.StateKey(), pdu.StateKey()) || !bytes.Equal(again.JSON(), js) {
				t.Fatalf("version %s: re-parsing changed the event: %s / %s, %s / %s", v, pdu.EventID(), again.EventID(), js, again.JSON())
			}
			var head struct {
				RoomID string `json:"room_id"`
			}
			// A version 12 create event's room is its own hash, whatever
			// room_id says; ReceivePDU refuses it for any room /send names.
			derived := ver.DomainlessRoomIDs() && pdu.Type() == spec.MRoomCreate && pdu.StateKeyEquals("")
			if json.Unmarshal(raw, &head) == nil && head.RoomID != pdu.RoomID().String() && !derived {
				t.Fatalf("version %s: /send reads room %q, the parsed event is in %q", v, head.RoomID, pdu.RoomID().String())
			}
			row := eventRow(pdu)
			if row.EventID != pdu.EventID() || row.RoomID != pdu.RoomID().String() {
				t.Fatalf("version %s: row %+v", v, row)
			}
			if pdu.StateKey() != nil && !json.Valid(StrippedJSON(pdu)) {
				t.Fatalf("version %s: stripped state is not JSON: %s", v, StrippedJSON(pdu))
			}
		}
	})
}
