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

func (a *API) deviceRoutes(v3 func(string, string, http.HandlerFunc)) {
	v3("GET", "/devices", a.authed(a.listDevices))
	v3("GET", "/devices/{deviceID}", a.authed(a.getDevice))
	v3("PUT", "/devices/{deviceID}", a.authed(a.putDevice))
	v3("DELETE", "/devices/{deviceID}", a.authed(a.deleteDevice))
	v3("POST", "/delete_devices", a.authed(a.deleteDevices))
}

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
func (a *API) listDevices(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	ds, err := a.db.ListDevices(r.Context(), c.UserID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	out := make([]deviceJSON, len(ds))
	for i, d := range ds {
		out[i] = toDeviceJSON(d)
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"devices": out})
}

// GET /devices/{deviceId}
func (a *API) getDevice(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	d, err := a.db.GetDevice(r.Context(), c.UserID, pathParam(r, "deviceID"))
	if errors.Is(err, storage.ErrNotFound) {
		err = mxhttp.NotFound("No such device")
	}
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, toDeviceJSON(d))
}

// PUT /devices/{deviceId}: only display_name can change. Creating devices
// this way is for application services, which do not exist yet.
func (a *API) putDevice(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
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
	writeEmptyOrError(w, r, err)
}

// DELETE /devices/{deviceId} (UIA)
func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	deviceID := pathParam(r, "deviceID")
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	// An unknown device is reported before authentication, so nobody is
	// asked for a password to delete nothing.
	if _, err := a.db.GetDevice(r.Context(), c.UserID, deviceID); err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			err = mxhttp.NotFound("No such device")
		}
		mxhttp.WriteError(w, r, err)
		return
	}
	a.deleteDevicesWithAuth(w, r, c, "DELETE /devices/"+deviceID, req.Auth, []string{deviceID})
}

// POST /delete_devices (UIA)
func (a *API) deleteDevices(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req struct {
		Devices *[]string       `json:"devices"`
		Auth    json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if req.Devices == nil {
		mxhttp.WriteError(w, r, mxhttp.MissingParam("devices is required"))
		return
	}
	a.deleteDevicesWithAuth(w, r, c, "POST /delete_devices", req.Auth, *req.Devices)
}

func (a *API) deleteDevicesWithAuth(w http.ResponseWriter, r *http.Request, c accounts.Caller, action string, auth json.RawMessage, ids []string) {
	passed, err := a.userInteractiveAuth(r, passwordFlows(action, c.UserID), auth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		if err := passed.consume(r.Context(), tx); err != nil {
			return err
		}
		return a.accounts.DeleteDevices(r.Context(), tx, c.UserID, ids)
	})
	writeEmptyOrError(w, r, err)
}
