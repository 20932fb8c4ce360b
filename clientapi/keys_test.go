package clientapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// e2eDevice is a test device with an ed25519 identity key.
type e2eDevice struct {
	user
	deviceID string
	priv     ed25519.PrivateKey
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }

func newKeyPair(t *testing.T) (string, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return b64(pub), priv
}

// sign signs obj as signer with key "ed25519:"+keyName.
func sign(t *testing.T, obj map[string]any, signer, keyName string, priv ed25519.PrivateKey) map[string]any {
	t.Helper()
	b, _ := json.Marshal(obj)
	signed, err := gomatrixserverlib.SignJSON(signer, gomatrixserverlib.KeyID("ed25519:"+keyName), priv, b)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	_ = json.Unmarshal(signed, &out)
	return out
}

// newE2EDevice registers a user (or, with an existing user, adds a device
// to them) with a fresh identity key.
func newE2EDevice(t *testing.T, hs *hearthtest.Server, name string) e2eDevice {
	u := newUser(t, hs, name)
	owner, err := hs.DB.LookupAccessToken(context.Background(), u.token)
	if err != nil {
		t.Fatal(err)
	}
	_, priv := newKeyPair(t)
	return e2eDevice{user: u, deviceID: owner.DeviceID, priv: priv}
}

// addDevice gives u another device with its own token.
func addDevice(t *testing.T, hs *hearthtest.Server, u user, deviceID string) e2eDevice {
	token := accounts.NewToken("mat_")
	err := hs.DB.WriteTx(context.Background(), func(tx *sql.Tx) error {
		if err := storage.UpsertDevice(context.Background(), tx, storage.Device{UserID: u.id, DeviceID: deviceID, CreatedTS: 1}); err != nil {
			return err
		}
		return storage.InsertAccessToken(context.Background(), tx, storage.AccessToken{Token: token, UserID: u.id, DeviceID: deviceID, CreatedTS: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
	_, priv := newKeyPair(t)
	return e2eDevice{user: user{hs, u.id, token}, deviceID: deviceID, priv: priv}
}

func (d e2eDevice) pub() string { return b64(d.priv.Public().(ed25519.PublicKey)) }

func (d e2eDevice) deviceKeys(t *testing.T) map[string]any {
	return sign(t, map[string]any{
		"user_id": d.id, "device_id": d.deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + d.deviceID: d.pub(), "curve25519:" + d.deviceID: "curve" + d.deviceID},
	}, d.id, d.deviceID, d.priv)
}

func (d e2eDevice) otks(t *testing.T, from, n int) map[string]any {
	out := map[string]any{}
	for i := from; i < from+n; i++ {
		out[fmt.Sprintf("signed_curve25519:K%03d", i)] = sign(t, map[string]any{"key": fmt.Sprintf("otk-%s-%d", d.deviceID, i)}, d.id, d.deviceID, d.priv)
	}
	return out
}

func (d e2eDevice) upload(t *testing.T, body map[string]any) hearthtest.Response {
	t.Helper()
	return d.do(t, "POST", "/_matrix/client/v3/keys/upload", body)
}

func (d e2eDevice) claim(t *testing.T, target e2eDevice) map[string]any {
	t.Helper()
	r := d.do(t, "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{target.id: map[string]string{target.deviceID: "signed_curve25519"}}})
	hearthtest.Expect(t, r, http.StatusOK, "")
	got, _ := jsonPath(r.JSON, "one_time_keys", target.id, target.deviceID).(map[string]any)
	return got
}

func jsonPath(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func TestKeysUploadQueryClaim(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newE2EDevice(t, hs, "alice")
		bob := newE2EDevice(t, hs, "bob")
		ctx := context.Background()

		r := alice.upload(t, map[string]any{
			"device_keys":   alice.deviceKeys(t),
			"one_time_keys": alice.otks(t, 0, 2),
			"fallback_keys": map[string]any{"signed_curve25519:FB1": sign(t, map[string]any{"key": "fallback1", "fallback": true}, alice.id, alice.deviceID, alice.priv)},
		})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if n := jsonPath(r.JSON, "one_time_key_counts", "signed_curve25519"); n != float64(2) {
			t.Fatalf("counts: %s", r.Body)
		}
		// Re-uploading the same keys is fine; a known ID with new content is not.
		hearthtest.Expect(t, alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t), "one_time_keys": alice.otks(t, 0, 2)}), http.StatusOK, "")
		other := map[string]any{"signed_curve25519:K000": map[string]any{"key": "different"}}
		hearthtest.Expect(t, alice.upload(t, map[string]any{"one_time_keys": other}), http.StatusBadRequest, "M_INVALID_PARAM")
		// Device keys: bad signature, another user, another device, missing fields.
		bad := alice.deviceKeys(t)
		bad["algorithms"] = []string{"tampered"}
		hearthtest.Expect(t, alice.upload(t, map[string]any{"device_keys": bad}), http.StatusBadRequest, "M_INVALID_SIGNATURE")
		hearthtest.Expect(t, bob.upload(t, map[string]any{"device_keys": alice.deviceKeys(t)}), http.StatusBadRequest, "M_BAD_JSON")
		wrongDevice := alice
		wrongDevice.deviceID = "OTHERDEVICE"
		hearthtest.Expect(t, alice.upload(t, map[string]any{"device_keys": wrongDevice.deviceKeys(t)}), http.StatusBadRequest, "M_BAD_JSON")
		hearthtest.Expect(t, alice.upload(t, map[string]any{"device_keys": map[string]any{"user_id": alice.id, "device_id": alice.deviceID}}), http.StatusBadRequest, "M_BAD_JSON")

		// Query: bob sees alice's device keys with her signature; bob has none.
		r = bob.do(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.id: []string{}, bob.id: []string{}}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		dk, _ := jsonPath(r.JSON, "device_keys", alice.id, alice.deviceID).(map[string]any)
		if dk == nil || jsonPath(dk, "keys", "ed25519:"+alice.deviceID) != alice.pub() {
			t.Fatalf("query: %s", r.Body)
		}
		want := alice.deviceKeys(t)["signatures"]
		if fmt.Sprint(dk["signatures"]) != fmt.Sprint(want) {
			t.Fatalf("signatures: got %v want %v", dk["signatures"], want)
		}
		if m, ok := jsonPath(r.JSON, "device_keys", bob.id).(map[string]any); !ok || len(m) != 0 {
			t.Fatalf("bob's device keys should be an empty object: %s", r.Body)
		}
		// A device ID given as an object instead of a list is M_BAD_JSON.
		r = bob.do(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.id: map[string]bool{"X": true}}})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_BAD_JSON")

		// Claim: the two one-time keys in upload order, then the fallback key, again and again.
		for i, want := range []string{"signed_curve25519:K000", "signed_curve25519:K001", "signed_curve25519:FB1", "signed_curve25519:FB1"} {
			got := bob.claim(t, alice)
			if _, ok := got[want]; !ok || len(got) != 1 {
				t.Fatalf("claim %d: got %v, want %s", i, got, want)
			}
		}
		types, err := hs.E2EE.UnusedFallbackKeyTypes(ctx, alice.id, alice.deviceID)
		if err != nil || len(types) != 0 {
			t.Fatalf("unused fallback types after use: %v %v", types, err)
		}
		// Unknown users and devices are left out, not errors.
		r = bob.do(t, "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{
			"@nobody:hearth.test": map[string]string{"X": "signed_curve25519"}, bob.id: map[string]string{"NODEVICE": "signed_curve25519"}}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if m, _ := r.JSON["one_time_keys"].(map[string]any); len(m) != 0 {
			t.Fatalf("claim of unknown: %s", r.Body)
		}
		// A new fallback key is unused again; counts for sync.
		hearthtest.Expect(t, alice.upload(t, map[string]any{
			"one_time_keys": alice.otks(t, 10, 3),
			"fallback_keys": map[string]any{"signed_curve25519:FB2": sign(t, map[string]any{"key": "fallback2", "fallback": true}, alice.id, alice.deviceID, alice.priv)},
		}), http.StatusOK, "")
		types, _ = hs.E2EE.UnusedFallbackKeyTypes(ctx, alice.id, alice.deviceID)
		counts, _ := hs.E2EE.OneTimeKeyCounts(ctx, alice.id, alice.deviceID)
		if len(types) != 1 || types[0] != "signed_curve25519" || counts["signed_curve25519"] != 3 {
			t.Fatalf("fallback types %v, counts %v", types, counts)
		}
	})
}

func TestConcurrentClaimsNeverShareAKey(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newE2EDevice(t, hs, "alice")
		bob := newE2EDevice(t, hs, "bob")
		hearthtest.Expect(t, alice.upload(t, map[string]any{
			"device_keys":   alice.deviceKeys(t),
			"one_time_keys": alice.otks(t, 0, 10),
			"fallback_keys": map[string]any{"signed_curve25519:FB": sign(t, map[string]any{"key": "fb", "fallback": true}, alice.id, alice.deviceID, alice.priv)},
		}), http.StatusOK, "")
		var mu sync.Mutex
		var got []string
		var wg sync.WaitGroup
		for range 20 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for id := range bob.claim(t, alice) {
					mu.Lock()
					got = append(got, id)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		sort.Strings(got)
		seen := map[string]int{}
		for _, id := range got {
			seen[id]++
		}
		if len(got) != 20 || seen["signed_curve25519:FB"] != 10 || len(seen) != 11 {
			t.Fatalf("claims: %v", got)
		}
		for id, n := range seen {
			if id != "signed_curve25519:FB" && n != 1 {
				t.Fatalf("one-time key %s handed out %d times", id, n)
			}
		}
	})
}
