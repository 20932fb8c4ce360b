package clientapi

import (
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/oauth"
	"github.com/hearth-matrix/hearth/storage"
)

// End-to-end encryption key management (client-server API, End-to-End
// Encryption: Key management API and Cross-signing). The logic lives in
// package e2ee; these handlers decode and encode.

// POST /keys/upload
func (a *API) uploadKeys(r *http.Request, c accounts.Caller) (any, error) {
	var req e2ee.UploadRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	counts, err := a.e2ee.UploadKeys(r.Context(), c.UserID, c.DeviceID, req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"one_time_key_counts": counts}, nil
}

// POST /keys/query
func (a *API) queryKeys(r *http.Request, c accounts.Caller) (any, error) {
	deviceKeys, err := mxhttp.ReadRequiredField[map[string][]string](r, "device_keys")
	if err != nil {
		return nil, err
	}
	resp, err := a.e2ee.QueryKeys(r.Context(), c.UserID, deviceKeys)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// POST /keys/claim
func (a *API) claimKeys(r *http.Request, c accounts.Caller) (any, error) {
	claims, err := mxhttp.ReadRequiredField[map[string]map[string]string](r, "one_time_keys")
	if err != nil {
		return nil, err
	}
	resp, err := a.e2ee.ClaimKeys(r.Context(), claims)
	if err != nil {
		return nil, err
	}
	return resp, nil
}

// GET /keys/changes?from=&to=
func (a *API) keyChanges(r *http.Request, c accounts.Caller) (any, error) {
	from, to := r.URL.Query().Get("from"), r.URL.Query().Get("to")
	if from == "" || to == "" {
		return nil, mxhttp.MissingParam("from and to are required")
	}
	changed, left, err := a.e2ee.KeyChanges(r.Context(), c.UserID, from, to)
	if err != nil {
		return nil, err
	}
	return map[string]any{"changed": changed, "left": left}, nil
}

// POST /keys/device_signing/upload
func (a *API) uploadCrossSigningKeys(r *http.Request, c accounts.Caller) (any, error) {
	var req e2ee.CrossSigningUpload
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	needsAuth, err := a.e2ee.CrossSigningNeedsAuth(r.Context(), c.UserID, req)
	if err != nil {
		return nil, err
	}
	// An application service replaces its users' keys without UIA
	// (Application Service API, Cross-signing, v1.17).
	if needsAuth && c.AppService == nil {
		// An admin may have allowed a replacement without UIA for a while
		// (Synapse's admin API).
		until, err := a.db.CrossSigningReplaceableUntil(r.Context(), c.UserID)
		if err != nil {
			return nil, err
		}
		needsAuth = until <= time.Now().UnixMilli()
	}
	if needsAuth && c.AppService == nil {
		// Replacing existing keys needs the password (UIA); the first
		// upload does not (end-to-end encryption module, Cross-signing).
		need := passwordFlows("keys/device_signing/upload", c.UserID)
		// A device signed in through OAuth has no password to give: the
		// user approves the reset on the account page (m.oauth, v1.17).
		// With password login off no device has a password to give either;
		// the approval is offered next to the SSO stage (withSignInStages).
		oauthParams := map[string]any{stageOAuth: map[string]string{
			"url": oauth.AccountManagementURL(oauth.BaseURL(*a.conf(), r), "org.matrix.cross_signing_reset")}}
		if _, _, err := storage.OAuthSession(r.Context(), a.db.Read(), c.UserID, c.DeviceID); err == nil {
			need.flows = []uiaFlow{{Stages: []string{stageOAuth}}}
			need.params = oauthParams
		} else if !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		} else if !a.conf().PasswordLogin {
			need.flows = append(need.flows, uiaFlow{Stages: []string{stageOAuth}})
			need.params = oauthParams
		}
		passed, err := a.userInteractiveAuth(r, need, req.Auth)
		if err != nil {
			return nil, err
		}
		if err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error { return passed.consume(r.Context(), tx) }); err != nil {
			return nil, err
		}
	}
	if err := a.e2ee.UploadCrossSigningKeys(r.Context(), c.UserID, req); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// POST /keys/signatures/upload
func (a *API) uploadSignatures(r *http.Request, c accounts.Caller) (any, error) {
	var req map[string]map[string]json.RawMessage
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	failures, err := a.e2ee.UploadSignatures(r.Context(), c.UserID, req)
	if err != nil {
		return nil, err
	}
	return map[string]any{"failures": failures}, nil
}
