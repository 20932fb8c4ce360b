package federation

import (
	"encoding/json"
	"net/http"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// GET /_matrix/federation/v1/version (server-server API, Server implementation).
func (a *API) serverVersion(w http.ResponseWriter, r *http.Request) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"server": map[string]string{"name": "Hearth", "version": a.version},
	})
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only called on fixed struct types that always marshal
	}
	return b
}
