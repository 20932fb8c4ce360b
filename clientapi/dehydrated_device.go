package clientapi

import (
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Dehydrated devices (MSC3814, unstable prefix as Element calls it): a
// device that lives on the server while all of a user's real devices are
// off, so that room keys sent to it wait there; a new device rehydrates it
// and reads its to-device messages. The device is an ordinary device row
// with keys and a to-device inbox, but no access token; at most one per
// user (storage/dehydrated_devices.go).

const msc3814Prefix = "/_matrix/client/unstable/org.matrix.msc3814.v1"

// dehydratedEventsBatch is how many to-device messages one call of
// /dehydrated_device/{deviceId}/events returns.
const dehydratedEventsBatch = 100

type dehydratedDeviceUpload struct {
	e2ee.UploadRequest
	DeviceID                 string          `json:"device_id"`
	DeviceData               json.RawMessage `json:"device_data"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
}

// PUT /dehydrated_device: replaces the user's dehydrated device with a new
// one, its device and one-time keys uploaded in the same request, all in
// one transaction.
func (a *API) putDehydratedDevice(r *http.Request, c accounts.Caller) (any, error) {
	var req dehydratedDeviceUpload
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	switch {
	case req.DeviceID == "":
		return nil, mxhttp.MissingParam("device_id is required")
	case len(req.DeviceID) > 255:
		return nil, mxhttp.InvalidParam("device_id is longer than 255 bytes")
	case len(req.DeviceData) == 0 || req.DeviceData[0] != '{':
		return nil, mxhttp.BadJSON("device_data must be a JSON object")
	case len(req.DeviceKeys) == 0 || string(req.DeviceKeys) == "null":
		return nil, mxhttp.MissingParam("device_keys is required: a dehydrated device without keys could receive nothing")
	}
	data, err := compactJSON(req.DeviceData)
	if err != nil {
		return nil, err
	}
	keys, err := a.e2ee.CheckUpload(c.UserID, req.DeviceID, req.UploadRequest)
	if err != nil {
		return nil, err
	}
	ctx := r.Context()
	keysChanged := false
	err = a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		old, err := storage.GetDehydratedDevice(ctx, tx, c.UserID)
		if err == nil {
			if err := a.accounts.DeleteDevices(ctx, tx, c.UserID, []string{old.DeviceID}); err != nil {
				return err
			}
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
		if inUse, err := storage.DeviceExists(ctx, tx, c.UserID, req.DeviceID); err != nil {
			return err
		} else if inUse {
			return mxhttp.InvalidParam("Device ID %s is taken by one of your devices", req.DeviceID)
		}
		if err := a.accounts.AddDevice(ctx, tx, c.UserID, req.DeviceID, req.InitialDeviceDisplayName, time.Now()); err != nil {
			return err
		}
		if keysChanged, err = a.e2ee.StoreUpload(ctx, tx, keys); err != nil {
			return err
		}
		return storage.PutDehydratedDevice(ctx, tx, c.UserID, storage.DehydratedDevice{DeviceID: req.DeviceID, DeviceData: data})
	})
	if err != nil {
		return nil, err
	}
	if keysChanged {
		a.e2ee.NotifyDeviceListChange(ctx, c.UserID)
	}
	return map[string]string{"device_id": req.DeviceID}, nil
}

// GET /dehydrated_device
func (a *API) getDehydratedDevice(r *http.Request, c accounts.Caller) (any, error) {
	d, err := storage.GetDehydratedDevice(r.Context(), a.db.Read(), c.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		err = mxhttp.NotFound("No dehydrated device")
	}
	if err != nil {
		return nil, err
	}
	return map[string]any{"device_id": d.DeviceID, "device_data": json.RawMessage(d.DeviceData)}, nil
}

// DELETE /dehydrated_device: the device goes with its keys and messages.
func (a *API) deleteDehydratedDevice(r *http.Request, c accounts.Caller) (any, error) {
	ctx := r.Context()
	var deviceID string
	err := a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		d, err := storage.GetDehydratedDevice(ctx, tx, c.UserID)
		if errors.Is(err, storage.ErrNotFound) {
			return mxhttp.NotFound("No dehydrated device")
		}
		if err != nil {
			return err
		}
		deviceID = d.DeviceID
		return a.accounts.DeleteDevices(ctx, tx, c.UserID, []string{d.DeviceID})
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"device_id": deviceID}, nil
}

// POST /dehydrated_device/{deviceId}/events: the dehydrated device's
// to-device messages after next_batch, in batches. Unlike sync, reading
// deletes nothing, so an interrupted rehydration can start over.
func (a *API) dehydratedDeviceEvents(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		NextBatch string `json:"next_batch"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	d, err := storage.GetDehydratedDevice(r.Context(), a.db.Read(), c.UserID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && d.DeviceID != pathParam(r, "deviceId") {
		err = mxhttp.Forbidden("%s is not your dehydrated device", pathParam(r, "deviceId"))
	}
	if err != nil {
		return nil, err
	}
	var after int64
	if req.NextBatch != "" {
		if after, err = strconv.ParseInt(req.NextBatch, 10, 64); err != nil || after < 0 {
			return nil, mxhttp.InvalidParam("Invalid next_batch %q", req.NextBatch)
		}
	}
	msgs, next, err := a.e2ee.InboxSince(r.Context(), c.UserID, d.DeviceID, after, dehydratedEventsBatch)
	if err != nil {
		return nil, err
	}
	return map[string]any{"events": msgs, "next_batch": strconv.FormatInt(next, 10)}, nil
}
