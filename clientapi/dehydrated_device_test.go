package clientapi_test

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestDehydratedDevice covers MSC3814: upload (keys in the same request,
// nothing written on bad input), bob reaching the dehydrated device while
// alice's real devices are off (key query, one-time key claim, to-device),
// reading its messages in batches without deleting them, replacement and
// deletion.
func TestDehydratedDevice(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newE2EDevice(t, hs, "alice"), newE2EDevice(t, hs, "bob")
		const base = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
		_, priv := newKeyPair(t)
		dd := e2eDevice{user: alice.user, deviceID: "DEHYDRATED1", priv: priv}
		upload := func(d e2eDevice, keys map[string]any) hearthtest.Response {
			return alice.do(t, "PUT", base, map[string]any{
				"device_id":                   d.deviceID,
				"device_data":                 map[string]any{"algorithm": "org.matrix.msc3814.v1.olm", "device_pickle": "pickle-" + d.deviceID},
				"initial_device_display_name": "Offline backup",
				"device_keys":                 keys,
				"one_time_keys":               d.otks(t, 0, 2),
			})
		}
		hearthtest.Expect(t, alice.do(t, "GET", base, nil), http.StatusNotFound, "M_NOT_FOUND")

		// Bad input writes nothing.
		hearthtest.Expect(t, alice.do(t, "PUT", base, map[string]any{"device_data": map[string]any{}}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, alice.do(t, "PUT", base, map[string]any{"device_id": "X", "device_data": "str", "device_keys": dd.deviceKeys(t)}), http.StatusBadRequest, "M_BAD_JSON")
		forged := dd.deviceKeys(t)
		forged["algorithms"] = []string{"tampered"}
		hearthtest.Expect(t, upload(dd, forged), http.StatusBadRequest, "M_INVALID_SIGNATURE")
		taken := e2eDevice{user: alice.user, deviceID: alice.deviceID, priv: priv}
		hearthtest.Expect(t, upload(taken, taken.deviceKeys(t)), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, alice.do(t, "GET", base, nil), http.StatusNotFound, "M_NOT_FOUND")
		if devs, _ := alice.do(t, "GET", "/_matrix/client/v3/devices", nil).JSON["devices"].([]any); len(devs) != 1 {
			t.Fatalf("a failed upload left devices behind: %v", devs)
		}

		r := upload(dd, dd.deviceKeys(t))
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["device_id"] != dd.deviceID {
			t.Fatalf("PUT: %s", r.Body)
		}
		r = alice.do(t, "GET", base, nil)
		if r.JSON["device_id"] != dd.deviceID || jsonPath(r.JSON, "device_data", "device_pickle") != "pickle-DEHYDRATED1" {
			t.Fatalf("GET: %s", r.Body)
		}

		// Bob finds the device and its keys, claims a key and sends to it.
		r = bob.do(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.id: []string{}}})
		if jsonPath(r.JSON, "device_keys", alice.id, dd.deviceID, "keys", "ed25519:"+dd.deviceID) != dd.pub() {
			t.Fatalf("keys/query lacks the dehydrated device: %s", r.Body)
		}
		if len(bob.claim(t, dd)) != 1 {
			t.Fatal("no one-time key to claim for the dehydrated device")
		}
		for i, txn := range []string{"k1", "k2", "k3"} {
			r := bob.do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/"+txn,
				map[string]any{"messages": map[string]any{alice.id: map[string]any{dd.deviceID: map[string]any{"n": i}}}})
			hearthtest.Expect(t, r, http.StatusOK, "")
		}

		events := func(deviceID, nextBatch string) hearthtest.Response {
			body := map[string]any{}
			if nextBatch != "" {
				body["next_batch"] = nextBatch
			}
			return alice.do(t, "POST", base+"/"+url.PathEscape(deviceID)+"/events", body)
		}
		hearthtest.Expect(t, events(alice.deviceID, ""), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, events(dd.deviceID, "not-a-token"), http.StatusBadRequest, "M_INVALID_PARAM")
		for round := 0; round < 2; round++ { // reading deletes nothing
			r = events(dd.deviceID, "")
			hearthtest.Expect(t, r, http.StatusOK, "")
			evs, _ := r.JSON["events"].([]any)
			if len(evs) != 3 || jsonPath(evs[0], "sender") != bob.id || jsonPath(evs[2], "content", "n") != float64(2) {
				t.Fatalf("round %d events: %s", round, r.Body)
			}
		}
		next, _ := r.JSON["next_batch"].(string)
		r = events(dd.deviceID, next)
		if evs, _ := r.JSON["events"].([]any); len(evs) != 0 || r.JSON["next_batch"] == nil {
			t.Fatalf("after the last batch: %s", r.Body)
		}

		// A new dehydrated device replaces the old one, keys and all.
		_, priv2 := newKeyPair(t)
		dd2 := e2eDevice{user: alice.user, deviceID: "DEHYDRATED2", priv: priv2}
		hearthtest.Expect(t, upload(dd2, dd2.deviceKeys(t)), http.StatusOK, "")
		r = bob.do(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.id: []string{}}})
		if jsonPath(r.JSON, "device_keys", alice.id, dd.deviceID) != nil || jsonPath(r.JSON, "device_keys", alice.id, dd2.deviceID) == nil {
			t.Fatalf("after replacement: %s", r.Body)
		}
		hearthtest.Expect(t, events(dd.deviceID, ""), http.StatusForbidden, "M_FORBIDDEN")

		r = alice.do(t, "DELETE", base, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["device_id"] != dd2.deviceID {
			t.Fatalf("DELETE: %s", r.Body)
		}
		hearthtest.Expect(t, alice.do(t, "GET", base, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "DELETE", base, nil), http.StatusNotFound, "M_NOT_FOUND")
		if devs, _ := alice.do(t, "GET", "/_matrix/client/v3/devices", nil).JSON["devices"].([]any); len(devs) != 1 {
			t.Fatalf("deleted dehydrated device still listed: %v", devs)
		}
	})
}
