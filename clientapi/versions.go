package clientapi

import (
	"net/http"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// specVersions are the client-server API versions Hearth advertises. A
// version is listed only when what it requires is implemented; later modules
// extend the list as they land.
//
// Of the authentication features of later versions, these exist: v1.2
// token-authenticated registration (m.login.registration_token and the
// validity endpoint), v1.3 refresh tokens (/refresh, refresh_token at login
// and registration), v1.7 POST /v1/login/get_token. v1.4 to v1.7 also
// require room and sync features, so they wait for those modules.
var specVersions = []string{"v1.1", "v1.2", "v1.3"}

// unstableFeatures are the MSC flags Hearth implements.
var unstableFeatures = map[string]bool{}

// GET /_matrix/client/versions (client-server API, API Standards).
func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"versions":          specVersions,
		"unstable_features": unstableFeatures,
	})
}
