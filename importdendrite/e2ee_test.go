package importdendrite_test

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/crypto/goolm/account"
	"maunium.net/go/mautrix/crypto/goolm/session"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/id"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// olmDevice is a client device's olm account (goolm, as Hearth's e2ee
// tests use), kept by the test across the move as a client keeps it.
type olmDevice struct {
	user, device, token string
	acct                *account.Account
	ed, curve           string
}

// do is a request to either server.
type doer func(t *testing.T, method, path, token string, body any) hearthtest.Response

func newOlmDevice(t *testing.T, do doer, user, device, token string) *olmDevice {
	t.Helper()
	acct, err := account.NewAccount()
	if err != nil {
		t.Fatal(err)
	}
	ed, curve, err := acct.IdentityKeys()
	if err != nil {
		t.Fatal(err)
	}
	d := &olmDevice{user: user, device: device, token: token, acct: acct, ed: ed.String(), curve: curve.String()}
	keys := map[string]any{
		"user_id": user, "device_id": device, "algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]any{"curve25519:" + device: d.curve, "ed25519:" + device: d.ed},
	}
	keys["signatures"] = map[string]any{user: map[string]any{"ed25519:" + device: d.sign(t, keys)}}
	if err := acct.GenOneTimeKeys(5); err != nil {
		t.Fatal(err)
	}
	otks, err := acct.OneTimeKeys()
	if err != nil {
		t.Fatal(err)
	}
	upload := map[string]any{}
	for kid, key := range otks {
		otk := map[string]any{"key": key.String()}
		otk["signatures"] = map[string]any{user: map[string]any{"ed25519:" + device: d.sign(t, otk)}}
		upload["signed_curve25519:"+kid] = otk
	}
	r := do(t, "POST", "/_matrix/client/v3/keys/upload", token, map[string]any{"device_keys": keys, "one_time_keys": upload})
	hearthtest.Expect(t, r, 200, "")
	acct.MarkKeysAsPublished()
	return d
}

// sign is the spec's Signing JSON with the device's ed25519 key.
func (d *olmDevice) sign(t *testing.T, obj any) string {
	t.Helper()
	raw, err := canonicaljson.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ = sjson.DeleteBytes(raw, "signatures")
	raw, _ = sjson.DeleteBytes(raw, "unsigned")
	if err := canonicaljson.Canonicalize(&raw); err != nil {
		t.Fatal(err)
	}
	sig, err := d.acct.Sign(raw)
	if err != nil {
		t.Fatal(err)
	}
	return string(sig)
}

// checkE2EE: on Hearth, a new device of alice finds bob's device from
// before the move (its keys and a one-time key uploaded to Dendrite),
// shares a megolm key with it over olm and sends an encrypted message;
// bob's device, with the olm account it had on Dendrite, decrypts it.
func checkE2EE(t *testing.T, hs *hearthtest.Server, w *world, bob *olmDevice) {
	do := func(t *testing.T, method, path, token string, body any) hearthtest.Response {
		t.Helper()
		return hs.Do(t, method, path, token, body)
	}
	alice := newOlmDevice(t, do, w.alice, w.aliceDev2, w.aliceTok2)

	r := hs.Do(t, "POST", "/_matrix/client/v3/keys/query", alice.token, map[string]any{"device_keys": map[string]any{bob.user: []string{}}})
	hearthtest.Expect(t, r, 200, "")
	var q struct {
		DeviceKeys map[string]map[string]json.RawMessage `json:"device_keys"`
	}
	_ = json.Unmarshal(r.Body, &q)
	raw, ok := q.DeviceKeys[bob.user][bob.device]
	if !ok {
		t.Fatalf("bob's device %s from before the move is not in /keys/query: %s", bob.device, r.Body)
	}
	ok, err := signatures.VerifySignatureJSON(raw, id.UserID(bob.user), bob.device, id.Ed25519(bob.ed))
	if err != nil || !ok {
		t.Fatalf("bob's device keys lost their self-signature: %v %s", err, raw)
	}
	r = hs.Do(t, "POST", "/_matrix/client/v3/keys/claim", alice.token, map[string]any{"one_time_keys": map[string]any{bob.user: map[string]any{bob.device: "signed_curve25519"}}})
	hearthtest.Expect(t, r, 200, "")
	var c struct {
		OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	}
	_ = json.Unmarshal(r.Body, &c)
	var otk struct {
		Key string `json:"key"`
	}
	for _, k := range c.OneTimeKeys[bob.user][bob.device] {
		if ok, err := signatures.VerifySignatureJSON(k, id.UserID(bob.user), bob.device, id.Ed25519(bob.ed)); err != nil || !ok {
			t.Fatalf("claimed one-time key is not bob's: %v", err)
		}
		_ = json.Unmarshal(k, &otk)
	}
	if otk.Key == "" {
		t.Fatalf("no one-time key of bob's device uploaded to Dendrite: %s", r.Body)
	}
	olmOut, err := alice.acct.NewOutboundSession(id.Curve25519(bob.curve), id.Curve25519(otk.Key))
	if err != nil {
		t.Fatal(err)
	}
	megolm, err := session.NewMegolmOutboundSession()
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := json.Marshal(map[string]any{
		"type":    "m.room_key",
		"content": map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "room_id": w.room1, "session_id": megolm.ID(), "session_key": megolm.Key()},
		"sender":  alice.user, "recipient": bob.user, "recipient_keys": map[string]any{"ed25519": bob.ed}, "keys": map[string]any{"ed25519": alice.ed},
	})
	msgType, ct, err := olmOut.Encrypt(plain)
	if err != nil {
		t.Fatal(err)
	}
	r = hs.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.room.encrypted/e2ee-1", alice.token, map[string]any{"messages": map[string]any{bob.user: map[string]any{bob.device: map[string]any{
		"algorithm": "m.olm.v1.curve25519-aes-sha2", "sender_key": alice.curve,
		"ciphertext": map[string]any{bob.curve: map[string]any{"type": msgType, "body": string(ct)}},
	}}}})
	hearthtest.Expect(t, r, 200, "")
	const secret = "encrypted after the move"
	body, _ := json.Marshal(map[string]any{"type": "m.room.message", "content": map[string]any{"msgtype": "m.text", "body": secret}, "room_id": w.room1})
	megolmCT, err := megolm.Encrypt(body)
	if err != nil {
		t.Fatal(err)
	}
	r = hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+w.room1+"/send/m.room.encrypted/e2ee-2", alice.token, map[string]any{
		"algorithm": "m.megolm.v1.aes-sha2", "sender_key": alice.curve, "device_id": alice.device, "session_id": megolm.ID(), "ciphertext": string(megolmCT),
	})
	hearthtest.Expect(t, r, 200, "")
	encryptedID, _ := r.JSON["event_id"].(string)

	// Bob's device from before the move syncs on Hearth.
	var inbound *session.MegolmInboundSession
	deadline := time.Now().Add(15 * time.Second)
	since := ""
	for inbound == nil || since == "" {
		path := "/_matrix/client/v3/sync?timeout=1000"
		if since != "" {
			path += "&since=" + url.QueryEscape(since)
		}
		r = get(t, hs, path, bob.token)
		var s struct {
			NextBatch string `json:"next_batch"`
			ToDevice  struct {
				Events []struct {
					Type    string `json:"type"`
					Sender  string `json:"sender"`
					Content struct {
						SenderKey  string `json:"sender_key"`
						Ciphertext map[string]struct {
							Type int    `json:"type"`
							Body string `json:"body"`
						} `json:"ciphertext"`
					} `json:"content"`
				} `json:"events"`
			} `json:"to_device"`
		}
		_ = json.Unmarshal(r.Body, &s)
		since = s.NextBatch
		for _, ev := range s.ToDevice.Events {
			m, ok := ev.Content.Ciphertext[bob.curve]
			if ev.Type != "m.room.encrypted" || !ok || m.Type != 0 {
				continue
			}
			curve := id.Curve25519(ev.Content.SenderKey)
			in, err := bob.acct.NewInboundSessionFrom(&curve, m.Body)
			if err != nil {
				t.Fatalf("bob's olm account from before the move cannot open alice's session: %v", err)
			}
			pt, err := in.Decrypt(m.Body, id.OlmMsgTypePreKey)
			if err != nil {
				t.Fatalf("olm decrypt: %v", err)
			}
			var key struct {
				Content struct {
					SessionKey string `json:"session_key"`
				} `json:"content"`
			}
			_ = json.Unmarshal(pt, &key)
			if inbound, err = session.NewMegolmInboundSession([]byte(key.Content.SessionKey)); err != nil {
				t.Fatalf("megolm inbound: %v", err)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("bob's device never received the room key")
		}
	}
	r = get(t, hs, "/_matrix/client/v3/rooms/"+w.room1+"/event/"+encryptedID, bob.token)
	ct2, _ := r.JSON["content"].(map[string]any)["ciphertext"].(string)
	pt, _, err := inbound.Decrypt([]byte(ct2))
	if err != nil {
		t.Fatalf("megolm decrypt: %v", err)
	}
	var got struct {
		Content struct {
			Body string `json:"body"`
		} `json:"content"`
	}
	_ = json.Unmarshal(pt, &got)
	if got.Content.Body != secret {
		t.Fatalf("decrypted %q, want %q", got.Content.Body, secret)
	}
}

// fillE2EE gives bob's first device an olm account with keys on Dendrite,
// alice cross-signing keys and a key backup, and leaves a to-device
// message for bob's second device undelivered.
func fillE2EE(t *testing.T, d *dendrite, w *world) {
	w.bobOlm = newOlmDevice(t, func(t *testing.T, method, path, token string, body any) hearthtest.Response {
		return d.do(t, method, path, token, body)
	}, w.bob, w.bobDev, w.bobTok)

	// Cross-signing: a master key and a self-signing key it signs.
	master, err := account.NewAccount() // an ed25519 key pair, as goolm has them
	if err != nil {
		t.Fatal(err)
	}
	selfSigning, err := account.NewAccount()
	if err != nil {
		t.Fatal(err)
	}
	mpub, _, _ := master.IdentityKeys()
	spub, _, _ := selfSigning.IdentityKeys()
	w.masterKey = mpub.String()
	signer := &olmDevice{acct: master}
	masterKey := map[string]any{"user_id": w.alice, "usage": []string{"master"}, "keys": map[string]any{"ed25519:" + mpub.String(): mpub.String()}}
	selfKey := map[string]any{"user_id": w.alice, "usage": []string{"self_signing"}, "keys": map[string]any{"ed25519:" + spub.String(): spub.String()}}
	selfKey["signatures"] = map[string]any{w.alice: map[string]any{"ed25519:" + mpub.String(): signer.sign(t, selfKey)}}
	r := d.do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", w.aliceTok, map[string]any{
		"master_key": masterKey, "self_signing_key": selfKey,
		"auth": map[string]any{"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": password},
	})
	hearthtest.Expect(t, r, 200, "")

	// A key backup with one session.
	r = d.do(t, "POST", "/_matrix/client/v3/room_keys/version", w.aliceTok, map[string]any{
		"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": w.bobOlm.curve},
	})
	hearthtest.Expect(t, r, 200, "")
	w.backupVersion = r.JSON["version"].(string)
	r = d.do(t, "PUT", "/_matrix/client/v3/room_keys/keys/"+w.room1+"/backup-session-1?version="+w.backupVersion, w.aliceTok, map[string]any{
		"first_message_index": 0, "forwarded_count": 0, "is_verified": true,
		"session_data": map[string]any{"ephemeral": "e", "ciphertext": "c", "mac": "m"},
	})
	hearthtest.Expect(t, r, 200, "")

	// A to-device message bob's second device never synced.
	r = d.do(t, "PUT", "/_matrix/client/v3/sendToDevice/com.example.ping/td-1", w.aliceTok, map[string]any{
		"messages": map[string]any{w.bob: map[string]any{"*": map[string]any{"ping": "undelivered"}}},
	})
	hearthtest.Expect(t, r, 200, "")
}

// checkE2EEState: cross-signing keys, the key backup and the undelivered
// to-device message are on Hearth.
func checkE2EEState(t *testing.T, hs *hearthtest.Server, w *world) {
	r := hs.Do(t, "POST", "/_matrix/client/v3/keys/query", w.bobTok, map[string]any{"device_keys": map[string]any{w.alice: []string{}}})
	hearthtest.Expect(t, r, 200, "")
	var q struct {
		MasterKeys      map[string]json.RawMessage `json:"master_keys"`
		SelfSigningKeys map[string]json.RawMessage `json:"self_signing_keys"`
	}
	_ = json.Unmarshal(r.Body, &q)
	if !strings.Contains(string(q.MasterKeys[w.alice]), w.masterKey) {
		t.Errorf("alice's master key: %s", r.Body)
	}
	if ok, err := signatures.VerifySignatureJSON(q.SelfSigningKeys[w.alice], id.UserID(w.alice), w.masterKey, id.Ed25519(w.masterKey)); err != nil || !ok {
		t.Errorf("alice's self-signing key lost the master key's signature: %v %s", err, q.SelfSigningKeys[w.alice])
	}
	r = get(t, hs, "/_matrix/client/v3/room_keys/version", w.aliceTok)
	if r.JSON["version"] != w.backupVersion {
		t.Errorf("key backup version: %s, want %s", r.Body, w.backupVersion)
	}
	r = get(t, hs, "/_matrix/client/v3/room_keys/keys?version="+w.backupVersion, w.aliceTok)
	if !strings.Contains(string(r.Body), "backup-session-1") {
		t.Errorf("key backup sessions: %s", r.Body)
	}
	r = get(t, hs, "/_matrix/client/v3/sync?timeout=0", w.bobTok2)
	if !strings.Contains(string(r.Body), "undelivered") {
		t.Errorf("the to-device message for bob's second device is not in its sync: %s", r.Body)
	}
}
