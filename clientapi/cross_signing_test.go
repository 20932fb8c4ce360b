package clientapi_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/syncstream"
)

// crossSigning is a user's three cross-signing key pairs.
type crossSigning struct {
	master, self, usr ed25519.PrivateKey
}

func newCrossSigning(t *testing.T) crossSigning {
	_, m := newKeyPair(t)
	_, s := newKeyPair(t)
	_, u := newKeyPair(t)
	return crossSigning{m, s, u}
}

func pubOf(k ed25519.PrivateKey) string { return b64(k.Public().(ed25519.PublicKey)) }

func csKey(userID, usage string, k ed25519.PrivateKey) map[string]any {
	return map[string]any{"user_id": userID, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pubOf(k): pubOf(k)}}
}

func (c crossSigning) upload(t *testing.T, d e2eDevice) map[string]any {
	return map[string]any{
		"master_key":       csKey(d.id, "master", c.master),
		"self_signing_key": sign(t, csKey(d.id, "self_signing", c.self), d.id, pubOf(c.master), c.master),
		"user_signing_key": sign(t, csKey(d.id, "user_signing", c.usr), d.id, pubOf(c.master), c.master),
	}
}

func TestCrossSigningAndSignatures(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newE2EDevice(t, hs, "alice")
		bob := newE2EDevice(t, hs, "bob")
		hearthtest.Expect(t, alice.upload(t, map[string]any{"device_keys": alice.deviceKeys(t)}), http.StatusOK, "")
		aliceCS, bobCS := newCrossSigning(t), newCrossSigning(t)
		const path = "/_matrix/client/v3/keys/device_signing/upload"

		// A self-signing key not signed by the master key is refused.
		bad := aliceCS.upload(t, alice)
		bad["self_signing_key"] = sign(t, csKey(alice.id, "self_signing", aliceCS.self), alice.id, pubOf(aliceCS.usr), aliceCS.usr)
		hearthtest.Expect(t, alice.do(t, "POST", path, bad), http.StatusBadRequest, "M_INVALID_SIGNATURE")
		// Subkeys without any master key: M_MISSING_PARAM.
		hearthtest.Expect(t, alice.do(t, "POST", path, map[string]any{"self_signing_key": aliceCS.upload(t, alice)["self_signing_key"]}), http.StatusBadRequest, "M_MISSING_PARAM")

		// The first upload needs no authentication, nor does repeating it.
		hearthtest.Expect(t, alice.do(t, "POST", path, aliceCS.upload(t, alice)), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "POST", path, aliceCS.upload(t, alice)), http.StatusOK, "")
		hearthtest.Expect(t, bob.do(t, "POST", path, bobCS.upload(t, bob)), http.StatusOK, "")
		// Replacing keys needs the password.
		newCS := newCrossSigning(t)
		r := alice.do(t, "POST", path, newCS.upload(t, alice))
		if r.Status != http.StatusUnauthorized || r.JSON["flows"] == nil || r.JSON["session"] == nil {
			t.Fatalf("replacement without auth: %d %s", r.Status, r.Body)
		}
		withAuth := newCS.upload(t, alice)
		withAuth["auth"] = map[string]any{"type": "m.login.password", "session": r.JSON["session"], "password": "wrong",
			"identifier": map[string]any{"type": "m.id.user", "user": alice.id}}
		hearthtest.Expect(t, alice.do(t, "POST", path, withAuth), http.StatusUnauthorized, "M_FORBIDDEN")
		withAuth["auth"].(map[string]any)["password"] = "password"
		hearthtest.Expect(t, alice.do(t, "POST", path, withAuth), http.StatusOK, "")
		aliceCS = newCS

		// Signatures: alice's self-signing key signs her device; her
		// user-signing key signs bob's master key; one forged signature fails.
		devSigned := sign(t, alice.deviceKeys(t), alice.id, pubOf(aliceCS.self), aliceCS.self)
		bobMaster := sign(t, csKey(bob.id, "master", bobCS.master), alice.id, pubOf(aliceCS.usr), aliceCS.usr)
		forged := sign(t, csKey(bob.id, "master", bobCS.master), alice.id, pubOf(aliceCS.usr), bobCS.usr)
		r = alice.do(t, "POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{
			alice.id: map[string]any{alice.deviceID: devSigned},
			bob.id:   map[string]any{pubOf(bobCS.master): bobMaster},
		})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if f, _ := r.JSON["failures"].(map[string]any); len(f) != 0 {
			t.Fatalf("failures: %s", r.Body)
		}
		r = alice.do(t, "POST", "/_matrix/client/v3/keys/signatures/upload", map[string]any{bob.id: map[string]any{pubOf(bobCS.master): forged}})
		if jsonPath(r.JSON, "failures", bob.id, pubOf(bobCS.master), "errcode") != "M_INVALID_SIGNATURE" {
			t.Fatalf("forged signature: %s", r.Body)
		}

		query := func(u e2eDevice) hearthtest.Response {
			r := u.do(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{alice.id: []string{}, bob.id: []string{}}})
			hearthtest.Expect(t, r, http.StatusOK, "")
			return r
		}
		aliceSig := func(r hearthtest.Response) any {
			return jsonPath(r.JSON, "master_keys", bob.id, "signatures", alice.id, "ed25519:"+pubOf(aliceCS.usr))
		}
		// Alice sees her signature of bob's master key, and her own user-signing key.
		r = query(alice)
		if aliceSig(r) == nil || jsonPath(r.JSON, "user_signing_keys", alice.id) == nil || jsonPath(r.JSON, "user_signing_keys", bob.id) != nil {
			t.Fatalf("alice's query: %s", r.Body)
		}
		// Everyone sees alice's device signed by her self-signing key, and her
		// self-signing key signed by her master key.
		r = query(bob)
		if jsonPath(r.JSON, "device_keys", alice.id, alice.deviceID, "signatures", alice.id, "ed25519:"+pubOf(aliceCS.self)) == nil ||
			jsonPath(r.JSON, "self_signing_keys", alice.id, "signatures", alice.id, "ed25519:"+pubOf(aliceCS.master)) == nil {
			t.Fatalf("bob's view of alice: %s", r.Body)
		}
		// Bob does not see alice's user-signing signature, nor her user-signing key.
		if aliceSig(r) != nil || jsonPath(r.JSON, "user_signing_keys", alice.id) != nil || jsonPath(r.JSON, "user_signing_keys", bob.id) == nil {
			t.Fatalf("bob's query shows private signatures: %s", r.Body)
		}
		if jsonPath(r.JSON, "master_keys", bob.id, "keys", "ed25519:"+pubOf(bobCS.master)) != pubOf(bobCS.master) {
			t.Fatalf("bob's master key: %s", r.Body)
		}
	})
}

func TestKeyChanges(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		ctx := context.Background()
		alice := newE2EDevice(t, hs, "alice")
		bob := newE2EDevice(t, hs, "bob")
		carol := newE2EDevice(t, hs, "carol")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, bob.member(t, roomID, "join", nil), http.StatusOK, "")

		var woken []string
		hs.E2EE.OnChange = func(users []string, device string) {
			if device == "" {
				woken = append(woken, users...)
			}
		}
		_, from, _ := hs.E2EE.MaxPositions(ctx)
		hearthtest.Expect(t, bob.upload(t, map[string]any{"device_keys": bob.deviceKeys(t)}), http.StatusOK, "")
		hearthtest.Expect(t, carol.upload(t, map[string]any{"device_keys": carol.deviceKeys(t)}), http.StatusOK, "")
		_, to, _ := hs.E2EE.MaxPositions(ctx)
		if to != from+2 {
			t.Fatalf("device-list positions %d -> %d", from, to)
		}
		changes := func(u e2eDevice, from, to int64) string {
			// from and to are sync tokens; with the same room-event position
			// only their device-list positions count (membership changes
			// in between would count too).
			r := u.do(t, "GET", "/_matrix/client/v3/keys/changes?from="+syncstream.Position{DeviceLists: from, Events: 99}.String()+
				"&to="+syncstream.Position{DeviceLists: to, Events: 99}.String(), nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			return fmt.Sprint(r.JSON["changed"])
		}
		if got := changes(alice, from, to); got != "["+bob.id+"]" {
			t.Errorf("alice sees %s", got)
		}
		if got := changes(carol, from, to); got != "["+carol.id+"]" {
			t.Errorf("carol sees %s", got)
		}
		if got := changes(alice, to, to); got != "[]" {
			t.Errorf("empty range: %s", got)
		}
		hearthtest.Expect(t, alice.do(t, "GET", "/_matrix/client/v3/keys/changes?from=x&to=1", nil), http.StatusBadRequest, "M_INVALID_PARAM")
		if fmt.Sprint(woken) != fmt.Sprint([]string{alice.id, bob.id, carol.id}) && fmt.Sprint(woken) != fmt.Sprint([]string{bob.id, alice.id, carol.id}) {
			t.Errorf("woken: %v", woken)
		}
		// Uploading only one-time keys is not a device-list change.
		hearthtest.Expect(t, bob.upload(t, map[string]any{"one_time_keys": bob.otks(t, 0, 1)}), http.StatusOK, "")
		if _, again, _ := hs.E2EE.MaxPositions(ctx); again != to {
			t.Errorf("one-time keys moved the device-list stream")
		}
	})
}

// TestAdminAllowsCrossSigningReplacement: after the Synapse admin API's
// _allow_cross_signing_replacement_without_uia, replacing the keys needs
// no password.
func TestAdminAllowsCrossSigningReplacement(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		login, err := hs.Accounts.Register(t.Context(), accountsNewAdmin("admin", "password"))
		if err != nil {
			t.Fatal(err)
		}
		alice := newE2EDevice(t, hs, "alice")
		const path = "/_matrix/client/v3/keys/device_signing/upload"
		allow := "/_synapse/admin/v1/users/" + alice.id + "/_allow_cross_signing_replacement_without_uia"
		hearthtest.Expect(t, hs.Do(t, "POST", allow, login.AccessToken, map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, alice.do(t, "POST", path, newCrossSigning(t).upload(t, alice)), http.StatusOK, "")
		hearthtest.Expect(t, alice.do(t, "POST", path, newCrossSigning(t).upload(t, alice)), http.StatusUnauthorized, "")

		r := hs.Do(t, "POST", allow, login.AccessToken, map[string]any{})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if until, _ := r.JSON["updatable_without_uia_before_ms"].(float64); int64(until) <= time.Now().UnixMilli() {
			t.Fatalf("allow: %s", r.Body)
		}
		hearthtest.Expect(t, alice.do(t, "POST", path, newCrossSigning(t).upload(t, alice)), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "POST", allow, alice.token, map[string]any{}), http.StatusForbidden, "M_FORBIDDEN")
	})
}
