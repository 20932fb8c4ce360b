package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Registration token administration, compatible with Synapse's admin API
// (/_synapse/admin/v1/registration_tokens), so existing admin tools work.
// Server administrators (users.is_admin) only.

func (a *API) registrationTokenAdminRoutes(r chi.Router) {
	const base = "/_synapse/admin/v1/registration_tokens"
	r.Get(base, a.admin(a.listRegistrationTokens))
	r.Post(base+"/new", a.admin(a.newRegistrationToken))
	r.Get(base+"/{token}", a.admin(a.getRegistrationToken))
	r.Put(base+"/{token}", a.admin(a.updateRegistrationToken))
	r.Delete(base+"/{token}", a.admin(a.deleteRegistrationToken))
}

// admin wraps h so it runs only for server administrators.
func (a *API) admin(h authedHandler) http.HandlerFunc {
	return a.authed(func(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
		u, err := a.db.GetUser(r.Context(), c.UserID)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		if !u.IsAdmin {
			mxhttp.WriteError(w, r, mxhttp.Forbidden("You are not a server admin"))
			return
		}
		h(w, r, c)
	})
}

// GET /_synapse/admin/v1/registration_tokens[?valid=true|false]
func (a *API) listRegistrationTokens(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	filter := r.URL.Query().Get("valid")
	if filter != "" && filter != "true" && filter != "false" {
		mxhttp.WriteError(w, r, mxhttp.InvalidParam("valid must be true or false"))
		return
	}
	all, err := a.db.ListRegistrationTokens(r.Context())
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	now := time.Now().UnixMilli()
	out := []storage.RegistrationToken{}
	for _, t := range all {
		if filter == "" || (filter == "true") == t.Valid(now) {
			out = append(out, t)
		}
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"registration_tokens": out})
}

// GET /_synapse/admin/v1/registration_tokens/{token}
func (a *API) getRegistrationToken(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	t, err := a.db.GetRegistrationToken(r.Context(), pathParam(r, "token"))
	if errors.Is(err, storage.ErrNotFound) {
		err = mxhttp.NotFound("No such registration token")
	}
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, t)
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
func (a *API) newRegistrationToken(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var body map[string]json.RawMessage
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	var nt accounts.NewRegistrationToken
	if raw, ok := body["token"]; ok {
		if err := json.Unmarshal(raw, &nt.Token); err != nil {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("token must be a string"))
			return
		}
		if nt.Token == "" {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("token must not be empty"))
			return
		}
	}
	if raw, ok := body["length"]; ok {
		if err := json.Unmarshal(raw, &nt.Length); err != nil || nt.Length < 1 || nt.Length > 64 {
			mxhttp.WriteError(w, r, mxhttp.InvalidParam("length must be an integer between 1 and 64"))
			return
		}
	}
	for key, dst := range map[string]**int64{"uses_allowed": &nt.UsesAllowed, "expiry_time": &nt.ExpiryTime} {
		v, err := optionalInt(body, key)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		if v != nil {
			*dst = *v
		}
	}
	t, err := a.accounts.CreateRegistrationToken(r.Context(), nt)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, t)
}

// PUT /_synapse/admin/v1/registration_tokens/{token}
func (a *API) updateRegistrationToken(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var body map[string]json.RawMessage
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	uses, err := optionalInt(body, "uses_allowed")
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	exp, err := optionalInt(body, "expiry_time")
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	t, err := a.accounts.UpdateRegistrationToken(r.Context(), pathParam(r, "token"), uses, exp)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, t)
}

// DELETE /_synapse/admin/v1/registration_tokens/{token}
func (a *API) deleteRegistrationToken(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	writeEmptyOrError(w, r, a.accounts.DeleteRegistrationToken(r.Context(), pathParam(r, "token")))
}
