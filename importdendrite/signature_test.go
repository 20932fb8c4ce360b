package importdendrite

import (
	"crypto/ed25519"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/sjson"

	"github.com/hearth-matrix/hearth/serverkey"
)

// The import verifies this server's signature on its own events with the
// current or an old key, and names what is wrong otherwise.
func TestCheckOwnSignature(t *testing.T) {
	key, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	other, _ := serverkey.Generate()
	ver := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	im := &importer{server: "a.test", rep: newReport("a.test"), verifyKeys: map[gomatrixserverlib.KeyID]ed25519.PublicKey{key.ID: key.Public()}}
	build := func(sender string, k serverkey.Key) gomatrixserverlib.PDU {
		proto := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: "!r:a.test", Type: "m.room.message",
			Content: []byte(`{"body":"hi"}`), PrevEvents: []string{}, AuthEvents: []string{}, Depth: 3, Version: ver}
		pdu, err := ver.NewEventBuilderFromProtoEvent(proto).Build(time.Now(), spec.ServerName("a.test"), k.ID, k.Private)
		if err != nil {
			t.Fatal(err)
		}
		return pdu
	}
	if bad := im.checkOwnSignature(ver, build("@u:a.test", key)); bad != "" {
		t.Errorf("a good signature: %s", bad)
	}
	if bad := im.checkOwnSignature(ver, build("@u:b.test", other)); bad != "" {
		t.Errorf("another server's event is not ours to check: %s", bad)
	}
	if bad := im.checkOwnSignature(ver, build("@u:a.test", other)); !strings.Contains(bad, "no key") {
		t.Errorf("signed by an unknown key: %q", bad)
	}
	good := build("@u:a.test", key)
	forged, _ := sjson.SetBytes(good.JSON(), "signatures.a\\.test."+strings.ReplaceAll(string(key.ID), ".", "\\."), "AAAA"+strings.Repeat("A", 82))
	pdu, err := ver.NewEventFromTrustedJSON(forged, false)
	if err != nil {
		t.Fatal(err)
	}
	if bad := im.checkOwnSignature(ver, pdu); !strings.Contains(bad, "does not verify") {
		t.Errorf("a forged signature: %q", bad)
	}
}
