package oauth_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"golang.org/x/crypto/chacha20poly1305"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// Sign-in with QR between two devices of one user, both played by the
// test as clients: MSC4388's secure channel (HPKE over the rendezvous
// session) carries MSC4108's messages; the new device signs in with the
// device authorization grant, which the existing device approves in the
// browser; it gets the cross-signing keys over the channel and signs its
// own device keys with them.

const rendezvousBase = "/_matrix/client/unstable/io.element.msc4388/rendezvous"

// rendezvousSide is one device's use of the insecure rendezvous session:
// the sequence token to write on, and those of its own last read and
// write, which the secure channel binds its messages to.
type rendezvousSide struct {
	t                *testing.T
	s                *hearthtest.Server
	path             string
	seq, read, wrote string
	lastRaw          string
}

// get reads what the other device wrote last (it must have written).
func (rv *rendezvousSide) get() string {
	rv.t.Helper()
	r := rv.s.Do(rv.t, "GET", rv.path, "", nil)
	hearthtest.Expect(rv.t, r, http.StatusOK, "")
	seq, _ := r.JSON["sequence_token"].(string)
	if seq == "" || seq == rv.seq {
		rv.t.Fatalf("rendezvous read: nothing new (%s)", r.Body)
	}
	rv.seq, rv.read = seq, seq
	rv.lastRaw = string(r.Body)
	return r.JSON["data"].(string)
}

func (rv *rendezvousSide) put(data string) {
	rv.t.Helper()
	r := rv.s.Do(rv.t, "PUT", rv.path, "", map[string]any{"sequence_token": rv.seq, "data": data})
	hearthtest.Expect(rv.t, r, http.StatusOK, "")
	rv.seq = r.JSON["sequence_token"].(string)
	rv.wrote = rv.seq
}

// qrAAD binds a message to the session (MSC4388, Secure channel).
func qrAAD(base, id, seq string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(base)))
	b = append(b, base...)
	b = append(b, byte(len(id)))
	b = append(b, id...)
	b = append(b, byte(len(seq)))
	return append(b, seq...)
}

// responseContext is the HPKE context of the responding side, built as
// Oblivious HTTP encapsulates responses (RFC 9458 section 4.4).
type responseContext struct {
	key   []byte
	nonce []byte
	n     uint64
}

func newResponseContext(t *testing.T, secret, salt []byte) *responseContext {
	key, err := hkdf.Key(sha256.New, secret, salt, "key", 32)
	if err != nil {
		t.Fatal(err)
	}
	nonce, err := hkdf.Key(sha256.New, secret, salt, "nonce", 12)
	if err != nil {
		t.Fatal(err)
	}
	return &responseContext{key: key, nonce: nonce}
}

// next is the nonce of the next message: the base nonce XOR the sequence
// number (RFC 9180 section 5.2).
func (c *responseContext) next() []byte {
	n := bytes.Clone(c.nonce)
	var seq [8]byte
	binary.BigEndian.PutUint64(seq[:], c.n)
	for i := range seq {
		n[len(n)-8+i] ^= seq[i]
	}
	c.n++
	return n
}

func (c *responseContext) seal(aad, pt []byte) ([]byte, error) {
	a, err := chacha20poly1305.New(c.key)
	if err != nil {
		return nil, err
	}
	return a.Seal(nil, c.next(), pt, aad), nil
}

func (c *responseContext) open(aad, ct []byte) ([]byte, error) {
	a, err := chacha20poly1305.New(c.key)
	if err != nil {
		return nil, err
	}
	return a.Open(nil, c.next(), ct, aad)
}

// qrChannel is one end of the established secure channel.
type qrChannel struct {
	rv        *rendezvousSide
	base, id  string
	seal      func(aad, pt []byte) ([]byte, error)
	open      func(aad, ct []byte) ([]byte, error)
	checkCode string
}

// send seals with the sequence token of this side's last read.
func (c *qrChannel) send(msg map[string]any) {
	c.rv.t.Helper()
	pt, _ := json.Marshal(msg)
	ct, err := c.seal(qrAAD(c.base, c.id, c.rv.read), pt)
	if err != nil {
		c.rv.t.Fatal(err)
	}
	c.rv.put(base64.RawStdEncoding.EncodeToString(ct))
}

// receive opens with the sequence token of this side's last write.
func (c *qrChannel) receive(wantType string) map[string]any {
	c.rv.t.Helper()
	wrote := c.rv.wrote
	ct, err := base64.RawStdEncoding.DecodeString(c.rv.get())
	if err != nil {
		c.rv.t.Fatal(err)
	}
	pt, err := c.open(qrAAD(c.base, c.id, wrote), ct)
	if err != nil {
		c.rv.t.Fatalf("opening a %s message: %v", wantType, err)
	}
	var m map[string]any
	if err := json.Unmarshal(pt, &m); err != nil || m["type"] != wantType {
		c.rv.t.Fatalf("received %s, want %s", pt, wantType)
	}
	return m
}

const (
	qrInfo     = "MATRIX_QR_CODE_LOGIN"
	qrResponse = "MATRIX_QR_CODE_LOGIN response"
)

func checkCode(t *testing.T, export func(string, int) ([]byte, error), gp, sp []byte) string {
	b, err := export("MATRIX_QR_CODE_LOGIN_CHECKCODE"+string(gp)+string(sp), 2)
	if err != nil {
		t.Fatal(err)
	}
	return string(rune('0'+b[0]%9+1)) + string(rune('0'+b[1]%10))
}

func TestQRLoginTwoDevices(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		alice, tokenA := s.RegisterUser(t, "alice")
		deviceA := whoami(t, s, tokenA).JSON["device_id"].(string)
		syncA := s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", tokenA, nil)
		hearthtest.Expect(t, syncA, http.StatusOK, "")

		// Device A has cross-signing set up.
		keyPair := func() ed25519.PrivateKey { _, k, _ := ed25519.GenerateKey(rand.Reader); return k }
		pub := func(k ed25519.PrivateKey) string {
			return base64.RawStdEncoding.EncodeToString(k.Public().(ed25519.PublicKey))
		}
		sign := func(obj map[string]any, keyName string, k ed25519.PrivateKey) map[string]any {
			raw, _ := json.Marshal(obj)
			signed, err := gomatrixserverlib.SignJSON(alice, gomatrixserverlib.KeyID("ed25519:"+keyName), k, raw)
			if err != nil {
				t.Fatal(err)
			}
			var out map[string]any
			_ = json.Unmarshal(signed, &out)
			return out
		}
		csKey := func(usage string, k ed25519.PrivateKey) map[string]any {
			return map[string]any{"user_id": alice, "usage": []string{usage}, "keys": map[string]string{"ed25519:" + pub(k): pub(k)}}
		}
		msk, ssk, usk := keyPair(), keyPair(), keyPair()
		hearthtest.Expect(t, s.Do(t, "POST", "/_matrix/client/v3/keys/device_signing/upload", tokenA, map[string]any{
			"master_key": csKey("master", msk), "self_signing_key": sign(csKey("self_signing", ssk), pub(msk), msk),
			"user_signing_key": sign(csKey("user_signing", usk), pub(msk), msk)}), http.StatusOK, "")

		// 1-3. A (existing, generating the QR) creates the session with an
		// empty payload and shows the QR code (type 0x03, intent 0x01).
		kem := hpke.DHKEM(ecdh.X25519())
		gs, err := kem.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		gp := gs.PublicKey().Bytes()
		r := s.Do(t, "POST", rendezvousBase, tokenA, map[string]any{"data": ""})
		hearthtest.Expect(t, r, http.StatusOK, "")
		id := r.JSON["id"].(string)
		rvA := &rendezvousSide{t: t, s: s, path: rendezvousBase + "/" + id, seq: r.JSON["sequence_token"].(string)}
		rvA.wrote = rvA.seq
		qr := append([]byte("MATRIX"), 0x03, 0x01)
		qr = append(qr, gp...)
		qr = append(qr, byte(len(id)))
		qr = append(qr, id...)
		qr = binary.BigEndian.AppendUint16(qr, uint16(len(s.URL)))
		qr = append(qr, s.URL...)

		// B (new) scans it.
		if !bytes.HasPrefix(qr, []byte("MATRIX\x03\x01")) {
			t.Fatal("QR type or intent")
		}
		rest := qr[8:]
		gpB, rest := rest[:32], rest[32:]
		idB, rest := string(rest[1:1+int(rest[0])]), rest[1+int(rest[0]):]
		baseB := string(rest[2 : 2+int(binary.BigEndian.Uint16(rest))])
		rvB := &rendezvousSide{t: t, s: s, path: rendezvousBase + "/" + idB}

		// 4. B sends LoginInitiateMessage.
		gpKey, err := kem.NewPublicKey(gpB)
		if err != nil {
			t.Fatal(err)
		}
		sp, sender, err := hpke.NewSender(gpKey, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte(qrInfo))
		if err != nil {
			t.Fatal(err)
		}
		if d := rvB.get(); d != "" {
			t.Fatalf("initial payload %q", d)
		}
		ct, _ := sender.Seal(qrAAD(baseB, idB, rvB.read), []byte("MATRIX_QR_CODE_LOGIN_INITIATE"))
		rvB.put(base64.RawStdEncoding.EncodeToString(append(bytes.Clone(sp), ct...)))

		// 5. A confirms with LoginOkMessage, from its response context.
		raw, _ := base64.RawStdEncoding.DecodeString(rvA.get())
		recipient, err := hpke.NewRecipient(raw[:32], gs, hpke.HKDFSHA256(), hpke.ChaCha20Poly1305(), []byte(qrInfo))
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := recipient.Open(qrAAD(s.URL, id, rvA.wrote), raw[32:]); err != nil || string(pt) != "MATRIX_QR_CODE_LOGIN_INITIATE" {
			t.Fatalf("LoginInitiateMessage: %q %v", pt, err)
		}
		secret, _ := recipient.Export(qrResponse, 32)
		responseNonce := make([]byte, 32)
		_, _ = rand.Read(responseNonce)
		respA := newResponseContext(t, secret, append(bytes.Clone(raw[:32]), responseNonce...))
		ct, _ = respA.seal(qrAAD(s.URL, id, rvA.read), []byte("MATRIX_QR_CODE_LOGIN_OK"))
		rvA.put(base64.RawStdEncoding.EncodeToString(append(bytes.Clone(responseNonce), ct...)))
		chA := &qrChannel{rv: rvA, base: s.URL, id: id, seal: respA.seal, open: recipient.Open,
			checkCode: checkCode(t, recipient.Export, gp, raw[:32])}

		// 6. B verifies it and shows the check code, 7. which the user types on A.
		wrote := rvB.wrote
		raw, _ = base64.RawStdEncoding.DecodeString(rvB.get())
		secret, _ = sender.Export(qrResponse, 32)
		respB := newResponseContext(t, secret, append(bytes.Clone(sp), raw[:32]...))
		if pt, err := respB.open(qrAAD(baseB, idB, wrote), raw[32:]); err != nil || string(pt) != "MATRIX_QR_CODE_LOGIN_OK" {
			t.Fatalf("LoginOkMessage: %q %v", pt, err)
		}
		chB := &qrChannel{rv: rvB, base: baseB, id: idB, seal: sender.Seal, open: respB.open, checkCode: checkCode(t, sender.Export, gpB, sp)}
		if chA.checkCode != chB.checkCode || len(chB.checkCode) != 2 {
			t.Fatalf("check codes %q and %q", chA.checkCode, chB.checkCode)
		}

		// MSC4108: A offers the device authorization grant.
		chA.send(map[string]any{"type": "m.login.protocols", "protocols": []string{"device_authorization_grant"}, "base_url": s.URL})
		offer := chB.receive("m.login.protocols")
		if offer["base_url"] != s.URL || !contains(offer["protocols"], "device_authorization_grant") {
			t.Fatalf("protocols: %v", offer)
		}
		// B registers itself, starts the grant for its new device ID and tells A.
		md := metadata(t, s)
		conf := clientConfig(md, nativeClient(t, s), "QRPHONE001")
		da, err := conf.DeviceAuth(ctx)
		if err != nil {
			t.Fatal(err)
		}
		chB.send(map[string]any{"type": "m.login.protocol", "protocol": "device_authorization_grant", "device_id": "QRPHONE001",
			"device_authorization_grant": map[string]any{"verification_uri": da.VerificationURI, "verification_uri_complete": da.VerificationURIComplete}})
		proto := chA.receive("m.login.protocol")
		if strings.Contains(rvA.lastRaw, "verification_uri") || strings.Contains(rvA.lastRaw, da.UserCode) {
			t.Fatalf("the rendezvous saw the message in the clear: %s", rvA.lastRaw)
		}
		// A checks that the device ID is new, accepts, and approves in the browser.
		hearthtest.Expect(t, s.Do(t, "GET", "/_matrix/client/v3/devices/QRPHONE001", tokenA, nil), http.StatusNotFound, "M_NOT_FOUND")
		chA.send(map[string]any{"type": "m.login.protocol_accepted"})
		chB.receive("m.login.protocol_accepted")
		grant := proto["device_authorization_grant"].(map[string]any)
		br := newBrowser(t, s.URL)
		p := br.get(grant["verification_uri_complete"].(string))
		p = br.submit(p, loginAction, map[string]string{"username": "alice", "password": "password"}, "")
		if !strings.Contains(p.body, da.UserCode) || !strings.Contains(p.body, "QRPHONE001") {
			t.Fatalf("approval page: %d %s", p.status, p.body)
		}
		if p = br.submit(p, "/_hearth/oauth2/link", nil, "action=allow"); p.status != http.StatusOK {
			t.Fatalf("approving: %d %s", p.status, p.body)
		}

		// B gets its tokens and says so; A sees the device and sends the secrets.
		tok, err := conf.DeviceAccessToken(ctx, da)
		if err != nil {
			t.Fatalf("device access token: %v", err)
		}
		tokenB := tok.AccessToken
		if r := whoami(t, s, tokenB); r.JSON["user_id"] != alice || r.JSON["device_id"] != "QRPHONE001" {
			t.Fatalf("B's whoami: %s", r.Body)
		}
		chB.send(map[string]any{"type": "m.login.success"})
		chA.receive("m.login.success")
		hearthtest.Expect(t, s.Do(t, "GET", "/_matrix/client/v3/devices/QRPHONE001", tokenA, nil), http.StatusOK, "")
		seed := func(k ed25519.PrivateKey) string { return base64.RawStdEncoding.EncodeToString(k.Seed()) }
		chA.send(map[string]any{"type": "m.login.secrets", "cross_signing": map[string]string{
			"master_key": seed(msk), "self_signing_key": seed(ssk), "user_signing_key": seed(usk)}})
		secrets := chB.receive("m.login.secrets")
		hearthtest.Expect(t, s.Do(t, "DELETE", rendezvousBase+"/"+idB, "", nil), http.StatusOK, "")

		// B cross-signs its own device keys with the self-signing key it got,
		// after checking that key against the server's.
		sskSeed, _ := base64.RawStdEncoding.DecodeString(secrets["cross_signing"].(map[string]any)["self_signing_key"].(string))
		sskB := ed25519.NewKeyFromSeed(sskSeed)
		r = s.Do(t, "POST", "/_matrix/client/v3/keys/query", tokenB, map[string]any{"device_keys": map[string]any{alice: []string{}}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !strings.Contains(string(r.Body), `"ed25519:`+pub(sskB)+`"`) {
			t.Fatalf("the self-signing key received is not the account's: %s", r.Body)
		}
		devKey := keyPair()
		curve := make([]byte, 32)
		_, _ = rand.Read(curve)
		keys := map[string]any{"user_id": alice, "device_id": "QRPHONE001", "algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
			"keys": map[string]string{"curve25519:QRPHONE001": base64.RawStdEncoding.EncodeToString(curve), "ed25519:QRPHONE001": pub(devKey)}}
		keys = sign(keys, "QRPHONE001", devKey)
		keys = sign(keys, pub(sskB), sskB)
		hearthtest.Expect(t, s.Do(t, "POST", "/_matrix/client/v3/keys/upload", tokenB, map[string]any{"device_keys": keys}), http.StatusOK, "")

		// A sees the new device, verified by the self-signing key.
		r = s.Do(t, "POST", "/_matrix/client/v3/keys/query", tokenA, map[string]any{"device_keys": map[string]any{alice: []string{}}})
		hearthtest.Expect(t, r, http.StatusOK, "")
		dk, _ := json.Marshal(r.JSON["device_keys"].(map[string]any)[alice].(map[string]any)["QRPHONE001"])
		if err := gomatrixserverlib.VerifyJSON(alice, gomatrixserverlib.KeyID("ed25519:"+pub(ssk)), ssk.Public().(ed25519.PublicKey), dk); err != nil {
			t.Fatalf("B's device keys as A sees them are not cross-signed: %v %s", err, dk)
		}

		// Both sync: A learns that its own device list changed, and B gets a
		// to-device message A sends it.
		r = s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0&since="+url.QueryEscape(syncA.JSON["next_batch"].(string)), tokenA, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if changed, _ := r.JSON["device_lists"].(map[string]any); !contains(changed["changed"], alice) {
			t.Fatalf("A's sync does not say its device list changed: %s", r.Body)
		}
		hearthtest.Expect(t, s.Do(t, "PUT", "/_matrix/client/v3/sendToDevice/org.example.hello/qr1", tokenA, map[string]any{
			"messages": map[string]any{alice: map[string]any{"QRPHONE001": map[string]any{"from": deviceA}}}}), http.StatusOK, "")
		r = s.Do(t, "GET", "/_matrix/client/v3/sync?timeout=0", tokenB, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !strings.Contains(string(r.Body), `"org.example.hello"`) || !strings.Contains(string(r.Body), deviceA) {
			t.Fatalf("B's sync has no message from A: %s", r.Body)
		}

		// /devices lists both, and so does the account page.
		r = s.Do(t, "GET", "/_matrix/client/v3/devices", tokenA, nil)
		if !strings.Contains(string(r.Body), `"QRPHONE001"`) || !strings.Contains(string(r.Body), `"`+deviceA+`"`) {
			t.Fatalf("devices: %s", r.Body)
		}
		if p := br.get(s.URL + "/_hearth/account"); !strings.Contains(p.body, `id="device-QRPHONE001"`) || !strings.Contains(p.body, `id="device-`+deviceA+`"`) {
			t.Fatalf("account page: %s", p.body)
		}
	})
}
