package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// End-to-end encryption keys: device keys, one-time and fallback keys,
// cross-signing keys and signatures, and the device-list stream.

// Advisory lock keys for streams whose positions readers rely on being
// visible in order (see LockEventStream).
const (
	lockToDeviceStream   = 7460120
	lockDeviceListStream = 7460121
)

// lockStream serialises inserts into one stream on PostgreSQL, so a reader
// that sees position N also sees every position below it. SQLite has one
// writer and needs nothing.
func (db *DB) lockStream(ctx context.Context, tx *sql.Tx, key int64) error {
	if db.dialect != Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", key); err != nil {
		return fmt.Errorf("locking stream: %w", err)
	}
	return nil
}

// DeviceKeys is one device's uploaded identity keys.
type DeviceKeys struct {
	DeviceID    string
	KeyJSON     string // without signatures: they are in key_signatures
	DisplayName string
}

// GetDeviceKeys returns a device's identity keys, ErrNotFound if none.
func GetDeviceKeys(ctx context.Context, q Reader, userID, deviceID string) (string, error) {
	var js string
	err := q.QueryRowContext(ctx, `SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&js)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("loading device keys: %w", err)
	}
	return js, nil
}

// UpsertDeviceKeys stores (or replaces) a device's identity keys.
func UpsertDeviceKeys(ctx context.Context, tx *sql.Tx, userID, deviceID, keyJSON string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json`, userID, deviceID, keyJSON)
	if err != nil {
		return fmt.Errorf("storing device keys: %w", err)
	}
	return nil
}

// DeviceKeysOfUser lists the identity keys of a user's devices, all of them
// when deviceIDs is empty.
func DeviceKeysOfUser(ctx context.Context, q Reader, userID string, deviceIDs []string) ([]DeviceKeys, error) {
	query := `SELECT k.device_id, k.key_json, d.display_name FROM device_keys k
		LEFT JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id
		WHERE k.user_id = $1`
	args := []any{userID}
	if len(deviceIDs) > 0 {
		query += ` AND k.device_id IN (` + placeholders(2, len(deviceIDs)) + `)`
		for _, d := range deviceIDs {
			args = append(args, d)
		}
	}
	return queryList(ctx, q, "listing device keys", query+` ORDER BY k.device_id`, func(rows *sql.Rows, k *DeviceKeys) error {
		var name sql.NullString
		if err := rows.Scan(&k.DeviceID, &k.KeyJSON, &name); err != nil {
			return err
		}
		k.DisplayName = name.String
		return nil
	}, args...)
}

// DeviceIDs lists a user's devices.
func DeviceIDs(ctx context.Context, q Reader, userID string) ([]string, error) {
	return orEmpty(queryColumn[string](ctx, q, "listing devices", `SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id`, userID))
}

// DeleteDeviceE2EE removes everything end-to-end encryption keeps for a
// device: its keys, the signatures of them and its to-device inbox.
func DeleteDeviceE2EE(ctx context.Context, tx *sql.Tx, userID, deviceID string) error {
	for _, q := range []string{
		`DELETE FROM device_keys WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM fallback_keys WHERE user_id = $1 AND device_id = $2`,
		`DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2`,
		`DELETE FROM to_device_inbox WHERE user_id = $1 AND device_id = $2`,
	} {
		if _, err := tx.ExecContext(ctx, q, userID, deviceID); err != nil {
			return fmt.Errorf("deleting device keys: %w", err)
		}
	}
	return nil
}

// GetOneTimeKey returns an unclaimed one-time key, ErrNotFound if none.
func GetOneTimeKey(ctx context.Context, q Reader, userID, deviceID, algorithm, keyID string) (string, error) {
	var js string
	err := q.QueryRowContext(ctx, `SELECT key_json FROM one_time_keys
		WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`, userID, deviceID, algorithm, keyID).Scan(&js)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("loading one-time key: %w", err)
	}
	return js, nil
}

// InsertOneTimeKey stores a one-time key; ErrConflict if its ID exists.
func InsertOneTimeKey(ctx context.Context, tx *sql.Tx, userID, deviceID, algorithm, keyID, keyJSON string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json)
		VALUES ($1, $2, $3, $4, $5)`, userID, deviceID, algorithm, keyID, keyJSON)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("storing one-time key: %w", err)
	}
	return nil
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys per algorithm.
func OneTimeKeyCounts(ctx context.Context, q Reader, userID, deviceID string) (map[string]int, error) {
	return queryMap[string, int](ctx, q, "counting one-time keys", `SELECT algorithm, COUNT(*) FROM one_time_keys
		WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`, userID, deviceID)
}

// ClaimOneTimeKey removes and returns the oldest one-time key of a device
// for an algorithm; ok is false when there is none. The row is deleted with
// RETURNING, so of two concurrent claims for one key exactly one gets it:
// the other deletes nothing and tries the next key.
func ClaimOneTimeKey(ctx context.Context, tx *sql.Tx, userID, deviceID, algorithm string) (keyID, keyJSON string, ok bool, err error) {
	for range 1000 {
		var id int64
		err := tx.QueryRowContext(ctx, `SELECT id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
			ORDER BY id LIMIT 1`, userID, deviceID, algorithm).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return "", "", false, nil
		}
		if err != nil {
			return "", "", false, fmt.Errorf("finding one-time key: %w", err)
		}
		err = tx.QueryRowContext(ctx, `DELETE FROM one_time_keys WHERE id = $1 RETURNING key_id, key_json`, id).Scan(&keyID, &keyJSON)
		if errors.Is(err, sql.ErrNoRows) {
			continue // claimed by a concurrent transaction
		}
		if err != nil {
			return "", "", false, fmt.Errorf("claiming one-time key: %w", err)
		}
		return keyID, keyJSON, true, nil
	}
	return "", "", false, fmt.Errorf("claiming one-time key: too much contention")
}

// UpsertFallbackKey sets a device's fallback key for an algorithm. Uploading
// the same key again keeps its used flag; a new key starts unused.
func UpsertFallbackKey(ctx context.Context, tx *sql.Tx, userID, deviceID, algorithm, keyID, keyJSON string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
		VALUES ($1, $2, $3, $4, $5, FALSE)
		ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json,
			used = CASE WHEN fallback_keys.key_id = excluded.key_id AND fallback_keys.key_json = excluded.key_json
				THEN fallback_keys.used ELSE FALSE END`, userID, deviceID, algorithm, keyID, keyJSON)
	if err != nil {
		return fmt.Errorf("storing fallback key: %w", err)
	}
	return nil
}

// ClaimFallbackKey returns a device's fallback key for an algorithm and
// marks it used; ok is false when there is none.
func ClaimFallbackKey(ctx context.Context, tx *sql.Tx, userID, deviceID, algorithm string) (keyID, keyJSON string, ok bool, err error) {
	err = tx.QueryRowContext(ctx, `UPDATE fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
		RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&keyID, &keyJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", false, nil
	}
	if err != nil {
		return "", "", false, fmt.Errorf("claiming fallback key: %w", err)
	}
	return keyID, keyJSON, true, nil
}

// UnusedFallbackKeyTypes lists the algorithms for which a device has a
// fallback key not yet handed out.
func UnusedFallbackKeyTypes(ctx context.Context, q Reader, userID, deviceID string) ([]string, error) {
	return orEmpty(queryColumn[string](ctx, q, "listing fallback keys", `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used
		ORDER BY algorithm`, userID, deviceID))
}

// DeviceKeyCounts is OneTimeKeyCounts and UnusedFallbackKeyTypes in one
// query (every sync response carries both).
func DeviceKeyCounts(ctx context.Context, q Reader, userID, deviceID string) (map[string]int, []string, error) {
	counts, fallback := map[string]int{}, []string{}
	err := queryEach(ctx, q, "counting device keys", `SELECT 0, algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm
		UNION ALL SELECT 1, algorithm, 0 FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used
		ORDER BY 1, 2`, []any{userID, deviceID}, func(rows *sql.Rows) error {
		var kind, n int
		var alg string
		if err := rows.Scan(&kind, &alg, &n); err != nil {
			return err
		}
		if kind == 0 {
			counts[alg] = n
		} else {
			fallback = append(fallback, alg)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	return counts, fallback, nil
}

// CrossSigningKey is one of a user's cross-signing keys.
type CrossSigningKey struct {
	KeyID   string // the unpadded base64 public key
	KeyJSON string // without signatures
}

// CrossSigningKeys returns a user's cross-signing keys by type (master,
// self_signing, user_signing).
func CrossSigningKeys(ctx context.Context, q Reader, userID string) (map[string]CrossSigningKey, error) {
	out := map[string]CrossSigningKey{}
	err := queryEach(ctx, q, "loading cross-signing keys", `SELECT key_type, key_id, key_json FROM cross_signing_keys WHERE user_id = $1`, []any{userID},
		func(rows *sql.Rows) error {
			var typ string
			var k CrossSigningKey
			if err := rows.Scan(&typ, &k.KeyID, &k.KeyJSON); err != nil {
				return err
			}
			out[typ] = k
			return nil
		})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// UpsertCrossSigningKey sets one of a user's cross-signing keys.
func UpsertCrossSigningKey(ctx context.Context, tx *sql.Tx, userID, keyType string, k CrossSigningKey) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, key_id, key_json) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, key_type) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json`,
		userID, keyType, k.KeyID, k.KeyJSON)
	if err != nil {
		return fmt.Errorf("storing cross-signing key: %w", err)
	}
	return nil
}

// DeleteCrossSigningKey removes one of a user's cross-signing keys.
func DeleteCrossSigningKey(ctx context.Context, tx *sql.Tx, userID, keyType string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM cross_signing_keys WHERE user_id = $1 AND key_type = $2`, userID, keyType)
	return err
}

// KeySignature is a signature of a device key or cross-signing key.
type KeySignature struct {
	TargetUserID string
	TargetKeyID  string // device ID or cross-signing public key
	SignerUserID string
	SignerKeyID  string // "ed25519:<device ID or public key>"
	Signature    string
}

// UpsertKeySignature stores a signature, replacing an earlier one by the
// same key of the same target.
func UpsertKeySignature(ctx context.Context, tx *sql.Tx, s KeySignature) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
		VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id) DO UPDATE SET signature = excluded.signature`,
		s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature)
	if err != nil {
		return fmt.Errorf("storing signature: %w", err)
	}
	return nil
}

// DeleteSignaturesOf removes every signature of one key.
func DeleteSignaturesOf(ctx context.Context, tx *sql.Tx, targetUserID, targetKeyID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id = $2`, targetUserID, targetKeyID)
	return err
}

// VisibleSignatures lists the signatures of a user's keys that viewer may
// see (end-to-end encryption, Cross-signing): those made by the user's own
// keys and devices, and those made by the viewer. Signatures by third
// parties' user-signing keys stay private to their makers.
func VisibleSignatures(ctx context.Context, q Reader, targetUserID, viewer string) ([]KeySignature, error) {
	return queryList(ctx, q, "loading signatures", `SELECT target_key_id, signer_user_id, signer_key_id, signature FROM key_signatures
		WHERE target_user_id = $1 AND (signer_user_id = $1 OR signer_user_id = $2)
		ORDER BY target_key_id, signer_user_id, signer_key_id`, func(rows *sql.Rows, s *KeySignature) error {
		s.TargetUserID = targetUserID
		return rows.Scan(&s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature)
	}, targetUserID, viewer)
}

// AppendDeviceListChange records that a user's devices or keys changed and
// returns the new device-list stream position.
func (db *DB) AppendDeviceListChange(ctx context.Context, tx *sql.Tx, userID string) (int64, error) {
	if err := db.lockStream(ctx, tx, lockDeviceListStream); err != nil {
		return 0, err
	}
	var pos int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO device_list_stream (user_id) VALUES ($1) RETURNING position`, userID).Scan(&pos); err != nil {
		return 0, fmt.Errorf("appending to device-list stream: %w", err)
	}
	return pos, setStreamHead(ctx, tx, "device_lists", pos)
}

// MaxDeviceListPos is the newest committed device-list stream position.
func MaxDeviceListPos(ctx context.Context, q Reader) (int64, error) {
	return streamHead(ctx, q, "device_lists")
}

func setStreamHead(ctx context.Context, tx *sql.Tx, stream string, pos int64) error {
	if _, err := tx.ExecContext(ctx, `UPDATE stream_heads SET position = $1 WHERE stream = $2`, pos, stream); err != nil {
		return fmt.Errorf("advancing %s stream: %w", stream, err)
	}
	return nil
}

func streamHead(ctx context.Context, q Reader, stream string) (int64, error) {
	var pos int64
	if err := q.QueryRowContext(ctx, `SELECT position FROM stream_heads WHERE stream = $1`, stream).Scan(&pos); err != nil {
		return 0, fmt.Errorf("reading %s stream position: %w", stream, err)
	}
	return pos, nil
}

// DeviceListChanges lists the users whose device list changed in positions
// (from, to] and who are userID or share a joined room with userID.
func DeviceListChanges(ctx context.Context, q Reader, userID string, from, to int64) ([]string, error) {
	if from >= to {
		// Nothing in the range: skip the query, whose room-mates subquery
		// SQLite evaluates anyway (most incremental syncs).
		return []string{}, nil
	}
	return orEmpty(queryColumn[string](ctx, q, "listing device-list changes", `SELECT DISTINCT s.user_id FROM device_list_stream s
		WHERE s.position > $1 AND s.position <= $2 AND (s.user_id = $3 OR s.user_id IN (
			SELECT o.state_key FROM current_state me JOIN current_state o ON o.room_id = me.room_id
			WHERE me.type = 'm.room.member' AND me.state_key = $3 AND me.membership = 'join'
				AND o.type = 'm.room.member' AND o.membership = 'join'))
		ORDER BY s.user_id`, from, to, userID))
}

// UsersSharingRoomWith lists the users joined to any room userID is joined
// to, userID included.
func UsersSharingRoomWith(ctx context.Context, q Reader, userID string) ([]string, error) {
	return orEmpty(queryColumn[string](ctx, q, "listing users sharing a room", `SELECT CAST($1 AS TEXT) UNION SELECT o.state_key FROM current_state me JOIN current_state o ON o.room_id = me.room_id
		WHERE me.type = 'm.room.member' AND me.state_key = $1 AND me.membership = 'join'
			AND o.type = 'm.room.member' AND o.membership = 'join'`, userID))
}
