package rooms

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/serverkey"
)

// The fast build of message-like events gives the same bytes and event ID
// as gomatrixserverlib's EventBuilder.Build (ed25519 signatures are
// deterministic), for every room version Hearth knows and contents that
// exercise canonical JSON; the events it does not handle, or content Build
// refuses, are left to Build.
func TestFastBuildMatchesLibrary(t *testing.T) {
	key, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	r := &Rooms{serverName: "hearth.test", key: key}
	ts := time.UnixMilli(1_700_000_000_123)
	empty := ""
	cases := []struct {
		name     string
		typ      string
		stateKey *string
		redacts  string
		content  string
		fast     bool
	}{
		{"message", "m.room.message", nil, "", `{"msgtype":"m.text","body":"hello"}`, true},
		{"empty content", "m.room.message", nil, "", `{}`, true},
		{"unsorted nested", "m.room.message", nil, "", `{"z":1,"a":{"y":[3,{"b":2,"a":1}],"x":null},"m":true}`, true},
		{"escapes and unicode", "m.room.message", nil, "", `{"body":"<b>&amp;</b> \"q\" \\ \u00e9\u2028\u0001 \ud83d\ude00 snow\u2603","format":"org.matrix.custom.html"}`, true},
		{"whitespace", "m.room.message", nil, "", "{ \"body\" :\n \"x\" ,\t\"n\": -12 }", true},
		{"encrypted", "m.room.encrypted", nil, "", `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"AwgA","device_id":"D","sender_key":"k","session_id":"s"}`, true},
		{"custom type with odd characters", "org.example.\u2028<&>", nil, "", `{"a":1}`, true},
		{"reaction", "m.reaction", nil, "", `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$x","key":"👍"}}`, true},
		{"integer out of range", "m.room.message", nil, "", `{"n":9007199254740993}`, true},
		{"not an object", "m.room.message", nil, "", `[1]`, false},
		{"state", "m.room.topic", &empty, "", `{"topic":"t"}`, false},
		{"member", "m.room.member", nil, "", `{"membership":"join"}`, false},
		{"redaction", "m.room.redaction", nil, "$target", `{"reason":"r","redacts":"$target"}`, false},
	}
	for _, v := range KnownVersions() {
		ver, err := gomatrixserverlib.GetRoomVersion(v)
		if err != nil {
			t.Fatal(err)
		}
		roomID := "!room:hearth.test"
		if ver.DomainlessRoomIDs() {
			roomID = "!31hneApxJ_1o-63DmFrpeqnkFfWppnzWso1JvH3ogLM"
		}
		for _, c := range cases {
			t.Run(string(v)+"/"+c.name, func(t *testing.T) {
				proto := func() *gomatrixserverlib.EventBuilder {
					b := ver.NewEventBuilderFromProtoEvent(&gomatrixserverlib.ProtoEvent{
						SenderID: "@alice:hearth.test", RoomID: roomID, Type: c.typ, StateKey: c.stateKey,
						PrevEvents: []string{"$prev1", "$prev2"}, AuthEvents: []string{"$a", "$b", "$c"},
						Depth: 42, Content: spec.RawJSON(c.content), Redacts: c.redacts, Version: ver,
					})
					return b
				}
				want, wantErr := proto().Build(ts, r.serverName, r.key.ID, r.key.Private)
				got, gotErr := r.fastBuild(ver, proto(), ts)
				switch {
				case wantErr != nil && got != nil:
					t.Fatalf("Build refused it (%v), the fast path built it", wantErr)
				case wantErr != nil:
					return
				case gotErr != nil:
					t.Fatalf("Build built it, the fast path refused it: %v", gotErr)
				case got == nil && c.fast && ver.EventFormat() == gomatrixserverlib.EventFormatV2:
					t.Fatalf("left to Build: %s", c.content)
				case got == nil:
					return
				case !c.fast:
					t.Fatal("built an event the fast path must leave to Build")
				}
				if !bytes.Equal(got.JSON(), want.JSON()) {
					t.Fatalf("JSON differs:\nfast:  %s\nBuild: %s", got.JSON(), want.JSON())
				}
				if got.EventID() != want.EventID() {
					t.Fatalf("event ID %s, Build's %s", got.EventID(), want.EventID())
				}
				// And it verifies as a remote server would check it.
				parsed, err := ver.NewEventFromUntrustedJSON(got.JSON())
				if err != nil || parsed.Redacted() || parsed.EventID() != got.EventID() {
					t.Fatalf("untrusted parse: %v, redacted %v, ID %s", err, parsed != nil && parsed.Redacted(), got.EventID())
				}
				var m map[string]json.RawMessage
				if err := json.Unmarshal(got.JSON(), &m); err != nil || m["signatures"] == nil {
					t.Fatalf("no signatures: %s", got.JSON())
				}
			})
		}
	}
}
