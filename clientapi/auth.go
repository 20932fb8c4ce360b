package clientapi

import (
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// authedHandler is a handler that needs an access token.
type authedHandler func(w http.ResponseWriter, r *http.Request, c accounts.Caller)

// authed wraps h so it runs only for a valid access token.
func (a *API) authed(h authedHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := a.accounts.Authenticate(r)
		if err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		h(w, r, c)
	}
}
