package clientapi_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// BenchmarkKeysUploadNewKeys is a POST /keys/upload of new device keys by
// a user with cross-signing set up, as a device signed in by QR makes it:
// plain (only the device's signature) and cross-signed (also the
// self-signing key's, which is checked and kept).
func BenchmarkKeysUploadNewKeys(b *testing.B) {
	for _, crossSigned := range []bool{false, true} {
		b.Run(fmt.Sprintf("cross-signed=%v", crossSigned), func(b *testing.B) {
			hs := hearthtest.NewServer(b, hearthtest.SQLite, nil)
			alice, token := hs.RegisterUser(b, "alice")
			device := hs.Do(b, "GET", "/_matrix/client/v3/account/whoami", token, nil).JSON["device_id"].(string)
			b64 := base64.RawStdEncoding.EncodeToString
			newKey := func() (string, ed25519.PrivateKey) {
				pub, priv, _ := ed25519.GenerateKey(rand.Reader)
				return b64(pub), priv
			}
			signed := func(obj map[string]any, keyName string, k ed25519.PrivateKey) map[string]any {
				raw, _ := json.Marshal(obj)
				out, err := gomatrixserverlib.SignJSON(alice, gomatrixserverlib.KeyID("ed25519:"+keyName), k, raw)
				if err != nil {
					b.Fatal(err)
				}
				var m map[string]any
				_ = json.Unmarshal(out, &m)
				return m
			}
			csKey := func(usage, pub string) map[string]any {
				return map[string]any{"user_id": alice, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub: pub}}
			}
			mPub, msk := newKey()
			sPub, ssk := newKey()
			uPub, _ := newKey()
			hearthtest.Expect(b, hs.Do(b, "POST", "/_matrix/client/v3/keys/device_signing/upload", token, map[string]any{
				"master_key": csKey("master", mPub), "self_signing_key": signed(csKey("self_signing", sPub), mPub, msk),
				"user_signing_key": signed(csKey("user_signing", uPub), mPub, msk)}), 200, "")
			bodies := make([]map[string]any, b.N)
			for i := range bodies {
				pub, priv := newKey()
				keys := signed(map[string]any{"user_id": alice, "device_id": device, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2"},
					"keys": map[string]string{"ed25519:" + device: pub, "curve25519:" + device: pub}}, device, priv)
				if crossSigned {
					keys = signed(keys, sPub, ssk)
				}
				bodies[i] = map[string]any{"device_keys": keys}
			}
			reportCPU(b)
			b.ResetTimer()
			for i := range b.N {
				hearthtest.Expect(b, hs.Do(b, "POST", "/_matrix/client/v3/keys/upload", token, bodies[i]), 200, "")
			}
		})
	}
}
