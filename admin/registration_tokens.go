package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Registration token administration, compatible with Synapse's admin API
// (/_synapse/admin/v1/registration_tokens), so existing admin tools work.
// Server administrators (users.is_admin) only.

// GET /_synapse/admin/v1/registration_tokens[?valid=true|false]
func (a *API) listRegistrationTokens(r *http.Request, c accounts.Caller) (any, error) {
	filter := r.URL.Query().Get("valid")
	if filter != "" && filter != "true" && filter != "false" {
		return nil, mxhttp.InvalidParam("valid must be true or false")
	}
	all, err := a.db.ListRegistrationTokens(r.Context())
	if err != nil {
		return nil, err
	}
	now := time.Now().UnixMilli()
	out := []storage.RegistrationToken{}
	for _, t := range all {
		if filter == "" || (filter == "true") == t.Valid(now) {
			out = append(out, t)
		}
	}
	return map[string]any{"registration_tokens": out}, nil
}

// GET /_synapse/admin/v1/registration_tokens/{token}
func (a *API) getRegistrationToken(r *http.Request, c accounts.Caller) (any, error) {
	t, err := a.db.GetRegistrationToken(r.Context(), pathParam(r, "token"))
	if errors.Is(err, storage.ErrNotFound) {
		err = mxhttp.NotFound("No such registration token")
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// optionalInt reads a field that may be absent (nil), null (pointer to
// nil) or an integer; anything else is M_INVALID_PARAM.
func optionalInt(body map[string]json.RawMessage, key string) (**int64, error) {
	raw, ok := body[key]
	if !ok {
		return nil, nil
	}
	var v *int64
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, mxhttp.InvalidParam("%s must be an integer or null", key)
	}
	return &v, nil
}

// POST /_synapse/admin/v1/registration_tokens/new
func (a *API) newRegistrationToken(r *http.Request, c accounts.Caller) (any, error) {
	var body map[string]json.RawMessage
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	var nt accounts.NewRegistrationToken
	if raw, ok := body["token"]; ok {
		if err := json.Unmarshal(raw, &nt.Token); err != nil {
			return nil, mxhttp.InvalidParam("token must be a string")
		}
		if nt.Token == "" {
			return nil, mxhttp.InvalidParam("token must not be empty")
		}
	}
	if raw, ok := body["length"]; ok {
		if err := json.Unmarshal(raw, &nt.Length); err != nil || nt.Length < 1 || nt.Length > 64 {
			return nil, mxhttp.InvalidParam("length must be an integer between 1 and 64")
		}
	}
	for key, dst := range map[string]**int64{"uses_allowed": &nt.UsesAllowed, "expiry_time": &nt.ExpiryTime} {
		v, err := optionalInt(body, key)
		if err != nil {
			return nil, err
		}
		if v != nil {
			*dst = *v
		}
	}
	t, err := a.accounts.CreateRegistrationToken(r.Context(), nt)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// PUT /_synapse/admin/v1/registration_tokens/{token}
func (a *API) updateRegistrationToken(r *http.Request, c accounts.Caller) (any, error) {
	var body map[string]json.RawMessage
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	uses, err := optionalInt(body, "uses_allowed")
	if err != nil {
		return nil, err
	}
	exp, err := optionalInt(body, "expiry_time")
	if err != nil {
		return nil, err
	}
	t, err := a.accounts.UpdateRegistrationToken(r.Context(), pathParam(r, "token"), uses, exp)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// DELETE /_synapse/admin/v1/registration_tokens/{token}
func (a *API) deleteRegistrationToken(r *http.Request, c accounts.Caller) (any, error) {
	if err := a.accounts.DeleteRegistrationToken(r.Context(), pathParam(r, "token")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
