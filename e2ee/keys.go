package e2ee

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// UploadRequest is the body of POST /keys/upload.
type UploadRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// deviceKeyFields are the fields of a device_keys object we check.
type deviceKeyFields struct {
	UserID     string            `json:"user_id"`
	DeviceID   string            `json:"device_id"`
	Algorithms []string          `json:"algorithms"`
	Keys       map[string]string `json:"keys"`
}

// keyUpload is one one-time or fallback key, split into algorithm and ID.
type keyUpload struct {
	algorithm, keyID, json string
}

func parseKeyMap(m map[string]json.RawMessage, what string) ([]keyUpload, error) {
	out := make([]keyUpload, 0, len(m))
	for name, v := range m {
		alg, id, ok := strings.Cut(name, ":")
		if !ok || alg == "" || id == "" {
			return nil, mxhttp.BadJSON("%s: key name %q must be <algorithm>:<key_id>", what, name)
		}
		c, err := canonicalJSON(v)
		if err != nil || len(c) == 0 || (c[0] != '{' && c[0] != '"') {
			return nil, mxhttp.BadJSON("%s: key %q must be a string or a JSON object", what, name)
		}
		out = append(out, keyUpload{alg, id, string(c)})
	}
	// Keys of one upload are equivalent in claim order (keys/claim); sorting
	// them by name makes that order deterministic.
	slices.SortFunc(out, func(a, b keyUpload) int { return strings.Compare(a.algorithm+":"+a.keyID, b.algorithm+":"+b.keyID) })
	return out, nil
}

// UploadKeys stores a device's identity keys, one-time keys and fallback
// key (client-server API, POST /keys/upload) and returns its one-time key
// counts. Device keys must name the uploading user and device and be signed
// by the device's own ed25519 key.
func (e *E2EE) UploadKeys(ctx context.Context, userID, deviceID string, req UploadRequest) (map[string]int, error) {
	u, err := e.CheckUpload(userID, deviceID, req)
	if err != nil {
		return nil, err
	}
	changed := false
	err = e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		changed, err = e.StoreUpload(ctx, tx, u)
		return err
	})
	if err != nil {
		return nil, err
	}
	if changed {
		e.NotifyDeviceListChange(ctx, userID)
	}
	counts, err := storage.OneTimeKeyCounts(ctx, e.db.Read(), userID, deviceID)
	if err != nil {
		return nil, err
	}
	if _, ok := counts["signed_curve25519"]; !ok {
		counts["signed_curve25519"] = 0 // clients look for it even when zero
	}
	return counts, nil
}

// CheckedUpload is a key upload that passed CheckUpload, ready to store.
type CheckedUpload struct {
	userID, deviceID string
	dk               *signedObject
	otks, fallbacks  []keyUpload
}

// CheckUpload validates a key upload for a device without writing anything.
func (e *E2EE) CheckUpload(userID, deviceID string, req UploadRequest) (*CheckedUpload, error) {
	u := &CheckedUpload{userID: userID, deviceID: deviceID}
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		var err error
		if u.dk, err = e.checkDeviceKeys(userID, deviceID, req.DeviceKeys); err != nil {
			return nil, err
		}
	}
	var err error
	if u.otks, err = parseKeyMap(req.OneTimeKeys, "one_time_keys"); err != nil {
		return nil, err
	}
	if u.fallbacks, err = parseKeyMap(req.FallbackKeys, "fallback_keys"); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, f := range u.fallbacks {
		if seen[f.algorithm] {
			return nil, mxhttp.InvalidParam("fallback_keys may hold at most one key per algorithm (%s)", f.algorithm)
		}
		seen[f.algorithm] = true
	}
	return u, nil
}

// HasDeviceKeys reports whether the upload carries device_keys.
func (u *CheckedUpload) HasDeviceKeys() bool { return u.dk != nil }

// StoreUpload writes a checked upload inside tx; changed reports new
// device keys (the caller notifies after commit with
// NotifyDeviceListChange).
func (e *E2EE) StoreUpload(ctx context.Context, tx *sql.Tx, u *CheckedUpload) (changed bool, err error) {
	if u.dk != nil {
		if changed, err = e.storeDeviceKeys(ctx, tx, u.userID, u.deviceID, u.dk); err != nil {
			return false, err
		}
	}
	for _, k := range u.otks {
		old, err := storage.GetOneTimeKey(ctx, tx, u.userID, u.deviceID, k.algorithm, k.keyID)
		if err == nil {
			if old != k.json {
				return false, mxhttp.InvalidParam("One-time key %s:%s already exists with different content", k.algorithm, k.keyID)
			}
			continue // the same key again: a retried upload
		}
		if !errors.Is(err, storage.ErrNotFound) {
			return false, err
		}
		if err := storage.InsertOneTimeKey(ctx, tx, u.userID, u.deviceID, k.algorithm, k.keyID, k.json); err != nil {
			return false, err
		}
	}
	for _, f := range u.fallbacks {
		if err := storage.UpsertFallbackKey(ctx, tx, u.userID, u.deviceID, f.algorithm, f.keyID, f.json); err != nil {
			return false, err
		}
	}
	return changed, nil
}

// checkDeviceKeys validates an uploaded device_keys object.
func (e *E2EE) checkDeviceKeys(userID, deviceID string, raw json.RawMessage) (*signedObject, error) {
	o, err := parseSigned(raw, "device_keys")
	if err != nil {
		return nil, err
	}
	var f deviceKeyFields
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, mxhttp.BadJSON("device_keys has the wrong shape: %v", err)
	}
	if f.UserID == "" || f.DeviceID == "" || f.Algorithms == nil || f.Keys == nil || o.signatures == nil {
		return nil, mxhttp.BadJSON("device_keys needs user_id, device_id, algorithms, keys and signatures")
	}
	if f.UserID != userID {
		return nil, mxhttp.BadJSON("Provided user_id in device_keys does not match the authenticated user")
	}
	if f.DeviceID != deviceID {
		return nil, mxhttp.BadJSON("Provided device_id in device_keys does not match the authenticated device")
	}
	keyID := "ed25519:" + deviceID
	pub, ok := f.Keys[keyID]
	if !ok {
		return nil, mxhttp.BadJSON("device_keys must hold the device's ed25519 key %s", keyID)
	}
	if err := o.verify(userID, keyID, pub); err != nil {
		return nil, err
	}
	return o, nil
}

// storeDeviceKeys saves verified device keys with the device's own
// signature; it reports whether they changed. New keys invalidate every
// signature of the old ones.
func (e *E2EE) storeDeviceKeys(ctx context.Context, tx *sql.Tx, userID, deviceID string, dk *signedObject) (bool, error) {
	old, err := storage.GetDeviceKeys(ctx, tx, userID, deviceID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return false, err
	}
	if err == nil && dk.sameContent(old) {
		return false, nil
	}
	if err == nil {
		e.log.Info("device identity keys replaced", "user_id", userID, "device_id", deviceID)
	}
	if err := storage.UpsertDeviceKeys(ctx, tx, userID, deviceID, string(dk.canonical)); err != nil {
		return false, err
	}
	if err := storage.DeleteSignaturesOf(ctx, tx, userID, deviceID); err != nil {
		return false, err
	}
	keyID := "ed25519:" + deviceID
	if err := storage.UpsertKeySignature(ctx, tx, storage.KeySignature{
		TargetUserID: userID, TargetKeyID: deviceID, SignerUserID: userID, SignerKeyID: keyID,
		Signature: dk.signatures[userID][keyID],
	}); err != nil {
		return false, err
	}
	// A device signed in by QR cross-signs its keys in this same upload
	// (MSC4108, New device cross-signs itself): the user's self-signing
	// key's signature is kept when it verifies; others are dropped.
	if len(dk.signatures[userID]) < 2 {
		return true, e.RecordDeviceListChange(ctx, tx, userID, deviceID) // only the device's own
	}
	cs, err := storage.CrossSigningKeys(ctx, tx, userID)
	if err != nil {
		return false, err
	}
	if ssk, ok := cs[keyTypeSelfSigning]; ok {
		sskID := "ed25519:" + ssk.KeyID
		if sig, ok := dk.signatures[userID][sskID]; ok && dk.verify(userID, sskID, ssk.KeyID) == nil {
			if err := storage.UpsertKeySignature(ctx, tx, storage.KeySignature{TargetUserID: userID, TargetKeyID: deviceID,
				SignerUserID: userID, SignerKeyID: sskID, Signature: sig}); err != nil {
				return false, err
			}
		}
	}
	return true, e.RecordDeviceListChange(ctx, tx, userID, deviceID)
}

// QueryResponse is the body of a POST /keys/query answer.
type QueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys"`
	UserSigningKeys map[string]json.RawMessage            `json:"user_signing_keys"`
	Failures        map[string]any                        `json:"failures"`
}

// QueryKeys answers POST /keys/query for requester: device keys and
// cross-signing keys, with the signatures requester may see. The
// user-signing key is returned only for requester themself. Remote users
// come from the device lists their servers keep us updated on, or else
// from their servers (POST /user/keys/query); a server that does not
// answer is listed under failures.
func (e *E2EE) QueryKeys(ctx context.Context, requester string, query map[string][]string) (QueryResponse, error) {
	resp := QueryResponse{
		DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, UserSigningKeys: map[string]json.RawMessage{},
		Failures: map[string]any{},
	}
	remote := map[string]map[string][]string{} // server → user → devices
	for userID, deviceIDs := range query {
		if !e.isLocal(userID) {
			if server := serverOf(userID); server != "" {
				if remote[server] == nil {
					remote[server] = map[string][]string{}
				}
				remote[server][userID] = deviceIDs
			}
			continue
		}
		k, err := e.localKeys(ctx, e.db.Read(), userID, requester, deviceIDs)
		if err != nil {
			return resp, err
		}
		k.addTo(&resp, userID, userID == requester)
	}
	if len(remote) > 0 {
		if err := e.queryRemoteKeys(ctx, remote, &resp); err != nil {
			return resp, err
		}
	}
	return resp, nil
}

// userKeys are one user's keys as /keys/query shows them.
type userKeys struct {
	devices                  map[string]json.RawMessage
	master, selfSigning, usk json.RawMessage
}

func (k userKeys) addTo(resp *QueryResponse, userID string, withUserSigning bool) {
	resp.DeviceKeys[userID] = k.devices
	if k.master != nil {
		resp.MasterKeys[userID] = k.master
	}
	if k.selfSigning != nil {
		resp.SelfSigningKeys[userID] = k.selfSigning
	}
	if k.usk != nil && withUserSigning {
		resp.UserSigningKeys[userID] = k.usk
	}
}

// localKeys loads a local user's device keys (those listed, or all) and
// cross-signing keys with the signatures viewer may see.
func (e *E2EE) localKeys(ctx context.Context, q storage.Reader, userID, viewer string, deviceIDs []string) (userKeys, error) {
	sigsOf, err := visibleSignatures(ctx, q, userID, viewer)
	if err != nil {
		return userKeys{}, err
	}
	out, err := localCrossSigningKeys(ctx, q, userID, sigsOf)
	if err != nil {
		return out, err
	}
	out.devices = map[string]json.RawMessage{}
	devs, err := storage.DeviceKeysOfUser(ctx, q, userID, deviceIDs)
	if err != nil {
		return out, err
	}
	for _, d := range devs {
		unsigned := map[string]any{}
		if d.DisplayName != "" {
			unsigned["device_display_name"] = d.DisplayName
		}
		out.devices[d.DeviceID] = withSignatures(d.KeyJSON, sigsOf(d.DeviceID), unsigned)
	}
	return out, nil
}

// signaturesOf gives the signatures of one key (a device ID or a
// cross-signing public key) by signer user and key.
type signaturesOf func(keyID string) map[string]map[string]string

// visibleSignatures loads the signatures of userID's keys viewer may see.
func visibleSignatures(ctx context.Context, q storage.Reader, userID, viewer string) (signaturesOf, error) {
	sigs, err := storage.VisibleSignatures(ctx, q, userID, viewer)
	if err != nil {
		return nil, err
	}
	return func(keyID string) map[string]map[string]string {
		m := map[string]map[string]string{}
		for _, s := range sigs {
			if s.TargetKeyID == keyID {
				if m[s.SignerUserID] == nil {
					m[s.SignerUserID] = map[string]string{}
				}
				m[s.SignerUserID][s.SignerKeyID] = s.Signature
			}
		}
		return m
	}, nil
}

// localCrossSigningKeys loads a local user's cross-signing keys with the
// given signatures.
func localCrossSigningKeys(ctx context.Context, q storage.Reader, userID string, sigsOf signaturesOf) (userKeys, error) {
	var out userKeys
	cs, err := storage.CrossSigningKeys(ctx, q, userID)
	if err != nil {
		return out, err
	}
	if k, ok := cs[keyTypeMaster]; ok {
		out.master = withSignatures(k.KeyJSON, sigsOf(k.KeyID), nil)
	}
	if k, ok := cs[keyTypeSelfSigning]; ok {
		out.selfSigning = withSignatures(k.KeyJSON, sigsOf(k.KeyID), nil)
	}
	if k, ok := cs[keyTypeUserSigning]; ok {
		out.usk = withSignatures(k.KeyJSON, sigsOf(k.KeyID), nil)
	}
	return out, nil
}

// ClaimResponse is the body of a POST /keys/claim answer.
type ClaimResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
	Failures    map[string]any                                   `json:"failures"`
}

// ClaimKeys hands out one key per requested device and algorithm: the
// oldest one-time key, deleted as it is handed out, or when none is left
// the fallback key, marked used. Unknown users and devices, and devices
// with no key, are left out of the answer. Keys of remote users are
// claimed from their servers (POST /user/keys/claim); a server that does
// not answer is listed under failures.
func (e *E2EE) ClaimKeys(ctx context.Context, claims map[string]map[string]string) (ClaimResponse, error) {
	resp := ClaimResponse{OneTimeKeys: map[string]map[string]map[string]json.RawMessage{}, Failures: map[string]any{}}
	local := map[string]map[string]string{}
	remote := map[string]map[string]map[string]string{} // server → user → device → algorithm
	for userID, devices := range claims {
		if e.isLocal(userID) {
			local[userID] = devices
		} else if server := serverOf(userID); server != "" {
			if remote[server] == nil {
				remote[server] = map[string]map[string]string{}
			}
			remote[server][userID] = devices
		}
	}
	claimed, err := e.ClaimLocalKeys(ctx, local)
	if err != nil {
		return ClaimResponse{}, err
	}
	maps.Copy(resp.OneTimeKeys, claimed)
	if len(remote) > 0 {
		e.claimRemoteKeys(ctx, remote, &resp)
	}
	return resp, nil
}

// ClaimLocalKeys claims keys of local users only (remote users in claims
// are ignored); federation's POST /user/keys/claim answers with it.
func (e *E2EE) ClaimLocalKeys(ctx context.Context, claims map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	out := map[string]map[string]map[string]json.RawMessage{}
	err := e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		for userID, devices := range claims {
			if !e.isLocal(userID) {
				continue
			}
			for deviceID, algorithm := range devices {
				keyID, js, ok, err := storage.ClaimOneTimeKey(ctx, tx, userID, deviceID, algorithm)
				if err == nil && !ok {
					keyID, js, ok, err = storage.ClaimFallbackKey(ctx, tx, userID, deviceID, algorithm)
				}
				if err != nil {
					return err
				}
				if !ok {
					continue
				}
				if out[userID] == nil {
					out[userID] = map[string]map[string]json.RawMessage{}
				}
				out[userID][deviceID] = map[string]json.RawMessage{algorithm + ":" + keyID: json.RawMessage(js)}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claiming keys: %w", err)
	}
	return out, nil
}

// KeyChanges answers GET /keys/changes: the users sharing a room with
// userID (and userID) whose devices changed between two sync tokens.
func (e *E2EE) KeyChanges(ctx context.Context, userID, from, to string) (changed, left []string, err error) {
	fromPos, err := e.TokenPosition(from)
	if err != nil {
		return nil, nil, mxhttp.InvalidParam("Invalid from token: %v", err)
	}
	toPos, err := e.TokenPosition(to)
	if err != nil {
		return nil, nil, mxhttp.InvalidParam("Invalid to token: %v", err)
	}
	return e.DeviceListChangesSince(ctx, userID, fromPos, toPos)
}
