package clientapi

import (
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Device management (client-server API, modules/device_management). A user
// sees and changes only their own devices: another user's device ID is
// simply not found.

// maxDeviceIDLen bounds the device IDs an application service may choose.
const maxDeviceIDLen = 255

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

// PUT /devices/{deviceId}: only display_name can change. An application
// service may also create a device of one of its users this way (201;
// Application Service API, Device management, v1.17): the device has no
// access token, the service acts as it with ?device_id=. A user's unknown
// device is 404.
func (a *API) putDevice(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	deviceID := pathParam(r, "deviceID")
	created := false
	err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		ok, err := storage.DeviceExists(r.Context(), tx, c.UserID, deviceID)
		if err != nil {
			return err
		}
		if !ok {
			if c.AppService == nil {
				return storage.ErrNotFound
			}
			if deviceID == "" || len(deviceID) > maxDeviceIDLen {
				return mxhttp.InvalidParam("A device ID is 1 to %d bytes", maxDeviceIDLen)
			}
			name := ""
			if req.DisplayName != nil {
				name = *req.DisplayName
			}
			created = true
			// The added-device hook records the device list change.
			return a.accounts.AddDevice(r.Context(), tx, c.UserID, deviceID, name, time.Now())
		}
		if req.DisplayName == nil {
			return nil
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
	if err != nil {
		return nil, err
	}
	if created {
		return mxhttp.Stream(func(w http.ResponseWriter, _ *http.Request) {
			mxhttp.WriteJSON(w, http.StatusCreated, struct{}{})
		}), nil
	}
	if req.DisplayName != nil {
		a.e2ee.NotifyDeviceListChange(r.Context(), c.UserID)
	}
	return struct{}{}, nil
}

// DELETE /devices/{deviceId} (UIA, except for an application service)
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

// POST /delete_devices (UIA, except for an application service)
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

// deleteDevicesWithAuth deletes devices once the user has passed UIA. An
// application service deletes its users' devices without UIA
// (Application Service API, Device management, v1.17): its users have no
// password to give.
func (a *API) deleteDevicesWithAuth(r *http.Request, c accounts.Caller, action string, auth json.RawMessage, ids []string) (any, error) {
	var passed uiaPassed
	if c.AppService == nil {
		var err error
		if passed, err = a.userInteractiveAuth(r, passwordFlows(action, c.UserID), auth); err != nil {
			return nil, err
		}
	}
	err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		if c.AppService == nil {
			if err := passed.consume(r.Context(), tx); err != nil {
				return err
			}
		}
		return a.accounts.DeleteDevices(r.Context(), tx, c.UserID, ids)
	})
	return writeEmptyOrError(r, err)
}
