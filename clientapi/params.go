package clientapi

import (
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// pathParam returns a path parameter, percent-decoded. chi matches on the
// raw path when the request's encoding differs from Go's default (as with
// %21 for the '!' of a room ID or %2F inside a parameter), and then hands
// out still-encoded parameters; otherwise the parameter is already decoded.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v
	}
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}

// serverOf returns the server name of a user, room or other Matrix ID
// (sigil, localpart, ':', server name), or "" if there is none.
func serverOf(id string) string {
	_, server, ok := strings.Cut(id, ":")
	if !ok || len(id) < 2 {
		return ""
	}
	return server
}

// isLocalUser reports whether userID is a user ID of this server.
func (a *API) isLocalUser(userID string) bool {
	return strings.HasPrefix(userID, "@") && serverOf(userID) == a.conf().ServerName
}

// requireSelf refuses requests about another user's private data (account
// data, filters, profile changes): 403 M_FORBIDDEN.
func requireSelf(c accounts.Caller, userID, what string) error {
	if c.UserID != userID {
		return mxhttp.Forbidden("Cannot %s for other users", what)
	}
	return nil
}
