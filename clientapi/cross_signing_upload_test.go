package clientapi_test

import (
	"fmt"
	"net/http"
	"sort"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestDeviceKeysUploadedCrossSigned: a new device may upload its keys
// already signed by the user's self-signing key (MSC4108, as a device
// signed in by QR does): that signature is kept and shown by /keys/query;
// one by another key, or not verifying, is dropped.
func TestDeviceKeysUploadedCrossSigned(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newE2EDevice(t, hs, "alice")
		cs := newCrossSigning(t)
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", cs.upload(t, alice)), http.StatusOK, "")

		// sigs are the key IDs signing one of alice's devices, as /keys/query shows them.
		sigs := func(deviceID string) []string {
			r := alice.do(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.id: []string{}}})
			hearthtest.Expect(t, r, http.StatusOK, "")
			m, _ := jsonPath(r.JSON, "device_keys", alice.id, deviceID, "signatures", alice.id).(map[string]any)
			var out []string
			for k := range m {
				out = append(out, k)
			}
			sort.Strings(out)
			return out
		}
		// Signed by the user-signing key (the wrong one) and by a forged self-signing key: both dropped.
		bad := addDevice(t, hs, alice.user, "BADSIGNED")
		keys := sign(t, bad.deviceKeys(t), alice.id, pubOf(cs.usr), cs.usr)
		_, other := newKeyPair(t)
		keys = sign(t, keys, alice.id, pubOf(cs.self), other)
		hearthtest.Expect(t, bad.upload(t, map[string]any{"device_keys": keys}), http.StatusOK, "")
		if got := sigs("BADSIGNED"); fmt.Sprint(got) != "[ed25519:BADSIGNED]" {
			t.Fatalf("signatures of BADSIGNED: %v, want only its own", got)
		}

		good := addDevice(t, hs, alice.user, "QRSIGNED")
		keys = sign(t, good.deviceKeys(t), alice.id, pubOf(cs.self), cs.self)
		hearthtest.Expect(t, good.upload(t, map[string]any{"device_keys": keys}), http.StatusOK, "")
		want := []string{"ed25519:QRSIGNED", "ed25519:" + pubOf(cs.self)}
		sort.Strings(want)
		if got := sigs("QRSIGNED"); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("signatures of QRSIGNED: %v, want %v", got, want)
		}
	})
}
