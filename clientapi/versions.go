package clientapi

import (
	"net/http"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// specVersions are the client-server API versions Hearth advertises. A
// version is listed only when what it requires is implemented; later modules
// extend the list as they land.
var specVersions = []string{"v1.1"}

// unstableFeatures are the MSC flags Hearth implements.
var unstableFeatures = map[string]bool{}

// GET /_matrix/client/versions (client-server API, API Standards).
func (a *API) versions(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"versions":          specVersions,
		"unstable_features": unstableFeatures,
	})
}
