package admin

import (
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
)

// Media administration (Synapse's docs/admin_api/media_admin_api.md):
// quarantine and deletion through the media repository, as the hearth
// media subcommands do.

// POST /_synapse/admin/v1/media/(un)quarantine/{serverName}/{mediaId}
func (a *API) adminQuarantineMedia(quarantined bool) handler {
	return func(r *http.Request, c accounts.Caller) (any, error) {
		if err := a.media.Quarantine(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), quarantined); err != nil {
			return nil, err
		}
		return map[string]any{}, nil
	}
}

// DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}
func (a *API) adminDeleteMedia(r *http.Request, c accounts.Caller) (any, error) {
	serverName, mediaID := pathParam(r, "serverName"), pathParam(r, "mediaId")
	if err := a.media.Delete(r.Context(), serverName, mediaID); err != nil {
		return nil, err
	}
	return map[string]any{"deleted_media": []string{mediaID}, "total": 1}, nil
}
