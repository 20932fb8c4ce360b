package importdendrite

import (
	"context"
	"database/sql"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/hearth-matrix/hearth/storage"
)

// Dendrite's cross-signing key types.
var crossSigningPurpose = map[int]string{1: "master", 2: "self_signing", 3: "user_signing"}

// importE2EE carries device keys, one-time keys, cross-signing keys and
// signatures, key backups, undelivered to-device messages and the
// device-list positions, so that clients see no key reset.
func (im *importer) importE2EE(ctx context.Context, tx *sql.Tx) error {
	t := im.rep.table("keyserver_device_keys")
	err := im.src.each(ctx, "keyserver_device_keys", `SELECT user_id, device_id, key_json FROM keyserver_device_keys ORDER BY user_id, device_id`, func(rows *sql.Rows) error {
		var user, device, js string
		if err := rows.Scan(&user, &device, &js); err != nil {
			return err
		}
		t.Read++
		if js == "" || !gjson.Valid(js) || !gjson.Get(js, "keys").IsObject() {
			return nil // a device that never uploaded keys
		}
		if gjson.Get(js, "unsigned").Exists() {
			var err error
			if js, err = sjson.Delete(js, "unsigned"); err != nil {
				return err
			}
		}
		t.Written++
		return storage.UpsertDeviceKeys(ctx, tx, user, device, js)
	})
	if err := im.withProgress("keyserver_device_keys", err); err != nil {
		return err
	}
	t = im.rep.table("keyserver_one_time_keys")
	err = im.src.each(ctx, "keyserver_one_time_keys", `SELECT user_id, device_id, key_id, algorithm, key_json FROM keyserver_one_time_keys ORDER BY ts_added_secs, key_id`, func(rows *sql.Rows) error {
		var user, device, keyID, alg, js string
		if err := rows.Scan(&user, &device, &keyID, &alg, &js); err != nil {
			return err
		}
		t.Read++
		t.Written++
		return storage.InsertOneTimeKey(ctx, tx, user, device, alg, keyID, js)
	})
	if err := im.withProgress("keyserver_one_time_keys", err); err != nil {
		return err
	}
	t = im.rep.table("keyserver_cross_signing_keys")
	err = im.src.each(ctx, "keyserver_cross_signing_keys", `SELECT user_id, key_type, key_data FROM keyserver_cross_signing_keys`, func(rows *sql.Rows) error {
		var user string
		var typ int
		var data string
		if err := rows.Scan(&user, &typ, &data); err != nil {
			return err
		}
		t.Read++
		purpose, ok := crossSigningPurpose[typ]
		if !ok {
			im.rep.notCarried("cross-signing key of %s with unknown type %d", user, typ)
			return nil
		}
		// Dendrite keeps the public key alone (base64); the key object is
		// rebuilt (its signatures are rows of keyserver_cross_signing_sigs).
		var key spec.Base64Bytes
		if err := key.Decode(data); err != nil {
			im.rep.notCarried("cross-signing key of %s: %v", user, err)
			return nil
		}
		pub := key.Encode()
		keyJSON, err := json.Marshal(map[string]any{"user_id": user, "usage": []string{purpose}, "keys": map[string]string{"ed25519:" + pub: pub}})
		if err != nil {
			return err
		}
		t.Written++
		return storage.UpsertCrossSigningKey(ctx, tx, user, purpose, storage.CrossSigningKey{KeyID: pub, KeyJSON: string(keyJSON)})
	})
	if err := im.withProgress("keyserver_cross_signing_keys", err); err != nil {
		return err
	}
	t = im.rep.table("keyserver_cross_signing_sigs")
	err = im.src.each(ctx, "keyserver_cross_signing_sigs", `SELECT origin_user_id, origin_key_id, target_user_id, target_key_id, signature FROM keyserver_cross_signing_sigs`, func(rows *sql.Rows) error {
		var s storage.KeySignature
		var sig string
		if err := rows.Scan(&s.SignerUserID, &s.SignerKeyID, &s.TargetUserID, &s.TargetKeyID, &sig); err != nil {
			return err
		}
		t.Read++
		var b spec.Base64Bytes
		if err := b.Decode(sig); err != nil {
			im.rep.notCarried("signature of %s's key %s: %v", s.TargetUserID, s.TargetKeyID, err)
			return nil
		}
		s.Signature = b.Encode()
		// Dendrite names a cross-signing key target by its key ID
		// ("ed25519:<public key>"), Hearth by the public key; a device
		// target is its device ID in both.
		s.TargetKeyID = strings.TrimPrefix(s.TargetKeyID, "ed25519:")
		t.Written++
		return storage.UpsertKeySignature(ctx, tx, s)
	})
	if err := im.withProgress("keyserver_cross_signing_sigs", err); err != nil {
		return err
	}
	t = im.rep.table("keyserver_key_changes")
	err = im.src.each(ctx, "keyserver_key_changes", `SELECT change_id, user_id FROM keyserver_key_changes ORDER BY change_id`, func(rows *sql.Rows) error {
		var pos int64
		var user string
		if err := rows.Scan(&pos, &user); err != nil {
			return err
		}
		t.Read++
		t.Written++
		return storage.ImportDeviceListChange(ctx, tx, user, pos)
	})
	if err := im.withProgress("keyserver_key_changes", err); err != nil {
		return err
	}
	t = im.rep.table("userapi_key_backup_versions")
	err = im.src.each(ctx, "userapi_key_backup_versions", `SELECT user_id, version, algorithm, auth_data, etag, deleted FROM userapi_key_backup_versions ORDER BY version`, func(rows *sql.Rows) error {
		var user, etag string
		var v storage.BackupVersion
		var deleted int64
		if err := rows.Scan(&user, &v.Version, &v.Algorithm, &v.AuthData, &etag, &deleted); err != nil {
			return err
		}
		t.Read++
		v.Etag, _ = strconv.ParseInt(etag, 10, 64)
		v.Deleted = deleted != 0
		t.Written++
		return storage.ImportBackupVersion(ctx, tx, user, v)
	})
	if err := im.withProgress("userapi_key_backup_versions", err); err != nil {
		return err
	}
	t = im.rep.table("userapi_key_backups")
	err = im.src.each(ctx, "userapi_key_backups", `SELECT user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data FROM userapi_key_backups`, func(rows *sql.Rows) error {
		var user, version string
		var s storage.BackupSession
		if err := rows.Scan(&user, &version, &s.RoomID, &s.SessionID, &s.FirstMessageIndex, &s.ForwardedCount, &s.IsVerified, &s.SessionData); err != nil {
			return err
		}
		t.Read++
		v, err := strconv.ParseInt(version, 10, 64)
		if err != nil {
			im.rep.notCarried("key backup session %s of %s: version %q is not a number", s.SessionID, user, version)
			return nil
		}
		t.Written++
		return storage.UpsertBackupSession(ctx, tx, user, v, s)
	})
	if err := im.withProgress("userapi_key_backups", err); err != nil {
		return err
	}
	t = im.rep.table("syncapi_send_to_device")
	err = im.src.each(ctx, "syncapi_send_to_device", `SELECT id, user_id, device_id, content FROM syncapi_send_to_device ORDER BY id`, func(rows *sql.Rows) error {
		var user, device, content string
		var m storage.ToDeviceMessage
		if err := rows.Scan(&m.Position, &user, &device, &content); err != nil {
			return err
		}
		t.Read++
		m.Sender, m.Type, m.Content = gjson.Get(content, "sender").String(), gjson.Get(content, "type").String(), gjson.Get(content, "content").Raw
		if m.Type == "" || m.Content == "" {
			im.rep.notCarried("to-device message %d for %s/%s: no type or content", m.Position, user, device)
			return nil
		}
		t.Written++
		return storage.ImportToDevice(ctx, tx, user, device, m)
	})
	return im.withProgress("syncapi_send_to_device", err)
}
