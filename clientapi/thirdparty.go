package clientapi

import (
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// Third-party networks (client-server API, third_party_networks module;
// third_party_lookup.yaml). Protocols come from application service
// bridges, and Hearth has none yet: no protocols, and every lookup is
// 404 M_NOT_FOUND.

// GET /_matrix/client/v3/thirdparty/protocols.
func (a *API) thirdPartyProtocols(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// GET /_matrix/client/v3/thirdparty/{protocol,location,user}[/{protocol}].
func (a *API) thirdPartyNotFound(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	mxhttp.WriteError(w, r, mxhttp.NotFound("No bridges are configured, so there are no third-party protocols"))
}
