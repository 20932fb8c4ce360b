package clientapi

import (
	"database/sql"
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// End-to-end encryption key management (client-server API, End-to-End
// Encryption: Key management API and Cross-signing). The logic lives in
// package e2ee; these handlers decode and encode.

// keyRoutes registers the end-to-end encryption endpoints: keys,
// cross-signing, send-to-device and key backup.
func (a *API) keyRoutes(r chi.Router) {
	for _, p := range []string{"/_matrix/client/v3", "/_matrix/client/r0"} {
		r.Post(p+"/keys/upload", a.authed(a.uploadKeys))
		r.Post(p+"/keys/query", a.authed(a.queryKeys))
		r.Post(p+"/keys/claim", a.authed(a.claimKeys))
		r.Get(p+"/keys/changes", a.authed(a.keyChanges))
		r.Post(p+"/keys/device_signing/upload", a.authed(a.uploadCrossSigningKeys))
		r.Post(p+"/keys/signatures/upload", a.authed(a.uploadSignatures))
		r.Put(p+"/sendToDevice/{eventType}/{txnId}", a.authed(a.sendToDevice))
		a.keyBackupRoutes(r, p)
	}
}

// POST /keys/upload
func (a *API) uploadKeys(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req e2ee.UploadRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	counts, err := a.e2ee.UploadKeys(r.Context(), c.UserID, c.DeviceID, req)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts})
}

// POST /keys/query
func (a *API) queryKeys(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if req.DeviceKeys == nil {
		mxhttp.WriteError(w, r, mxhttp.MissingParam("device_keys is required"))
		return
	}
	resp, err := a.e2ee.QueryKeys(r.Context(), c.UserID, req.DeviceKeys)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

// POST /keys/claim
func (a *API) claimKeys(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if req.OneTimeKeys == nil {
		mxhttp.WriteError(w, r, mxhttp.MissingParam("one_time_keys is required"))
		return
	}
	resp, err := a.e2ee.ClaimKeys(r.Context(), req.OneTimeKeys)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, resp)
}

// GET /keys/changes?from=&to=
func (a *API) keyChanges(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	from, to := r.URL.Query().Get("from"), r.URL.Query().Get("to")
	if from == "" || to == "" {
		mxhttp.WriteError(w, r, mxhttp.MissingParam("from and to are required"))
		return
	}
	changed, left, err := a.e2ee.KeyChanges(r.Context(), c.UserID, from, to)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"changed": changed, "left": left})
}

// POST /keys/device_signing/upload
func (a *API) uploadCrossSigningKeys(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req e2ee.CrossSigningUpload
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	needsAuth, err := a.e2ee.CrossSigningNeedsAuth(r.Context(), c.UserID, req)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if needsAuth {
		// Replacing existing keys needs the password (UIA); the first
		// upload does not (end-to-end encryption module, Cross-signing).
		passed, err := a.userInteractiveAuth(r, passwordFlows("keys/device_signing/upload", c.UserID), req.Auth)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		if err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error { return passed.consume(r.Context(), tx) }); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
	}
	if err := a.e2ee.UploadCrossSigningKeys(r.Context(), c.UserID, req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// POST /keys/signatures/upload
func (a *API) uploadSignatures(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req map[string]map[string]json.RawMessage
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	failures, err := a.e2ee.UploadSignatures(r.Context(), c.UserID, req)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"failures": failures})
}
