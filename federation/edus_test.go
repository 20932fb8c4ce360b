package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// sharedRoom has bob (on B) create a public room and alice (on A) join it,
// and waits until B sees her joined.
func sharedRoom(t *testing.T, alice, bob fedUser) string {
	t.Helper()
	r := bob.do(t, "POST", "/_matrix/client/v3/createRoom", map[string]any{"preset": "public_chat"})
	hearthtest.Expect(t, r, http.StatusOK, "")
	roomID := r.JSON["room_id"].(string)
	r = alice.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(bob.hs.Config.ServerName), map[string]any{})
	hearthtest.Expect(t, r, http.StatusOK, "")
	eventually(t, "B sees alice joined", func() bool {
		r := bob.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/joined_members", nil)
		return strings.Contains(string(r.Body), alice.id)
	})
	return roomID
}

func eventually(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// syncer follows one device's incremental syncs.
type syncer struct {
	u     fedUser
	since string
}

func newSyncer(t *testing.T, u fedUser) *syncer {
	s := &syncer{u: u}
	s.next(t, 0)
	return s
}

func (s *syncer) next(t *testing.T, timeoutMS int) map[string]any {
	t.Helper()
	path := fmt.Sprintf("/_matrix/client/v3/sync?timeout=%d", timeoutMS)
	if s.since != "" {
		path += "&since=" + url.QueryEscape(s.since)
	}
	r := s.u.do(t, "GET", path, nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	s.since = r.JSON["next_batch"].(string)
	return r.JSON
}

// until syncs until match accepts a response.
func (s *syncer) until(t *testing.T, what string, match func(resp map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if resp := s.next(t, 1000); match(resp) {
			return resp
		}
	}
	t.Fatalf("%s never saw %s", s.u.id, what)
	return nil
}

func get(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func contains(list any, s string) bool {
	l, _ := list.([]any)
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

func ephemeral(resp map[string]any, roomID, typ string) map[string]any {
	evs, _ := get(resp, "rooms", "join", roomID, "ephemeral", "events").([]any)
	for _, e := range evs {
		if get(e, "type") == typ {
			return e.(map[string]any)
		}
	}
	return nil
}

// Typing, read receipts and presence of a user on A reach a user on B.
func TestTypingReceiptsPresenceOverFederation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		roomID := sharedRoom(t, alice, bob)
		bobSync := newSyncer(t, bob)

		r := alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/typing/"+url.PathEscape(alice.id), map[string]any{"typing": true, "timeout": 10000})
		hearthtest.Expect(t, r, http.StatusOK, "")
		bobSync.until(t, "alice typing", func(resp map[string]any) bool {
			return contains(get(ephemeral(resp, roomID, "m.typing"), "content", "user_ids"), alice.id)
		})
		r = alice.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/typing/"+url.PathEscape(alice.id), map[string]any{"typing": false})
		hearthtest.Expect(t, r, http.StatusOK, "")
		bobSync.until(t, "alice stop typing", func(resp map[string]any) bool {
			ev := ephemeral(resp, roomID, "m.typing")
			return ev != nil && !contains(get(ev, "content", "user_ids"), alice.id)
		})

		bob.send(t, roomID, "read me")
		alice.waitForMessage(t, roomID, "read me")
		r = alice.do(t, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=1", nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		eventID := get(r.JSON["chunk"].([]any)[0], "event_id").(string)
		r = alice.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/receipt/m.read/"+url.PathEscape(eventID), map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		bobSync.until(t, "alice's receipt", func(resp map[string]any) bool {
			return get(ephemeral(resp, roomID, "m.receipt"), "content", eventID, "m.read", alice.id) != nil
		})

		r = alice.do(t, "PUT", "/_matrix/client/v3/presence/"+url.PathEscape(alice.id)+"/status", map[string]any{"presence": "unavailable", "status_msg": "away from A"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		bobSync.until(t, "alice's presence", func(resp map[string]any) bool {
			evs, _ := get(resp, "presence", "events").([]any)
			for _, e := range evs {
				if get(e, "sender") == alice.id && get(e, "content", "status_msg") == "away from A" && get(e, "content", "presence") == "unavailable" {
					return true
				}
			}
			return false
		})
	})
}

// e2eDevice is a device with an ed25519 identity key.
type e2eDevice struct {
	fedUser
	deviceID string
	priv     ed25519.PrivateKey
}

func newE2EDevice(t *testing.T, u fedUser) e2eDevice {
	t.Helper()
	r := u.do(t, "GET", "/_matrix/client/v3/account/whoami", nil)
	hearthtest.Expect(t, r, http.StatusOK, "")
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return e2eDevice{fedUser: u, deviceID: r.JSON["device_id"].(string), priv: priv}
}

// login gives u another device.
func login(t *testing.T, u fedUser, deviceID string) e2eDevice {
	t.Helper()
	r := u.hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
		"identifier": map[string]any{"type": "m.id.user", "user": u.id}, "password": "password", "device_id": deviceID})
	hearthtest.Expect(t, r, http.StatusOK, "")
	return newE2EDevice(t, fedUser{u.hs, u.id, r.JSON["access_token"].(string)})
}

func (d e2eDevice) pub() string {
	return base64.RawStdEncoding.EncodeToString(d.priv.Public().(ed25519.PublicKey))
}

func signObject(t *testing.T, obj map[string]any, signer, keyName string, priv ed25519.PrivateKey) map[string]any {
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

// uploadKeys uploads the device's identity keys and n one-time keys.
func (d e2eDevice) uploadKeys(t *testing.T, n int) {
	t.Helper()
	otks := map[string]any{}
	for i := range n {
		otks[fmt.Sprintf("signed_curve25519:K%d", i)] = signObject(t, map[string]any{"key": fmt.Sprintf("otk-%s-%d", d.deviceID, i)}, d.id, d.deviceID, d.priv)
	}
	keys := signObject(t, map[string]any{
		"user_id": d.id, "device_id": d.deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys":       map[string]string{"ed25519:" + d.deviceID: d.pub(), "curve25519:" + d.deviceID: "curve-" + d.deviceID},
	}, d.id, d.deviceID, d.priv)
	r := d.do(t, "POST", "/_matrix/client/v3/keys/upload", map[string]any{"device_keys": keys, "one_time_keys": otks})
	hearthtest.Expect(t, r, http.StatusOK, "")
}

func (d e2eDevice) queryKeys(t *testing.T, userID string) hearthtest.Response {
	t.Helper()
	r := d.do(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{userID: []string{}}})
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r
}

// A to-device message from A reaches the device on B exactly once, a
// retried request delivers nothing again, and a server cannot send one in
// the name of another server's user.
func TestToDeviceOverFederation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 3, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		bobDev := newE2EDevice(t, bob)
		bobSync := newSyncer(t, bob)
		send := func(txn, body string) {
			r := alice.do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+txn, map[string]any{
				"messages": map[string]any{bob.id: map[string]any{bobDev.deviceID: map[string]any{"body": body}}}})
			hearthtest.Expect(t, r, http.StatusOK, "")
		}
		send("t1", "first")
		send("t1", "first") // a retry of the same request
		var bodies []string
		collect := func(resp map[string]any) {
			evs, _ := get(resp, "to_device", "events").([]any)
			for _, e := range evs {
				if get(e, "sender") != alice.id || get(e, "type") != "m.test" {
					t.Fatalf("unexpected to-device event %v", e)
				}
				bodies = append(bodies, get(e, "content", "body").(string))
			}
		}
		bobSync.until(t, "the to-device message", func(resp map[string]any) bool { collect(resp); return len(bodies) > 0 })

		// A forged EDU: C claims to send for alice's server's user.
		forged, _ := json.Marshal(map[string]any{"sender": alice.id, "type": "m.test", "message_id": "forged1",
			"messages": map[string]any{bob.id: map[string]any{"*": map[string]any{"body": "forged"}}}})
		c := fed[2]
		_, err := c.Federation.Client().SendTransaction(context.Background(), gomatrixserverlib.Transaction{
			TransactionID: "forge", Origin: spec.ServerName(c.Config.ServerName), Destination: spec.ServerName(bob.hs.Config.ServerName),
			OriginServerTS: spec.AsTimestamp(time.Now()), PDUs: []json.RawMessage{},
			EDUs: []gomatrixserverlib.EDU{{Type: spec.MDirectToDevice, Content: forged}},
		})
		if err != nil {
			t.Fatal(err)
		}

		send("t2", "second")
		bobSync.until(t, "the second message", func(resp map[string]any) bool { collect(resp); return len(bodies) > 1 })
		bobSync.next(t, 0)
		if fmt.Sprint(bodies) != "[first second]" {
			t.Fatalf("bob's device got %v", bodies)
		}
	})
}

// Bob on B adds a device and uploads keys: alice on A sees him in
// device_lists.changed, and /keys/query (from the device list B keeps A
// updated on) has the new device. Cross-signing keys follow. When they no
// longer share a room, alice sees bob under left and A forgets his list.
func TestDeviceListsOverFederation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		aliceDev := newE2EDevice(t, alice)
		bob1 := newE2EDevice(t, bob)
		bob1.uploadKeys(t, 0)
		aliceSync := newSyncer(t, alice)
		roomID := sharedRoom(t, alice, bob)
		aliceSync.until(t, "bob as changed after joining his room", func(resp map[string]any) bool {
			return contains(get(resp, "device_lists", "changed"), bob.id)
		})
		r := aliceDev.queryKeys(t, bob.id)
		if get(r.JSON, "device_keys", bob.id, bob1.deviceID, "keys", "ed25519:"+bob1.deviceID) != bob1.pub() {
			t.Fatalf("alice's query lacks bob's first device: %s", r.Body)
		}

		bob2 := login(t, bob, "BOBTWO")
		bob2.uploadKeys(t, 0)
		aliceSync.until(t, "bob's new device", func(resp map[string]any) bool {
			return contains(get(resp, "device_lists", "changed"), bob.id)
		})
		eventually(t, "A keeps bob's device list with both devices", func() bool {
			devs, err := storage.RemoteDevicesWithKeys(context.Background(), alice.hs.DB.Read(), bob.id, nil)
			return err == nil && len(devs) == 2
		})
		r = aliceDev.queryKeys(t, bob.id)
		if get(r.JSON, "device_keys", bob.id, "BOBTWO", "keys", "ed25519:BOBTWO") != bob2.pub() ||
			get(r.JSON, "device_keys", bob.id, bob1.deviceID) == nil {
			t.Fatalf("alice's query lacks bob's devices: %s", r.Body)
		}

		// Cross-signing: a master key and a self-signing key signed by it.
		masterPub, masterPriv, _ := ed25519.GenerateKey(rand.Reader)
		sskPub, _, _ := ed25519.GenerateKey(rand.Reader)
		mp, sp := base64.RawStdEncoding.EncodeToString(masterPub), base64.RawStdEncoding.EncodeToString(sskPub)
		master := map[string]any{"user_id": bob.id, "usage": []string{"master"}, "keys": map[string]string{"ed25519:" + mp: mp}}
		ssk := signObject(t, map[string]any{"user_id": bob.id, "usage": []string{"self_signing"}, "keys": map[string]string{"ed25519:" + sp: sp}}, bob.id, mp, masterPriv)
		r = bob.do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", map[string]any{"master_key": master, "self_signing_key": ssk})
		hearthtest.Expect(t, r, http.StatusOK, "")
		aliceSync.until(t, "bob's cross-signing keys", func(resp map[string]any) bool {
			return contains(get(resp, "device_lists", "changed"), bob.id)
		})
		eventually(t, "alice's query has bob's cross-signing keys", func() bool {
			r := aliceDev.queryKeys(t, bob.id)
			return get(r.JSON, "master_keys", bob.id, "keys", "ed25519:"+mp) == mp &&
				get(r.JSON, "self_signing_keys", bob.id, "keys", "ed25519:"+sp) == sp
		})

		// Bob leaves the only room they share.
		r = bob.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/leave", map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		aliceSync.until(t, "bob as left", func(resp map[string]any) bool {
			return contains(get(resp, "device_lists", "left"), bob.id)
		})
		if _, have, err := storage.RemoteDeviceListStreamID(context.Background(), alice.hs.DB.Read(), bob.id); err != nil || have {
			t.Fatalf("A still keeps bob's device list (%v)", err)
		}
		// Keys are then asked of B directly.
		r = aliceDev.queryKeys(t, bob.id)
		if get(r.JSON, "device_keys", bob.id, "BOBTWO") == nil {
			t.Fatalf("query without a shared room: %s", r.Body)
		}
	})
}

// One-time keys of a user on B are claimed from A, each once; a server
// that cannot be reached is reported under failures.
func TestKeyClaimOverFederation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		bobDev := newE2EDevice(t, bob)
		bobDev.uploadKeys(t, 2)
		claim := func() map[string]any {
			r := alice.do(t, "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{
				bob.id: map[string]string{bobDev.deviceID: "signed_curve25519"}}})
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r.JSON
		}
		first, second, third := claim(), claim(), claim()
		k1 := get(first, "one_time_keys", bob.id, bobDev.deviceID, "signed_curve25519:K0")
		k2 := get(second, "one_time_keys", bob.id, bobDev.deviceID, "signed_curve25519:K1")
		if get(k1, "key") != "otk-"+bobDev.deviceID+"-0" || get(k2, "key") != "otk-"+bobDev.deviceID+"-1" {
			t.Fatalf("claims: %v / %v", first, second)
		}
		if keys, _ := get(third, "one_time_keys").(map[string]any); len(keys) != 0 {
			t.Fatalf("a third claim got %v", third)
		}
		r := alice.do(t, "POST", "/_matrix/client/v3/keys/claim", map[string]any{"one_time_keys": map[string]any{
			"@nobody:localhost:1": map[string]string{"DEV": "signed_curve25519"}}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if get(r.JSON, "failures", "localhost:1") == nil {
			t.Fatalf("no failure for an unreachable server: %s", r.Body)
		}
		r = alice.do(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{"@nobody:localhost:1": []string{}}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if get(r.JSON, "failures", "localhost:1") == nil {
			t.Fatalf("no failure for an unreachable server: %s", r.Body)
		}
	})
}
