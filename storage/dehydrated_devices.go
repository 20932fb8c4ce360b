package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// DehydratedDevice is a user's dehydrated device (MSC3814).
type DehydratedDevice struct {
	DeviceID   string
	DeviceData []byte // a JSON object, as the client uploaded it
}

// GetDehydratedDevice loads the user's dehydrated device; ErrNotFound when
// there is none.
func GetDehydratedDevice(ctx context.Context, q Reader, userID string) (DehydratedDevice, error) {
	var d DehydratedDevice
	var data string
	err := q.QueryRowContext(ctx, `SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1`, userID).Scan(&d.DeviceID, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("loading dehydrated device: %w", err)
	}
	d.DeviceData = []byte(data)
	return d, nil
}

// PutDehydratedDevice marks deviceID as the user's dehydrated device.
func PutDehydratedDevice(ctx context.Context, tx *sql.Tx, userID string, d DehydratedDevice) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data`,
		userID, d.DeviceID, string(d.DeviceData))
	if err != nil {
		return fmt.Errorf("storing dehydrated device: %w", err)
	}
	return nil
}

// ForgetDehydratedDevices drops the mark of the user's dehydrated device if
// it is one of deviceIDs (those devices are being deleted).
func ForgetDehydratedDevices(ctx context.Context, tx *sql.Tx, userID string, deviceIDs []string) error {
	for _, id := range deviceIDs {
		if _, err := tx.ExecContext(ctx, `DELETE FROM dehydrated_devices WHERE user_id = $1 AND device_id = $2`, userID, id); err != nil {
			return fmt.Errorf("forgetting dehydrated device: %w", err)
		}
	}
	return nil
}
