package clientapi

import (
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Device management (client-server API, modules/device_management). A user
// sees and changes only their own devices: another user's device ID is
// simply not found.

type deviceJSON struct {
	DeviceID    string  `json:"device_id"`
	DisplayName *string `json:"display_name,omitempty"`
	LastSeenIP  *string `json:"last_seen_ip,omitempty"`
	LastSeenTS  *int64  `json:"last_seen_ts,omitempty"`
}

func toDeviceJSON(d storage.Device) deviceJSON {
	return deviceJSON{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// GET /devices
func (a *API) listDevices(r *http.Request, c accounts.Caller) (any, error) {
	ds, err := a.db.ListDevices(r.Context(), c.UserID)
	if err != nil {
		return nil, err
	}
	out := make([]deviceJSON, len(ds))
	for i, d := range ds {
		out[i] = toDeviceJSON(d)
	}
	return map[string]any{"devices": out}, nil
}

// GET /devices/{deviceId}
func (a *API) getDevice(r *http.Request, c accounts.Caller) (any, error) {
	d, err := a.db.GetDevice(r.Context(), c.UserID, pathParam(r, "deviceID"))
	if errors.Is(err, storage.ErrNotFound) {
		err = mxhttp.NotFound("No such device")
	}
	if err != nil {
		return nil, err
	}
	return toDeviceJSON(d), nil
}

// PUT /devices/{deviceId}: only display_name can change. Creating devices
// this way is for application services, which do not exist yet.
func (a *API) putDevice(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	deviceID := pathParam(r, "deviceID")
	err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		if req.DisplayName == nil {
			ok, err := storage.DeviceExists(r.Context(), tx, c.UserID, deviceID)
			if err == nil && !ok {
				err = storage.ErrNotFound
			}
			return err
		}
		if err := storage.SetDeviceDisplayName(r.Context(), tx, c.UserID, deviceID, req.DisplayName); err != nil {
			return err
		}
		// The display name is part of the device list others see.
		return a.e2ee.RecordDeviceListChange(r.Context(), tx, c.UserID, deviceID)
	})
	if errors.Is(err, storage.ErrNotFound) {
		err = mxhttp.NotFound("No such device")
	}
	if err == nil && req.DisplayName != nil {
		a.e2ee.NotifyDeviceListChange(r.Context(), c.UserID)
	}
	return writeEmptyOrError(r, err)
}

// DELETE /devices/{deviceId} (UIA)
func (a *API) deleteDevice(r *http.Request, c accounts.Caller) (any, error) {
	deviceID := pathParam(r, "deviceID")
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	// An unknown device is reported before authentication, so nobody is
	// asked for a password to delete nothing.
	if _, err := a.db.GetDevice(r.Context(), c.UserID, deviceID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			err = mxhttp.NotFound("No such device")
		}
		return nil, err
	}
	return a.deleteDevicesWithAuth(r, c, "DELETE /devices/"+deviceID, req.Auth, []string{deviceID})
}

// POST /delete_devices (UIA)
func (a *API) deleteDevices(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		Devices *[]string       `json:"devices"`
		Auth    json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, mxhttp.MissingParam("devices is required")
	}
	return a.deleteDevicesWithAuth(r, c, "POST /delete_devices", req.Auth, *req.Devices)
}

func (a *API) deleteDevicesWithAuth(r *http.Request, c accounts.Caller, action string, auth json.RawMessage, ids []string) (any, error) {
	passed, err := a.userInteractiveAuth(r, passwordFlows(action, c.UserID), auth)
	if err != nil {
		return nil, err
	}
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		if err := passed.consume(r.Context(), tx); err != nil {
			return err
		}
		return a.accounts.DeleteDevices(r.Context(), tx, c.UserID, ids)
	})
	return writeEmptyOrError(r, err)
}
