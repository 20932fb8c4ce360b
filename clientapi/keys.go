package clientapi

import (
	"crypto/rand"
	"encoding/base64"
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
	if needsAuth && !a.crossSigningPasswordAuth(w, r, c, req.Auth) {
		return
	}
	if err := a.e2ee.UploadCrossSigningKeys(r.Context(), c.UserID, req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// crossSigningPasswordAuth is a minimal stand-in for user-interactive
// authentication with one flow, m.login.password, used only when replacing
// cross-signing keys. It keeps no session state: the password must be in
// the request it authorises. TODO(merge): replace with the shared UIA
// engine (a.userInteractiveAuth with passwordFlows) from the accounts
// branch. It writes the 401 challenge or error itself and reports whether
// the caller proved their password.
func (a *API) crossSigningPasswordAuth(w http.ResponseWriter, r *http.Request, c accounts.Caller, auth json.RawMessage) bool {
	var dict struct {
		Type       string `json:"type"`
		Session    string `json:"session"`
		Password   string `json:"password"`
		User       string `json:"user"`
		Identifier struct {
			Type string `json:"type"`
			User string `json:"user"`
		} `json:"identifier"`
	}
	if len(auth) > 0 && string(auth) != "null" {
		if err := mxhttp.DecodeJSON(auth, &dict); err != nil {
			mxhttp.WriteError(w, r, err)
			return false
		}
	}
	session := dict.Session
	if session == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		session = base64.RawURLEncoding.EncodeToString(b[:])
	}
	challenge := map[string]any{
		"flows":   []map[string]any{{"stages": []string{"m.login.password"}}},
		"params":  map[string]any{},
		"session": session,
	}
	if dict.Type != "m.login.password" {
		mxhttp.WriteJSON(w, http.StatusUnauthorized, challenge)
		return false
	}
	user := dict.Identifier.User
	if user == "" {
		user = dict.User
	}
	ok := false
	if user == "" || user == c.UserID || "@"+user+":"+a.cfg.ServerName == c.UserID {
		u, err := a.db.GetUser(r.Context(), c.UserID)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return false
		}
		if ok, err = a.accounts.Passwords.Check(r.Context(), u.PasswordHash, dict.Password); err != nil {
			mxhttp.WriteError(w, r, err)
			return false
		}
	}
	if !ok {
		challenge["errcode"], challenge["error"] = "M_FORBIDDEN", "Invalid password"
		mxhttp.WriteJSON(w, http.StatusUnauthorized, challenge)
		return false
	}
	return true
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
