package oauth

import (
	"errors"
	"mime"
	"net/http"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// oauthError is an error response of RFC 6749 section 5.2 (and RFC 7591
// section 3.2.2): {"error": code, "error_description": text}.
type oauthError struct {
	status      int
	code        string
	description string
}

func (e *oauthError) Error() string { return e.code + ": " + e.description }

func errOAuth(status int, code, description string) *oauthError {
	return &oauthError{status, code, description}
}

func invalidRequest(d string) *oauthError {
	return errOAuth(http.StatusBadRequest, "invalid_request", d)
}
func invalidGrant(d string) *oauthError { return errOAuth(http.StatusBadRequest, "invalid_grant", d) }

// created marks a body written with 201 Created (client registration).
type created struct{ body any }

// oauthJSON adapts an OAuth endpoint: its result is JSON, never cached
// (RFC 6749 section 5.1), its error an RFC 6749 error object.
func (a *API) oauthJSON(h func(r *http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		w.Header().Set("Pragma", "no-cache")
		body, err := h(r)
		var oe *oauthError
		switch {
		case errors.As(err, &oe):
			if oe.status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Basic realm="hearth"`)
			}
			mxhttp.WriteJSON(w, oe.status, map[string]string{"error": oe.code, "error_description": oe.description})
		case err != nil:
			mxhttp.Logger(r).Error("OAuth endpoint", "path", r.URL.Path, "err", err)
			mxhttp.WriteJSON(w, http.StatusInternalServerError, map[string]string{"error": "server_error", "error_description": "Internal error"})
		default:
			if c, ok := body.(created); ok {
				mxhttp.WriteJSON(w, http.StatusCreated, c.body)
				return
			}
			if body == nil {
				body = struct{}{}
			}
			mxhttp.WriteJSON(w, http.StatusOK, body)
		}
	})
}

// matrixJSON adapts a public Matrix endpoint (mxhttp errors).
func matrixJSON(h func(r *http.Request) (any, error)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := h(r)
		mxhttp.Respond(w, r, body, err)
	})
}

// formValue reads an application/x-www-form-urlencoded parameter of a
// protocol request; a parameter given twice is an error (RFC 6749
// section 3.1).
func formValue(r *http.Request, name string) (string, error) {
	vs := r.PostForm[name]
	if len(vs) > 1 {
		return "", invalidRequest("Parameter " + name + " is given more than once")
	}
	if len(vs) == 0 {
		return "", nil
	}
	return vs[0], nil
}

func parseForm(r *http.Request) error {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/x-www-form-urlencoded" {
		return invalidRequest("The body must be application/x-www-form-urlencoded")
	}
	if err := r.ParseForm(); err != nil {
		return invalidRequest("The body could not be read")
	}
	return nil
}

// GET /_matrix/client/v1/auth_metadata (spec v1.15; device grant and
// account management v1.18).
func (a *API) metadata(r *http.Request) (any, error) {
	base := a.baseURL(r)
	md := map[string]any{
		"issuer":                                     base + "/",
		"authorization_endpoint":                     base + prefix + "/auth",
		"token_endpoint":                             base + prefix + "/token",
		"revocation_endpoint":                        base + prefix + "/revoke",
		"registration_endpoint":                      base + prefix + "/register",
		"device_authorization_endpoint":              base + prefix + "/device",
		"response_types_supported":                   []string{"code"},
		"response_modes_supported":                   []string{"query", "fragment"},
		"grant_types_supported":                      []string{grantAuthorizationCode, grantRefreshToken, grantDeviceCode},
		"code_challenge_methods_supported":           []string{"S256"},
		"token_endpoint_auth_methods_supported":      []string{"none"},
		"revocation_endpoint_auth_methods_supported": []string{"none"},
		"scopes_supported":                           []string{scopeAPI, scopeDevicePrefix + "*"},
		"account_management_uri":                     base + accountPath,
		"account_management_actions_supported":       accountActions,
	}
	if a.registrationOpen() {
		md["prompt_values_supported"] = []string{"create"}
	}
	return md, nil
}
