package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Remote users' device lists and cross-signing keys (server-server API,
// Device Management), kept current by their servers' EDUs.

// RemoteDevice is one device of a remote user.
type RemoteDevice struct {
	DeviceID    string
	DisplayName string
	KeyJSON     string // as received, signatures included; "" when the device has no keys
}

// RemoteDeviceListStreamID returns the stream_id of the last update applied
// to a remote user's device list; ok is false when we keep no list for them.
func RemoteDeviceListStreamID(ctx context.Context, q Reader, userID string) (streamID int64, ok bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT stream_id FROM remote_device_lists WHERE user_id = $1`, userID).Scan(&streamID)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("loading remote device list: %w", err)
	}
	return streamID, true, nil
}

// SetRemoteDeviceListStreamID records the stream_id a remote user's list is at.
func SetRemoteDeviceListStreamID(ctx context.Context, tx *sql.Tx, userID string, streamID int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO remote_device_lists (user_id, stream_id) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = excluded.stream_id`, userID, streamID)
	if err != nil {
		return fmt.Errorf("storing remote device list: %w", err)
	}
	return nil
}

// UpsertRemoteDevice stores (or replaces) one device of a remote user.
func UpsertRemoteDevice(ctx context.Context, tx *sql.Tx, userID string, d RemoteDevice) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO remote_device_keys (user_id, device_id, display_name, key_json) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, device_id) DO UPDATE SET display_name = excluded.display_name, key_json = excluded.key_json`,
		userID, d.DeviceID, d.DisplayName, d.KeyJSON)
	if err != nil {
		return fmt.Errorf("storing remote device: %w", err)
	}
	return nil
}

// DeleteRemoteDevice removes one device of a remote user.
func DeleteRemoteDevice(ctx context.Context, tx *sql.Tx, userID, deviceID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM remote_device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	if err != nil {
		return fmt.Errorf("deleting remote device: %w", err)
	}
	return nil
}

// RemoteDevicesWithKeys lists a remote user's devices that have keys, all
// of them when deviceIDs is empty.
func RemoteDevicesWithKeys(ctx context.Context, q Reader, userID string, deviceIDs []string) ([]RemoteDevice, error) {
	query := `SELECT device_id, display_name, key_json FROM remote_device_keys WHERE user_id = $1 AND key_json <> ''`
	args := []any{userID}
	if len(deviceIDs) > 0 {
		query += ` AND device_id IN (` + placeholders(2, len(deviceIDs)) + `)`
		for _, d := range deviceIDs {
			args = append(args, d)
		}
	}
	return queryList(ctx, q, "listing remote devices", query+` ORDER BY device_id`, func(rows *sql.Rows, d *RemoteDevice) error {
		return rows.Scan(&d.DeviceID, &d.DisplayName, &d.KeyJSON)
	}, args...)
}

// UpsertRemoteCrossSigningKey stores a remote user's master or
// self-signing key.
func UpsertRemoteCrossSigningKey(ctx context.Context, tx *sql.Tx, userID, keyType, keyJSON string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO remote_cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json`, userID, keyType, keyJSON)
	if err != nil {
		return fmt.Errorf("storing remote cross-signing key: %w", err)
	}
	return nil
}

// RemoteCrossSigningKeys returns a remote user's stored cross-signing keys
// by key type.
func RemoteCrossSigningKeys(ctx context.Context, q Reader, userID string) (map[string]string, error) {
	return queryMap[string, string](ctx, q, "loading remote cross-signing keys", `SELECT key_type, key_json FROM remote_cross_signing_keys WHERE user_id = $1`, userID)
}

// ForgetRemoteDeviceList drops everything kept about a remote user's
// devices, or only the device rows when keepCrossSigning.
func ForgetRemoteDeviceList(ctx context.Context, tx *sql.Tx, userID string, keepCrossSigning bool) error {
	qs := []string{`DELETE FROM remote_device_lists WHERE user_id = $1`, `DELETE FROM remote_device_keys WHERE user_id = $1`}
	if !keepCrossSigning {
		qs = append(qs, `DELETE FROM remote_cross_signing_keys WHERE user_id = $1`)
	}
	for _, q := range qs {
		if _, err := tx.ExecContext(ctx, q, userID); err != nil {
			return fmt.Errorf("forgetting remote device list: %w", err)
		}
	}
	return nil
}

// LastDeviceListPosition is the newest device-list stream position of a
// user, 0 if none: a local user's stream_id for other servers.
func LastDeviceListPosition(ctx context.Context, q Reader, userID string) (int64, error) {
	var pos sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(position) FROM device_list_stream WHERE user_id = $1`, userID).Scan(&pos); err != nil {
		return 0, fmt.Errorf("loading device-list position: %w", err)
	}
	return pos.Int64, nil
}

// MembershipChange is one m.room.member event.
type MembershipChange struct {
	RoomID, UserID, Membership string
}

// MembershipChangesBetween lists the membership events with stream
// positions in (from, to] in the rooms userID is or was a member of,
// oldest first.
func MembershipChangesBetween(ctx context.Context, q Reader, userID string, from, to int64) ([]MembershipChange, error) {
	if to <= from {
		return nil, nil
	}
	return queryList(ctx, q, "listing membership changes", `SELECT e.room_id, e.state_key, e.membership FROM events e
		WHERE e.type = 'm.room.member' AND e.stream_pos > $1 AND e.stream_pos <= $2
			AND NOT e.outlier AND NOT e.rejected AND NOT e.soft_failed AND e.membership IS NOT NULL
			AND e.room_id IN (SELECT room_id FROM current_state WHERE type = 'm.room.member' AND state_key = $3)
		ORDER BY e.stream_pos`, func(rows *sql.Rows, c *MembershipChange) error {
		return rows.Scan(&c.RoomID, &c.UserID, &c.Membership)
	}, from, to, userID)
}

// DeviceNames maps each of a local user's devices to its display name
// ("" when unnamed).
func DeviceNames(ctx context.Context, q Reader, userID string) (map[string]string, error) {
	return queryMap[string, string](ctx, q, "listing devices", `SELECT device_id, COALESCE(display_name, '') FROM devices WHERE user_id = $1`, userID)
}
