package clientapi

import (
	"net/http"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// GET /.well-known/matrix/client (client-server API, Server Discovery). With
// no well_known_client configured there is nothing to discover: 404, as the
// spec's discovery algorithm expects.
func (a *API) wellKnownClient(w http.ResponseWriter, r *http.Request) {
	if a.cfg.WellKnownClient == "" {
		mxhttp.WriteError(w, r, mxhttp.NotFound("No client discovery information is configured"))
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"m.homeserver": map[string]string{"base_url": a.cfg.WellKnownClient},
	})
}

// GET /.well-known/matrix/server (server-server API, Server discovery).
func (a *API) wellKnownServer(w http.ResponseWriter, r *http.Request) {
	if a.cfg.WellKnownServer == "" {
		mxhttp.WriteError(w, r, mxhttp.NotFound("No server delegation is configured"))
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"m.server": a.cfg.WellKnownServer})
}
