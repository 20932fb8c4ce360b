package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// signedObject is a signed JSON object (appendices, Signing JSON): its
// fields, and its canonical form without signatures and unsigned, which is
// what signatures cover and what we store.
type signedObject struct {
	raw        []byte
	fields     map[string]json.RawMessage
	canonical  []byte
	signatures map[string]map[string]string
}

// parseSigned decodes a signed JSON object; what names the object in errors.
func parseSigned(raw json.RawMessage, what string) (*signedObject, error) {
	o := &signedObject{raw: raw}
	if len(raw) == 0 || raw[0] != '{' || json.Unmarshal(raw, &o.fields) != nil {
		return nil, mxhttp.BadJSON("%s must be a JSON object", what)
	}
	if s, ok := o.fields["signatures"]; ok && json.Unmarshal(s, &o.signatures) != nil {
		return nil, mxhttp.BadJSON("%s: signatures must map user IDs to key IDs to signatures", what)
	}
	stripped := make(map[string]json.RawMessage, len(o.fields))
	for k, v := range o.fields {
		if k != "signatures" && k != "unsigned" {
			stripped[k] = v
		}
	}
	b, _ := json.Marshal(stripped)
	c, err := canonicalJSON(b)
	if err != nil {
		return nil, mxhttp.BadJSON("%s is not canonical JSON: %v", what, err)
	}
	o.canonical = c
	return o, nil
}

// canonicalJSON is gomatrixserverlib.CanonicalJSON for what we store,
// refusing the objects it mangles: it writes object keys unescaped, so a
// key holding a quote, a backslash or a control character comes out as
// invalid JSON (which every later response embedding it fails on) or as
// another key.
func canonicalJSON(b []byte) ([]byte, error) {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	if !plainKeys(v) {
		return nil, errors.New("an object key holds a quote, a backslash or a control character")
	}
	return gomatrixserverlib.CanonicalJSON(b)
}

func plainKeys(v any) bool {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if strings.ContainsAny(k, `"\`) || strings.ContainsFunc(k, func(r rune) bool { return r < 0x20 }) || !plainKeys(e) {
				return false
			}
		}
	case []any:
		for _, e := range x {
			if !plainKeys(e) {
				return false
			}
		}
	}
	return true
}

// sameContent reports whether o, without signatures, equals a stored key.
func (o *signedObject) sameContent(stored string) bool {
	return bytes.Equal(o.canonical, []byte(stored))
}

// decodeKey decodes an unpadded (or padded) base64 ed25519 public key.
func decodeKey(s string) (ed25519.PublicKey, bool) {
	b, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, false
	}
	return ed25519.PublicKey(b), true
}

// verify checks o's signature by signer's key keyID ("ed25519:...") with
// public key pub (unpadded base64).
func (o *signedObject) verify(signer, keyID, pub string) error {
	key, ok := decodeKey(pub)
	if !ok {
		return mxhttp.InvalidSignature("Key %s is not an ed25519 public key", keyID)
	}
	if _, ok := o.signatures[signer][keyID]; !ok {
		return mxhttp.InvalidSignature("Missing signature by %s %s", signer, keyID)
	}
	if err := gomatrixserverlib.VerifyJSON(signer, gomatrixserverlib.KeyID(keyID), key, o.canonicalSigned(signer, keyID)); err != nil {
		return mxhttp.InvalidSignature("Invalid signature by %s %s", signer, keyID)
	}
	return nil
}

// canonicalSigned is the stripped object with just one signature, which is
// all VerifyJSON needs.
func (o *signedObject) canonicalSigned(signer, keyID string) []byte {
	var m map[string]json.RawMessage
	_ = json.Unmarshal(o.canonical, &m)
	sigs, _ := json.Marshal(map[string]map[string]string{signer: {keyID: o.signatures[signer][keyID]}})
	m["signatures"] = sigs
	b, _ := json.Marshal(m)
	return b
}

// withSignatures returns a stored key (canonical JSON without signatures)
// with signatures and, when not nil, unsigned added.
func withSignatures(stored string, sigs map[string]map[string]string, unsigned any) json.RawMessage {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(stored), &m); err != nil {
		return json.RawMessage(stored)
	}
	if len(sigs) > 0 {
		m["signatures"], _ = json.Marshal(sigs)
	}
	if unsigned != nil {
		m["unsigned"], _ = json.Marshal(unsigned)
	}
	b, _ := json.Marshal(m)
	return b
}
