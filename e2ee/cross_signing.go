package e2ee

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"slices"
	"strings"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Cross-signing key types, as in the keys' usage field.
const (
	keyTypeMaster      = "master"
	keyTypeSelfSigning = "self_signing"
	keyTypeUserSigning = "user_signing"
)

// CrossSigningUpload is the body of POST /keys/device_signing/upload.
type CrossSigningUpload struct {
	MasterKey      json.RawMessage `json:"master_key"`
	SelfSigningKey json.RawMessage `json:"self_signing_key"`
	UserSigningKey json.RawMessage `json:"user_signing_key"`
	Auth           json.RawMessage `json:"auth"`
}

// crossSigningKey is a parsed, checked cross-signing key.
type crossSigningKey struct {
	keyType string
	pub     string // unpadded base64 public key, also its key ID suffix
	obj     *signedObject
}

type crossSigningFields struct {
	UserID string            `json:"user_id"`
	Usage  []string          `json:"usage"`
	Keys   map[string]string `json:"keys"`
}

// parseCrossSigningKey checks a CrossSigningKey object: it belongs to
// userID, has the usage of its slot and exactly one ed25519 key.
func parseCrossSigningKey(raw json.RawMessage, userID, keyType string) (*crossSigningKey, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	what := keyType + " key"
	o, err := parseSigned(raw, what)
	if err != nil {
		return nil, err
	}
	var f crossSigningFields
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, mxhttp.BadJSON("%s has the wrong shape: %v", what, err)
	}
	if f.UserID != userID {
		return nil, mxhttp.InvalidParam("The %s belongs to %q, not to you", what, f.UserID)
	}
	if !slices.Contains(f.Usage, keyType) {
		return nil, mxhttp.InvalidParam("The %s must have usage %q", what, keyType)
	}
	if len(f.Keys) != 1 {
		return nil, mxhttp.InvalidParam("The %s must hold exactly one key", what)
	}
	for id, pub := range f.Keys {
		if id != "ed25519:"+pub {
			return nil, mxhttp.InvalidParam("The %s's key ID must be ed25519:<public key>", what)
		}
		if _, ok := decodeKey(pub); !ok {
			return nil, mxhttp.InvalidParam("The %s is not an ed25519 public key", what)
		}
		return &crossSigningKey{keyType: keyType, pub: pub, obj: o}, nil
	}
	return nil, nil // unreachable
}

func parseCrossSigningUpload(userID string, req CrossSigningUpload) ([]*crossSigningKey, error) {
	var out []*crossSigningKey
	for _, s := range []struct {
		raw json.RawMessage
		typ string
	}{{req.MasterKey, keyTypeMaster}, {req.SelfSigningKey, keyTypeSelfSigning}, {req.UserSigningKey, keyTypeUserSigning}} {
		k, err := parseCrossSigningKey(s.raw, userID, s.typ)
		if err != nil {
			return nil, err
		}
		if k != nil {
			out = append(out, k)
		}
	}
	return out, nil
}

// CrossSigningNeedsAuth reports whether an upload must pass user-interactive
// authentication: only when the user already has a master key and the
// request holds a key that differs from the stored one (the first upload,
// and repeating it, need none).
func (e *E2EE) CrossSigningNeedsAuth(ctx context.Context, userID string, req CrossSigningUpload) (bool, error) {
	keys, err := parseCrossSigningUpload(userID, req)
	if err != nil {
		return false, err
	}
	stored, err := storage.CrossSigningKeys(ctx, e.db.Read(), userID)
	if err != nil {
		return false, err
	}
	if _, ok := stored[keyTypeMaster]; !ok {
		return false, nil
	}
	for _, k := range keys {
		old, ok := stored[k.keyType]
		if !ok || !k.obj.sameContent(old.KeyJSON) {
			return true, nil
		}
	}
	return false, nil
}

// UploadCrossSigningKeys stores a user's cross-signing keys (POST
// /keys/device_signing/upload); the caller has done any authentication
// CrossSigningNeedsAuth asked for. Self-signing and user-signing keys must
// be signed by the accompanying or the stored master key. A new master key
// drops the old self- and user-signing keys it had signed.
func (e *E2EE) UploadCrossSigningKeys(ctx context.Context, userID string, req CrossSigningUpload) error {
	keys, err := parseCrossSigningUpload(userID, req)
	if err != nil {
		return err
	}
	changed := false
	err = e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		stored, err := storage.CrossSigningKeys(ctx, tx, userID)
		if err != nil {
			return err
		}
		masterPub := ""
		if m, ok := stored[keyTypeMaster]; ok {
			masterPub = m.KeyID
		}
		for _, k := range keys {
			if k.keyType == keyTypeMaster {
				masterPub = k.pub
			}
		}
		devices, err := storage.DeviceIDs(ctx, tx, userID)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if slices.Contains(devices, k.pub) {
				return mxhttp.Forbidden("The %s key's public key is one of your device IDs", k.keyType)
			}
			if k.keyType == keyTypeMaster {
				continue
			}
			if masterPub == "" {
				return mxhttp.MissingParam("No master key is available to check the %s key against", k.keyType)
			}
			if err := k.obj.verify(userID, "ed25519:"+masterPub, masterPub); err != nil {
				return err
			}
		}
		for _, k := range keys {
			old, had := stored[k.keyType]
			if had && old.KeyID == k.pub && k.obj.sameContent(old.KeyJSON) {
				continue
			}
			changed = true
			if had {
				if err := storage.DeleteSignaturesOf(ctx, tx, userID, old.KeyID); err != nil {
					return err
				}
			}
			if err := storage.UpsertCrossSigningKey(ctx, tx, userID, k.keyType, storage.CrossSigningKey{KeyID: k.pub, KeyJSON: string(k.obj.canonical)}); err != nil {
				return err
			}
			if err := e.storeCrossSigningSignatures(ctx, tx, userID, k, masterPub); err != nil {
				return err
			}
		}
		if old, ok := stored[keyTypeMaster]; ok && old.KeyID != masterPub {
			// The old subkeys were signed by the replaced master key.
			for _, typ := range []string{keyTypeSelfSigning, keyTypeUserSigning} {
				sub, had := stored[typ]
				if !had || slices.ContainsFunc(keys, func(k *crossSigningKey) bool { return k.keyType == typ }) {
					continue
				}
				if err := storage.DeleteCrossSigningKey(ctx, tx, userID, typ); err != nil {
					return err
				}
				if err := storage.DeleteSignaturesOf(ctx, tx, userID, sub.KeyID); err != nil {
					return err
				}
			}
		}
		if !changed {
			return nil
		}
		return e.RecordCrossSigningChange(ctx, tx, userID)
	})
	if err != nil {
		return err
	}
	if changed {
		e.NotifyDeviceListChange(ctx, userID)
	}
	return nil
}

// storeCrossSigningSignatures keeps the signatures of a new key that we
// can check: the master key's on a subkey, and the user's devices' on the
// master key. Others are dropped.
func (e *E2EE) storeCrossSigningSignatures(ctx context.Context, tx *sql.Tx, userID string, k *crossSigningKey, masterPub string) error {
	for keyID, sig := range k.obj.signatures[userID] {
		signer, ok := strings.CutPrefix(keyID, "ed25519:")
		if !ok {
			continue
		}
		var pub string
		switch {
		case k.keyType != keyTypeMaster && signer == masterPub:
			pub = masterPub
		case k.keyType == keyTypeMaster:
			dk, err := deviceSigningKey(ctx, tx, userID, signer)
			if err != nil {
				return err
			}
			pub = dk
		}
		if pub == "" || k.obj.verify(userID, keyID, pub) != nil {
			continue
		}
		if err := storage.UpsertKeySignature(ctx, tx, storage.KeySignature{
			TargetUserID: userID, TargetKeyID: k.pub, SignerUserID: userID, SignerKeyID: keyID, Signature: sig,
		}); err != nil {
			return err
		}
	}
	return nil
}

// deviceSigningKey returns a device's ed25519 public key, "" if the device
// has uploaded no keys.
func deviceSigningKey(ctx context.Context, q storage.Reader, userID, deviceID string) (string, error) {
	js, err := storage.GetDeviceKeys(ctx, q, userID, deviceID)
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	var f deviceKeyFields
	if err := json.Unmarshal([]byte(js), &f); err != nil {
		return "", nil
	}
	return f.Keys["ed25519:"+deviceID], nil
}

// UploadSignatures stores signatures of keys (POST /keys/signatures/upload):
// of the caller's own devices by their self-signing key, of the caller's
// master key by their devices, and of other users' master keys by the
// caller's user-signing key. Each signed object must equal the stored key
// apart from signatures. Failures are reported per user and key; the
// signatures that check out are stored regardless.
func (e *E2EE) UploadSignatures(ctx context.Context, userID string, body map[string]map[string]json.RawMessage) (map[string]map[string]*mxhttp.Error, error) {
	failures := map[string]map[string]*mxhttp.Error{}
	fail := func(target, keyID string, err error) {
		if failures[target] == nil {
			failures[target] = map[string]*mxhttp.Error{}
		}
		failures[target][keyID] = mxhttp.AsError(err)
	}
	var changedUsers []string
	err := e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		own, err := storage.CrossSigningKeys(ctx, tx, userID)
		if err != nil {
			return err
		}
		for target, objs := range body {
			var signedDevices []string
			signedCrossSigning := false
			for keyID, raw := range objs {
				sigs, err := e.checkSignatureUpload(ctx, tx, userID, own, target, keyID, raw)
				if err != nil {
					var me *mxhttp.Error
					if !errors.As(err, &me) {
						return err
					}
					fail(target, keyID, err)
					continue
				}
				for _, s := range sigs {
					if err := storage.UpsertKeySignature(ctx, tx, s); err != nil {
						return err
					}
				}
				if len(sigs) == 0 {
					continue
				}
				if isDevice, err := storage.DeviceExists(ctx, tx, target, keyID); err != nil {
					return err
				} else if isDevice {
					signedDevices = append(signedDevices, keyID)
				} else {
					signedCrossSigning = true
				}
			}
			if len(signedDevices) > 0 || signedCrossSigning {
				changedUsers = append(changedUsers, target)
			}
			for _, d := range signedDevices {
				if err := e.RecordDeviceListChange(ctx, tx, target, d); err != nil {
					return err
				}
			}
			if signedCrossSigning {
				if err := e.RecordCrossSigningChange(ctx, tx, target); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, u := range changedUsers {
		e.NotifyDeviceListChange(ctx, u)
	}
	return failures, nil
}

// checkSignatureUpload checks one signed object of a signature upload and
// returns the signatures to store, or a Matrix error for failures.
func (e *E2EE) checkSignatureUpload(ctx context.Context, tx *sql.Tx, userID string, own map[string]storage.CrossSigningKey,
	target, keyID string, raw json.RawMessage) ([]storage.KeySignature, error) {
	o, err := parseSigned(raw, "signed key")
	if err != nil {
		return nil, err
	}
	if len(o.signatures[userID]) == 0 {
		return nil, mxhttp.InvalidSignature("No signature by %s", userID)
	}
	if !e.isLocal(target) {
		return nil, mxhttp.NotFound("Signing keys of remote users is not supported yet")
	}
	targetKeys, err := storage.CrossSigningKeys(ctx, tx, target)
	if err != nil {
		return nil, err
	}
	sig := func(signerKeyID, pub string) ([]storage.KeySignature, error) {
		if err := o.verify(userID, signerKeyID, pub); err != nil {
			return nil, err
		}
		return []storage.KeySignature{{TargetUserID: target, TargetKeyID: keyID, SignerUserID: userID,
			SignerKeyID: signerKeyID, Signature: o.signatures[userID][signerKeyID]}}, nil
	}
	master, hasMaster := targetKeys[keyTypeMaster]
	if target != userID {
		// Another user's master key, signed with our user-signing key.
		if !hasMaster || master.KeyID != keyID {
			return nil, mxhttp.NotFound("Unknown key %s of %s", keyID, target)
		}
		if !o.sameContent(master.KeyJSON) {
			return nil, mxhttp.InvalidSignature("The signed object does not match the stored key")
		}
		usk, ok := own[keyTypeUserSigning]
		if !ok {
			return nil, mxhttp.InvalidSignature("You have no user-signing key")
		}
		return sig("ed25519:"+usk.KeyID, usk.KeyID)
	}
	if hasMaster && master.KeyID == keyID {
		// Our master key, signed by our devices.
		if !o.sameContent(master.KeyJSON) {
			return nil, mxhttp.InvalidSignature("The signed object does not match the stored key")
		}
		var out []storage.KeySignature
		for signerKeyID := range o.signatures[userID] {
			dev, ok := strings.CutPrefix(signerKeyID, "ed25519:")
			if !ok || dev == keyID {
				continue
			}
			pub, err := deviceSigningKey(ctx, tx, userID, dev)
			if err != nil {
				return nil, err
			}
			if pub == "" {
				return nil, mxhttp.InvalidSignature("Unknown signing device %s", dev)
			}
			s, err := sig(signerKeyID, pub)
			if err != nil {
				return nil, err
			}
			out = append(out, s...)
		}
		if len(out) == 0 {
			return nil, mxhttp.InvalidSignature("No signature by one of your devices")
		}
		return out, nil
	}
	// One of our devices, signed with our self-signing key.
	dk, err := storage.GetDeviceKeys(ctx, tx, userID, keyID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown key %s", keyID)
	}
	if err != nil {
		return nil, err
	}
	if !o.sameContent(dk) {
		return nil, mxhttp.InvalidSignature("The signed object does not match the stored device keys")
	}
	ssk, ok := own[keyTypeSelfSigning]
	if !ok {
		return nil, mxhttp.InvalidSignature("You have no self-signing key")
	}
	return sig("ed25519:"+ssk.KeyID, ssk.KeyID)
}
