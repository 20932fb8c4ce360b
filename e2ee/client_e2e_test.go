package e2ee_test

// These tests drive Hearth's HTTP API with a real Matrix client stack:
// mautrix-go's HTTP client and request/response types, its pure-Go
// olm/megolm implementation (goolm), its server-side key backup
// encryption (crypto/backup) and its signature verification
// (crypto/signatures). Hearth only stores and routes opaque keys and
// ciphertext; these tests show that what it stores and routes is enough for
// a client to decrypt: every scenario ends by comparing decrypted plaintext
// with what was sent.
//
// mautrix's OlmMachine (package maunium.net/go/mautrix/crypto) links the C
// libolm through cgo unless it is built with -tags goolm, so it would need
// either a C library on every machine or a build tag on every test command.
// The steps it would take are few and specified in the spec's end-to-end
// encryption module, so the client device below takes them itself with
// goolm's accounts and sessions: plain `go test ./...` runs these tests.

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tidwall/sjson"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/crypto/canonicaljson"
	"maunium.net/go/mautrix/crypto/goolm/account"
	"maunium.net/go/mautrix/crypto/goolm/pk"
	"maunium.net/go/mautrix/crypto/goolm/session"
	"maunium.net/go/mautrix/crypto/olm"
	"maunium.net/go/mautrix/crypto/signatures"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// syncWait bounds every wait for something to arrive through /sync.
const syncWait = 15 * time.Second

// device is one logged-in Matrix device with its own olm account: it
// uploads its keys, shares megolm sessions over olm-encrypted to-device
// messages, and decrypts what it receives.
type device struct {
	t     *testing.T
	cli   *mautrix.Client
	acct  *account.Account
	ed    id.Ed25519
	curve id.Curve25519
	since string
	// olm holds the olm sessions with other devices, by their curve25519 key.
	olm map[id.Curve25519][]olm.Session
	// inbound holds the megolm sessions this device can decrypt with.
	inbound map[id.SessionID]inboundSession
	// outbound is this device's megolm session per room.
	outbound map[id.RoomID]*session.MegolmOutboundSession
	// timeline collects the room events seen in /sync, by event ID.
	timeline map[id.EventID]*event.Event
}

// inboundSession is a megolm session and what it was shared for.
type inboundSession struct {
	roomID    id.RoomID
	senderKey id.Curve25519
	s         *session.MegolmInboundSession
}

// newDevice wraps an existing access token (for example from
// hearthtest.RegisterUser), creates the device's olm account and uploads
// its device keys and one-time keys.
func newDevice(t *testing.T, hs *hearthtest.Server, userID, token string) *device {
	t.Helper()
	cli, err := mautrix.NewClient(hs.URL, id.UserID(userID), token)
	if err != nil {
		t.Fatalf("mautrix client: %v", err)
	}
	who, err := cli.Whoami(context.Background())
	if err != nil {
		t.Fatalf("whoami: %v", err)
	}
	cli.DeviceID = who.DeviceID
	acct, err := account.NewAccount()
	if err != nil {
		t.Fatalf("olm account: %v", err)
	}
	ed, curve, err := acct.IdentityKeys()
	if err != nil {
		t.Fatal(err)
	}
	d := &device{
		t: t, cli: cli, acct: acct, ed: ed, curve: curve,
		olm:      map[id.Curve25519][]olm.Session{},
		inbound:  map[id.SessionID]inboundSession{},
		outbound: map[id.RoomID]*session.MegolmOutboundSession{},
		timeline: map[id.EventID]*event.Event{},
	}
	d.uploadKeys()
	return d
}

// login logs userID in on a new device with the password that
// hearthtest.RegisterUser gives every user.
func login(t *testing.T, hs *hearthtest.Server, userID string) *device {
	t.Helper()
	cli, err := mautrix.NewClient(hs.URL, "", "")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Login(context.Background(), &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: userID},
		Password:   "password",
	})
	if err != nil {
		t.Fatalf("login %s: %v", userID, err)
	}
	return newDevice(t, hs, string(resp.UserID), resp.AccessToken)
}

// signJSON signs obj's canonical JSON (without signatures and unsigned) as
// the spec's "Signing JSON" section says.
func signJSON(t *testing.T, obj any, sign func([]byte) ([]byte, error)) string {
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
	sig, err := sign(raw)
	if err != nil {
		t.Fatalf("signing: %v", err)
	}
	return string(sig)
}

func (d *device) ctx() context.Context { return context.Background() }

// uploadKeys uploads the self-signed device keys and ten signed one-time keys.
func (d *device) uploadKeys() {
	t := d.t
	t.Helper()
	keys := &mautrix.DeviceKeys{
		UserID:     d.cli.UserID,
		DeviceID:   d.cli.DeviceID,
		Algorithms: []id.Algorithm{id.AlgorithmOlmV1, id.AlgorithmMegolmV1},
		Keys: mautrix.KeyMap{
			id.NewDeviceKeyID(id.KeyAlgorithmCurve25519, d.cli.DeviceID): d.curve.String(),
			id.NewDeviceKeyID(id.KeyAlgorithmEd25519, d.cli.DeviceID):    d.ed.String(),
		},
	}
	keys.Signatures = signatures.NewSingleSignature(d.cli.UserID, id.KeyAlgorithmEd25519, d.cli.DeviceID.String(), signJSON(t, keys, d.acct.Sign))
	if err := d.acct.GenOneTimeKeys(10); err != nil {
		t.Fatal(err)
	}
	otks, err := d.acct.OneTimeKeys()
	if err != nil {
		t.Fatal(err)
	}
	upload := map[id.KeyID]mautrix.OneTimeKey{}
	for kid, key := range otks {
		otk := mautrix.OneTimeKey{Key: key}
		otk.Signatures = signatures.NewSingleSignature(d.cli.UserID, id.KeyAlgorithmEd25519, d.cli.DeviceID.String(), signJSON(t, otk, d.acct.Sign))
		upload[id.NewKeyID(id.KeyAlgorithmSignedCurve25519, kid)] = otk
	}
	resp, err := d.cli.UploadKeys(d.ctx(), &mautrix.ReqUploadKeys{DeviceKeys: keys, OneTimeKeys: upload})
	if err != nil {
		t.Fatalf("%s uploading keys: %v", d.cli.DeviceID, err)
	}
	if n := resp.OneTimeKeyCounts.SignedCurve25519; n != len(upload) {
		t.Fatalf("one_time_key_counts after upload: %d, want %d", n, len(upload))
	}
	d.acct.MarkKeysAsPublished()
}

// queryDevices asks /keys/query for users' devices and checks what a
// client checks before trusting a device key: the user and device IDs
// match and the keys carry the device's own ed25519 signature.
func (d *device) queryDevices(users ...id.UserID) *mautrix.RespQueryKeys {
	t := d.t
	t.Helper()
	req := &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{}}
	for _, u := range users {
		req.DeviceKeys[u] = mautrix.DeviceIDList{}
	}
	resp, err := d.cli.QueryKeys(d.ctx(), req)
	if err != nil {
		t.Fatalf("keys/query: %v", err)
	}
	if len(resp.Failures) != 0 {
		t.Fatalf("keys/query failures: %v", resp.Failures)
	}
	for userID, devices := range resp.DeviceKeys {
		for deviceID, keys := range devices {
			ed := keys.Keys.GetEd25519(deviceID)
			if keys.UserID != userID || keys.DeviceID != deviceID || ed == "" {
				t.Fatalf("keys/query returned %s/%s as %+v", userID, deviceID, keys)
			}
			ok, err := signatures.VerifySignatureJSON(keys, userID, deviceID.String(), ed)
			if err != nil || !ok {
				t.Fatalf("device keys of %s/%s are not self-signed: %v", userID, deviceID, err)
			}
		}
	}
	return resp
}

// shareRoomKey sends this device's megolm session for roomID to every
// device of users (except itself), olm-encrypted, in one /sendToDevice.
// Devices without an olm session get one from a claimed one-time key.
func (d *device) shareRoomKey(roomID id.RoomID, users ...id.UserID) {
	t := d.t
	t.Helper()
	out := d.outboundSession(roomID)
	devices := d.queryDevices(users...).DeviceKeys

	claim := mautrix.OneTimeKeysRequest{}
	for userID, devs := range devices {
		for deviceID, keys := range devs {
			if deviceID == d.cli.DeviceID && userID == d.cli.UserID {
				continue
			}
			if len(d.olm[keys.Keys.GetCurve25519(deviceID)]) == 0 {
				if claim[userID] == nil {
					claim[userID] = map[id.DeviceID]id.KeyAlgorithm{}
				}
				claim[userID][deviceID] = id.KeyAlgorithmSignedCurve25519
			}
		}
	}
	if len(claim) > 0 {
		resp, err := d.cli.ClaimKeys(d.ctx(), &mautrix.ReqClaimKeys{OneTimeKeys: claim, Timeout: 10000})
		if err != nil {
			t.Fatalf("keys/claim: %v", err)
		}
		if len(resp.Failures) != 0 {
			t.Fatalf("keys/claim failures: %v", resp.Failures)
		}
		for userID, devs := range claim {
			for deviceID := range devs {
				keys := devices[userID][deviceID]
				otks := resp.OneTimeKeys[userID][deviceID]
				if len(otks) != 1 {
					t.Fatalf("keys/claim gave %d one-time keys for %s/%s: %v", len(otks), userID, deviceID, resp.OneTimeKeys)
				}
				for kid, otk := range otks {
					if alg, _ := kid.Parse(); alg != id.KeyAlgorithmSignedCurve25519 {
						t.Fatalf("claimed key %s has the wrong algorithm", kid)
					}
					// The signature covers the key as the device uploaded it.
					ok, err := signatures.VerifySignatureJSON(otk, userID, deviceID.String(), keys.Keys.GetEd25519(deviceID))
					if err != nil || !ok {
						t.Fatalf("claimed one-time key %s of %s/%s is not signed by the device: %v", kid, userID, deviceID, err)
					}
					s, err := d.acct.NewOutboundSession(keys.Keys.GetCurve25519(deviceID), otk.Key)
					if err != nil {
						t.Fatalf("olm outbound session: %v", err)
					}
					d.olm[keys.Keys.GetCurve25519(deviceID)] = append(d.olm[keys.Keys.GetCurve25519(deviceID)], s)
				}
			}
		}
	}

	roomKey := map[string]any{
		"algorithm":   id.AlgorithmMegolmV1,
		"room_id":     roomID,
		"session_id":  out.ID(),
		"session_key": out.Key(),
	}
	messages := map[id.UserID]map[id.DeviceID]*event.Content{}
	for userID, devs := range devices {
		for deviceID, keys := range devs {
			if deviceID == d.cli.DeviceID && userID == d.cli.UserID {
				continue
			}
			if messages[userID] == nil {
				messages[userID] = map[id.DeviceID]*event.Content{}
			}
			messages[userID][deviceID] = &event.Content{Parsed: d.olmEncrypt(userID, keys, event.ToDeviceRoomKey, roomKey)}
		}
	}
	if _, err := d.cli.SendToDevice(d.ctx(), event.ToDeviceEncrypted, &mautrix.ReqSendToDevice{Messages: messages}); err != nil {
		t.Fatalf("sendToDevice: %v", err)
	}
}

// olmEncrypt encrypts one to-device event for a device with the newest olm
// session, with the sender and recipient fields the spec's
// m.olm.v1.curve25519-aes-sha2 section requires in the plaintext.
func (d *device) olmEncrypt(userID id.UserID, keys mautrix.DeviceKeys, evtType event.Type, content any) *event.EncryptedEventContent {
	t := d.t
	t.Helper()
	curve := keys.Keys.GetCurve25519(keys.DeviceID)
	sessions := d.olm[curve]
	if len(sessions) == 0 {
		t.Fatalf("no olm session with %s/%s", userID, keys.DeviceID)
	}
	plaintext, err := json.Marshal(map[string]any{
		"type":           evtType.Type,
		"content":        content,
		"sender":         d.cli.UserID,
		"recipient":      userID,
		"recipient_keys": map[string]any{"ed25519": keys.Keys.GetEd25519(keys.DeviceID)},
		"keys":           map[string]any{"ed25519": d.ed},
	})
	if err != nil {
		t.Fatal(err)
	}
	msgType, ciphertext, err := sessions[len(sessions)-1].Encrypt(plaintext)
	if err != nil {
		t.Fatalf("olm encrypt: %v", err)
	}
	return &event.EncryptedEventContent{
		Algorithm:     id.AlgorithmOlmV1,
		SenderKey:     d.curve,
		OlmCiphertext: event.OlmCiphertexts{curve: {Type: msgType, Body: string(ciphertext)}},
	}
}

// outboundSession is this device's megolm session for roomID; a device can
// decrypt its own messages, so it also keeps the inbound half.
func (d *device) outboundSession(roomID id.RoomID) *session.MegolmOutboundSession {
	t := d.t
	t.Helper()
	if out := d.outbound[roomID]; out != nil {
		return out
	}
	out, err := session.NewMegolmOutboundSession()
	if err != nil {
		t.Fatal(err)
	}
	in, err := session.NewMegolmInboundSession([]byte(out.Key()))
	if err != nil {
		t.Fatal(err)
	}
	d.outbound[roomID] = out
	d.inbound[out.ID()] = inboundSession{roomID: roomID, senderKey: d.curve, s: in}
	return out
}

// sendEncrypted megolm-encrypts an m.room.message and sends it as
// m.room.encrypted.
func (d *device) sendEncrypted(roomID id.RoomID, body string) id.EventID {
	t := d.t
	t.Helper()
	out := d.outboundSession(roomID)
	plaintext, err := json.Marshal(map[string]any{
		"type":    event.EventMessage.Type,
		"room_id": roomID,
		"content": event.MessageEventContent{MsgType: event.MsgText, Body: body},
	})
	if err != nil {
		t.Fatal(err)
	}
	ciphertext, err := out.Encrypt(plaintext)
	if err != nil {
		t.Fatalf("megolm encrypt: %v", err)
	}
	resp, err := d.cli.SendMessageEvent(d.ctx(), roomID, event.EventEncrypted, &event.EncryptedEventContent{
		Algorithm:        id.AlgorithmMegolmV1,
		SenderKey:        d.curve,
		DeviceID:         d.cli.DeviceID,
		SessionID:        out.ID(),
		MegolmCiphertext: ciphertext,
	})
	if err != nil {
		t.Fatalf("sending encrypted event: %v", err)
	}
	return resp.EventID
}

// syncUntil syncs (long-polling) until done is true, handling to-device
// events and collecting room events on the way; it fails the test after
// syncWait.
func (d *device) syncUntil(what string, done func() bool) {
	t := d.t
	t.Helper()
	deadline := time.Now().Add(syncWait)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatalf("%s/%s: %s did not happen within %s", d.cli.UserID, d.cli.DeviceID, what, syncWait)
		}
		resp, err := d.cli.SyncRequest(d.ctx(), 1000, d.since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync: %v", err)
		}
		d.since = resp.NextBatch
		for _, evt := range resp.ToDevice.Events {
			if evt.Type.Type == event.ToDeviceEncrypted.Type {
				d.handleOlm(evt)
			}
		}
		for roomID, room := range resp.Rooms.Join {
			for _, evt := range room.Timeline.Events {
				evt.RoomID = roomID
				d.timeline[evt.ID] = evt
			}
		}
	}
}

// handleOlm decrypts an olm to-device event and, for m.room_key, keeps the
// megolm session. The checks are those of the spec's olm section: the
// plaintext must name this device as recipient and the sender's ed25519
// key must be the one published for the device with the sender_key.
func (d *device) handleOlm(evt *event.Event) {
	t := d.t
	t.Helper()
	var content event.EncryptedEventContent
	if err := json.Unmarshal(evt.Content.VeryRaw, &content); err != nil {
		t.Fatalf("to-device m.room.encrypted: %v: %s", err, evt.Content.VeryRaw)
	}
	if content.Algorithm != id.AlgorithmOlmV1 {
		t.Fatalf("to-device algorithm %q", content.Algorithm)
	}
	ct, ok := content.OlmCiphertext[d.curve]
	if !ok {
		t.Fatalf("to-device event has no ciphertext for this device: %s", evt.Content.VeryRaw)
	}
	plaintext, err := d.olmDecrypt(content.SenderKey, ct.Type, ct.Body)
	if err != nil {
		t.Fatalf("olm decrypt from %s: %v", evt.Sender, err)
	}
	var decrypted struct {
		Type          string          `json:"type"`
		Sender        id.UserID       `json:"sender"`
		Recipient     id.UserID       `json:"recipient"`
		RecipientKeys map[string]any  `json:"recipient_keys"`
		Keys          map[string]any  `json:"keys"`
		Content       json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(plaintext, &decrypted); err != nil {
		t.Fatalf("olm plaintext: %v", err)
	}
	if decrypted.Sender != evt.Sender || decrypted.Recipient != d.cli.UserID || decrypted.RecipientKeys["ed25519"] != d.ed.String() {
		t.Fatalf("olm plaintext for someone else: %s (to-device sender %s)", plaintext, evt.Sender)
	}
	senderEd := id.Ed25519(fmt.Sprint(decrypted.Keys["ed25519"]))
	if !d.publishedKeysMatch(evt.Sender, content.SenderKey, senderEd) {
		t.Fatalf("olm sender keys %s/%s are not a published device of %s", content.SenderKey, senderEd, evt.Sender)
	}
	if decrypted.Type != event.ToDeviceRoomKey.Type {
		return
	}
	var roomKey event.RoomKeyEventContent
	if err := json.Unmarshal(decrypted.Content, &roomKey); err != nil {
		t.Fatal(err)
	}
	in, err := session.NewMegolmInboundSession([]byte(roomKey.SessionKey))
	if err != nil {
		t.Fatalf("m.room_key session_key: %v", err)
	}
	if in.ID() != roomKey.SessionID {
		t.Fatalf("m.room_key session_id %s, session is %s", roomKey.SessionID, in.ID())
	}
	d.inbound[roomKey.SessionID] = inboundSession{roomID: roomKey.RoomID, senderKey: content.SenderKey, s: in}
}

// olmDecrypt decrypts with an existing session from senderKey or, for a
// pre-key message that none matches, a new inbound session (whose one-time
// key is then used up).
func (d *device) olmDecrypt(senderKey id.Curve25519, msgType id.OlmMsgType, body string) ([]byte, error) {
	for _, s := range d.olm[senderKey] {
		if msgType == id.OlmMsgTypePreKey {
			if ok, err := s.MatchesInboundSessionFrom(senderKey.String(), body); err != nil || !ok {
				continue
			}
		}
		if plaintext, err := s.Decrypt(body, msgType); err == nil {
			return plaintext, nil
		}
	}
	if msgType != id.OlmMsgTypePreKey {
		return nil, errors.New("no olm session decrypts this message")
	}
	s, err := d.acct.NewInboundSessionFrom(&senderKey, body)
	if err != nil {
		return nil, fmt.Errorf("new inbound olm session: %w", err)
	}
	if err := d.acct.RemoveOneTimeKeys(s); err != nil {
		return nil, err
	}
	d.olm[senderKey] = append(d.olm[senderKey], s)
	return s.Decrypt(body, msgType)
}

// publishedKeysMatch says whether userID has a device with these keys,
// asking /keys/query.
func (d *device) publishedKeysMatch(userID id.UserID, curve id.Curve25519, ed id.Ed25519) bool {
	for deviceID, keys := range d.queryDevices(userID).DeviceKeys[userID] {
		if keys.Keys.GetCurve25519(deviceID) == curve && keys.Keys.GetEd25519(deviceID) == ed {
			return true
		}
	}
	return false
}

// decrypt decrypts a megolm m.room.encrypted event into its m.room.message
// body, checking that the session was shared for this room by the device
// the event names.
func (d *device) decrypt(evt *event.Event) (string, error) {
	if evt.Type.Type != event.EventEncrypted.Type {
		return "", fmt.Errorf("event %s is %s, not encrypted", evt.ID, evt.Type.Type)
	}
	var content event.EncryptedEventContent
	if err := json.Unmarshal(evt.Content.VeryRaw, &content); err != nil {
		return "", fmt.Errorf("m.room.encrypted content: %w", err)
	}
	in, ok := d.inbound[content.SessionID]
	if !ok {
		return "", fmt.Errorf("no megolm session %s", content.SessionID)
	}
	if in.roomID != evt.RoomID || in.senderKey != content.SenderKey {
		return "", fmt.Errorf("session %s was shared for %s by %s, event is in %s from %s", content.SessionID, in.roomID, in.senderKey, evt.RoomID, content.SenderKey)
	}
	plaintext, _, err := in.s.Decrypt(content.MegolmCiphertext)
	if err != nil {
		return "", fmt.Errorf("megolm decrypt: %w", err)
	}
	var decrypted struct {
		Type    string                    `json:"type"`
		RoomID  id.RoomID                 `json:"room_id"`
		Content event.MessageEventContent `json:"content"`
	}
	if err := json.Unmarshal(plaintext, &decrypted); err != nil {
		return "", err
	}
	if decrypted.RoomID != evt.RoomID || decrypted.Type != event.EventMessage.Type {
		return "", fmt.Errorf("decrypted event is a %s for %s", decrypted.Type, decrypted.RoomID)
	}
	return decrypted.Content.Body, nil
}

// receive syncs until the event and the megolm session it needs have
// arrived (the room key may come in a later sync than the event) and
// decrypts it.
func (d *device) receive(eventID id.EventID) string {
	t := d.t
	t.Helper()
	d.syncUntil("receiving "+eventID.String()+" and its room key", func() bool {
		evt := d.timeline[eventID]
		if evt == nil {
			return false
		}
		var content event.EncryptedEventContent
		if err := json.Unmarshal(evt.Content.VeryRaw, &content); err != nil {
			t.Fatalf("%s is not an m.room.encrypted event: %v: %s", eventID, err, evt.Content.VeryRaw)
		}
		_, ok := d.inbound[content.SessionID]
		return ok
	})
	body, err := d.decrypt(d.timeline[eventID])
	if err != nil {
		t.Fatalf("%s/%s cannot decrypt %s: %v", d.cli.UserID, d.cli.DeviceID, eventID, err)
	}
	return body
}

// createEncryptedRoom has owner create a private room with
// m.room.encryption in its initial state and the others join it; joinVia
// is the owner's server name when they are on other servers.
func createEncryptedRoom(t *testing.T, owner *device, joinVia string, members ...*device) id.RoomID {
	t.Helper()
	var invite []id.UserID
	for _, m := range members {
		invite = append(invite, m.cli.UserID)
	}
	resp, err := owner.cli.CreateRoom(owner.ctx(), &mautrix.ReqCreateRoom{
		Preset: "private_chat",
		Invite: invite,
		InitialState: []*event.Event{{
			Type:    event.StateEncryption,
			Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
		}},
	})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	for _, m := range members {
		req := &mautrix.ReqJoinRoom{}
		if joinVia != "" {
			req.Via = []string{joinVia}
		}
		if _, err := m.cli.JoinRoom(m.ctx(), resp.RoomID.String(), req); err != nil {
			t.Fatalf("%s joining: %v", m.cli.UserID, err)
		}
	}
	var enc event.EncryptionEventContent
	if err := owner.cli.StateEvent(owner.ctx(), resp.RoomID, event.StateEncryption, "", &enc); err != nil || enc.Algorithm != id.AlgorithmMegolmV1 {
		t.Fatalf("m.room.encryption of the new room: %+v, %v", enc, err)
	}
	return resp.RoomID
}

func expectPlaintext(t *testing.T, who, got, want string) {
	t.Helper()
	if got != want {
		t.Fatalf("%s decrypted %q, want %q", who, got, want)
	}
}

// Scenario 1: alice on two devices and bob on one share an encrypted room;
// alice's first device shares its megolm session over olm (keys/query,
// keys/claim, sendToDevice) and sends; bob and alice's second device
// decrypt the original plaintext.
func TestE2EEMessageBetweenDevices(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		aliceID, aliceTok := hs.RegisterUser(t, "alice")
		bobID, bobTok := hs.RegisterUser(t, "bob")
		alice1 := newDevice(t, hs, aliceID, aliceTok)
		alice2 := login(t, hs, aliceID)
		bob := newDevice(t, hs, bobID, bobTok)

		roomID := createEncryptedRoom(t, alice1, "", bob)
		alice1.shareRoomKey(roomID, alice1.cli.UserID, bob.cli.UserID)
		const text = "the cake is in the oven"
		eventID := alice1.sendEncrypted(roomID, text)

		expectPlaintext(t, "bob", bob.receive(eventID), text)
		expectPlaintext(t, "alice's second device", alice2.receive(eventID), text)
		// The server only ever saw ciphertext.
		if raw := string(bob.timeline[eventID].Content.VeryRaw); bob.timeline[eventID].Type.Type != event.EventEncrypted.Type || strings.Contains(raw, text) {
			t.Fatalf("the server-side event is not opaque: %s", raw)
		}
	})
}

// Scenario 2: alice's first device backs its megolm session up to
// server-side key backup (m.megolm_backup.v1.curve25519-aes-sha2, mautrix's
// backup encryption); a third device that has only the backup's recovery
// key restores the session from the backup and decrypts the history it
// reads from /messages.
func TestE2EEKeyBackupRestoresHistory(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		aliceID, aliceTok := hs.RegisterUser(t, "alice")
		alice1 := newDevice(t, hs, aliceID, aliceTok)
		roomID := createEncryptedRoom(t, alice1, "")
		const text = "remember the milk"
		eventID := alice1.sendEncrypted(roomID, text)

		// Device 1 creates a backup version and uploads its session.
		backupKey, err := backup.NewMegolmBackupKey()
		if err != nil {
			t.Fatal(err)
		}
		authData := backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(backupKey.PublicKey().Bytes()))}
		authData.Signatures = signatures.NewSingleSignature(alice1.cli.UserID, id.KeyAlgorithmEd25519, alice1.cli.DeviceID.String(), signJSON(t, authData, alice1.acct.Sign))
		created, err := alice1.cli.CreateKeyBackupVersion(alice1.ctx(), &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1, AuthData: authData,
		})
		if err != nil {
			t.Fatalf("creating a backup version: %v", err)
		}
		in := alice1.inbound[alice1.outbound[roomID].ID()]
		exported, err := in.s.Export(in.s.FirstKnownIndex())
		if err != nil {
			t.Fatal(err)
		}
		encrypted, err := backup.EncryptSessionData(backupKey, backup.MegolmSessionData{
			Algorithm:          id.AlgorithmMegolmV1,
			ForwardingKeyChain: []string{},
			SenderClaimedKeys:  backup.SenderClaimedKeys{Ed25519: alice1.ed},
			SenderKey:          alice1.curve,
			SessionKey:         string(exported),
		})
		if err != nil {
			t.Fatal(err)
		}
		sessionData, err := json.Marshal(encrypted)
		if err != nil {
			t.Fatal(err)
		}
		put, err := alice1.cli.PutKeysInBackup(alice1.ctx(), created.Version, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
			roomID: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{in.s.ID(): {
				FirstMessageIndex: int(in.s.FirstKnownIndex()), IsVerified: true, SessionData: sessionData,
			}}},
		}})
		if err != nil {
			t.Fatalf("uploading to the backup: %v", err)
		}
		if put.Count != 1 || put.ETag == "" {
			t.Fatalf("backup upload answered count %d etag %q", put.Count, put.ETag)
		}

		// Device 3 logs in, finds the backup, checks it is the one its
		// recovery key opens, restores and decrypts the history.
		alice3 := login(t, hs, aliceID)
		recovered, err := backup.MegolmBackupKeyFromBytes(backupKey.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		latest, err := alice3.cli.GetKeyBackupLatestVersion(alice3.ctx())
		if err != nil {
			t.Fatalf("latest backup version: %v", err)
		}
		if latest.Version != created.Version || latest.Algorithm != id.KeyBackupAlgorithmMegolmBackupV1 || latest.Count != 1 ||
			latest.AuthData.PublicKey != id.Ed25519(base64.RawStdEncoding.EncodeToString(recovered.PublicKey().Bytes())) {
			t.Fatalf("latest backup version: %+v", latest)
		}
		if ok, err := signatures.VerifySignatureJSON(latest.AuthData, alice1.cli.UserID, alice1.cli.DeviceID.String(), alice1.ed); err != nil || !ok {
			t.Fatalf("backup auth_data signature by device 1 does not verify: %v", err)
		}
		keys, err := alice3.cli.GetKeyBackup(alice3.ctx(), latest.Version)
		if err != nil {
			t.Fatalf("downloading the backup: %v", err)
		}
		for rid, room := range keys.Rooms {
			for sid, data := range room.Sessions {
				restored, err := data.SessionData.Decrypt(recovered)
				if err != nil {
					t.Fatalf("decrypting backed-up session %s: %v", sid, err)
				}
				s, err := session.NewMegolmInboundSessionFromExport([]byte(restored.SessionKey))
				if err != nil {
					t.Fatal(err)
				}
				if s.ID() != sid || restored.SenderKey != alice1.curve || restored.SenderClaimedKeys.Ed25519 != alice1.ed {
					t.Fatalf("backup has session %s from %s/%s under ID %s", s.ID(), restored.SenderKey, restored.SenderClaimedKeys.Ed25519, sid)
				}
				alice3.inbound[sid] = inboundSession{roomID: rid, senderKey: restored.SenderKey, s: s}
			}
		}

		msgs, err := alice3.cli.Messages(alice3.ctx(), roomID, "", "", mautrix.DirectionBackward, nil, 50)
		if err != nil {
			t.Fatalf("/messages: %v", err)
		}
		found := false
		for _, evt := range msgs.Chunk {
			if evt.ID != eventID {
				continue
			}
			found = true
			evt.RoomID = roomID
			body, err := alice3.decrypt(evt)
			if err != nil {
				t.Fatalf("device 3 cannot decrypt the history: %v", err)
			}
			expectPlaintext(t, "alice's third device", body, text)
		}
		if !found {
			t.Fatalf("/messages does not have %s", eventID)
		}
	})
}

// crossSigningKeys are a user's master, self-signing and user-signing keys.
type crossSigningKeys struct {
	master, self, user *pk.Signing
}

func newCrossSigningKeys(t *testing.T) crossSigningKeys {
	t.Helper()
	var keys [3]*pk.Signing
	for i := range keys {
		k, err := pk.NewSigning()
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
	}
	return crossSigningKeys{keys[0], keys[1], keys[2]}
}

// upload is the /keys/device_signing/upload body: the subkeys are signed by
// the master key.
func (c crossSigningKeys) upload(t *testing.T, userID id.UserID) *mautrix.UploadCrossSigningKeysReq[any] {
	t.Helper()
	key := func(usage id.CrossSigningUsage, k *pk.Signing) mautrix.CrossSigningKeys {
		return mautrix.CrossSigningKeys{UserID: userID, Usage: []id.CrossSigningUsage{usage}, Keys: map[id.KeyID]id.Ed25519{id.NewKeyID(id.KeyAlgorithmEd25519, k.PublicKey().String()): k.PublicKey()}}
	}
	signed := func(k mautrix.CrossSigningKeys) mautrix.CrossSigningKeys {
		sig, err := c.master.SignJSON(k)
		if err != nil {
			t.Fatal(err)
		}
		k.Signatures = signatures.NewSingleSignature(userID, id.KeyAlgorithmEd25519, c.master.PublicKey().String(), sig)
		return k
	}
	return &mautrix.UploadCrossSigningKeysReq[any]{
		Master:      key(id.XSUsageMaster, c.master),
		SelfSigning: signed(key(id.XSUsageSelfSigning, c.self)),
		UserSigning: signed(key(id.XSUsageUserSigning, c.user)),
	}
}

// Scenario 3: alice sets up cross-signing (replacing keys needs
// user-interactive auth with her password), signs her second device with
// the self-signing key; bob's /keys/query shows the signature, and the
// chain master key -> self-signing key -> device verifies with mautrix's
// signature verification, for the signed device and not for the other one.
func TestE2EECrossSignedDevice(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		aliceID, aliceTok := hs.RegisterUser(t, "alice")
		bobID, bobTok := hs.RegisterUser(t, "bob")
		alice1 := newDevice(t, hs, aliceID, aliceTok)
		alice2 := login(t, hs, aliceID)
		bob := newDevice(t, hs, bobID, bobTok)

		uiaAsked := 0
		password := func(uia *mautrix.RespUserInteractive) any {
			uiaAsked++
			if !uia.HasSingleStageFlow(mautrix.AuthTypePassword) {
				t.Fatalf("UIA offers no password flow: %+v", uia)
			}
			return &mautrix.ReqUIAuthLogin{
				BaseAuthData: mautrix.BaseAuthData{Type: mautrix.AuthTypePassword, Session: uia.Session},
				User:         aliceID,
				Password:     "password",
			}
		}
		if err := alice1.cli.UploadCrossSigningKeys(alice1.ctx(), newCrossSigningKeys(t).upload(t, alice1.cli.UserID), password); err != nil {
			t.Fatalf("first cross-signing upload: %v", err)
		}
		// Resetting cross-signing replaces the keys and needs the password.
		asked := uiaAsked
		keys := newCrossSigningKeys(t)
		if err := alice1.cli.UploadCrossSigningKeys(alice1.ctx(), keys.upload(t, alice1.cli.UserID), password); err != nil {
			t.Fatalf("replacing cross-signing keys: %v", err)
		}
		if uiaAsked != asked+1 {
			t.Fatalf("replacing cross-signing keys did not ask for user-interactive auth")
		}

		// Alice signs device 2 with the self-signing key, as the device keys
		// are published.
		published := alice1.queryDevices(alice1.cli.UserID).DeviceKeys[alice1.cli.UserID][alice2.cli.DeviceID]
		toSign := mautrix.ReqKeysSignatures{UserID: published.UserID, DeviceID: published.DeviceID, Algorithms: published.Algorithms, Keys: map[id.KeyID]string{}}
		for kid, k := range published.Keys {
			toSign.Keys[id.KeyID(kid)] = k
		}
		sig, err := keys.self.SignJSON(toSign)
		if err != nil {
			t.Fatal(err)
		}
		toSign.Signatures = signatures.NewSingleSignature(alice1.cli.UserID, id.KeyAlgorithmEd25519, keys.self.PublicKey().String(), sig)
		up, err := alice1.cli.UploadSignatures(alice1.ctx(), &mautrix.ReqUploadSignatures{alice1.cli.UserID: {alice2.cli.DeviceID.String(): toSign}})
		if err != nil || len(up.Failures) != 0 {
			t.Fatalf("signatures/upload: %+v %v", up, err)
		}

		// Bob looks alice up and verifies the chain. He trusts her master
		// key because he compared it out of band (here: knows it).
		q := bob.queryDevices(alice1.cli.UserID)
		master, ok := q.MasterKeys[alice1.cli.UserID]
		if !ok || master.Keys[id.NewKeyID(id.KeyAlgorithmEd25519, keys.master.PublicKey().String())] != keys.master.PublicKey() {
			t.Fatalf("bob sees master key %+v, want %s", master, keys.master.PublicKey())
		}
		selfSigning := q.SelfSigningKeys[alice1.cli.UserID]
		sskPub := selfSigning.Keys[id.NewKeyID(id.KeyAlgorithmEd25519, keys.self.PublicKey().String())]
		if ok, err := signatures.VerifySignatureJSON(selfSigning, alice1.cli.UserID, keys.master.PublicKey().String(), keys.master.PublicKey()); err != nil || !ok || sskPub != keys.self.PublicKey() {
			t.Fatalf("self-signing key %+v is not signed by the master key: %v", selfSigning, err)
		}
		if _, ok := q.UserSigningKeys[alice1.cli.UserID]; ok {
			t.Fatalf("bob sees alice's user-signing key")
		}
		signedDevice := q.DeviceKeys[alice1.cli.UserID][alice2.cli.DeviceID]
		if signedDevice.Signatures[alice1.cli.UserID][id.NewKeyID(id.KeyAlgorithmEd25519, sskPub.String())] == "" {
			t.Fatalf("bob does not see the cross-signing signature on device 2: %+v", signedDevice.Signatures)
		}
		if ok, err := signatures.VerifySignatureJSON(signedDevice, alice1.cli.UserID, sskPub.String(), sskPub); err != nil || !ok {
			t.Fatalf("device 2 is not verified by the self-signing key: %v", err)
		}
		unsigned := q.DeviceKeys[alice1.cli.UserID][alice1.cli.DeviceID]
		if ok, _ := signatures.VerifySignatureJSON(unsigned, alice1.cli.UserID, sskPub.String(), sskPub); ok {
			t.Fatalf("device 1 verifies although alice never signed it")
		}
	})
}

// Scenario 4 (federation): alice on server A and bob on server B share an
// encrypted room; alice's device list query and one-time-key claim for bob
// and her to-device room key go over federation, and bob decrypts her
// message.
func TestE2EEMessageOverFederation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		aliceID, aliceTok := fed[0].RegisterUser(t, "alice")
		bobID, bobTok := fed[1].RegisterUser(t, "bob")
		alice := newDevice(t, fed[0], aliceID, aliceTok)
		bob := newDevice(t, fed[1], bobID, bobTok)

		roomID := createEncryptedRoom(t, alice, fed[0].Config.ServerName, bob)
		alice.shareRoomKey(roomID, alice.cli.UserID, bob.cli.UserID)
		if len(alice.olm[bob.curve]) != 1 {
			t.Fatalf("alice has no olm session with bob's device")
		}
		const text = "hello from the other side"
		eventID := alice.sendEncrypted(roomID, text)
		expectPlaintext(t, "bob on server B", bob.receive(eventID), text)
		// And back: bob answers in a session of his own.
		bob.shareRoomKey(roomID, alice.cli.UserID, bob.cli.UserID)
		const reply = "loud and clear"
		replyID := bob.sendEncrypted(roomID, reply)
		expectPlaintext(t, "alice on server A", alice.receive(replyID), reply)
	})
}
