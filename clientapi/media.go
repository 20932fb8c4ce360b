package clientapi

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Content repository (client-server API, Content repository). Uploads and
// /create stay under /_matrix/media; downloads, thumbnails, config and
// previews moved to /_matrix/client/v1/media with authentication in v1.11.
// The deprecated unauthenticated downloads are served per legacy_media.

const uploadPath = "/_matrix/media/v3/upload"

// LimitsOwnBody reports whether a request is a media upload, which is
// exempt from max_request_bytes: it is streamed to disk and stopped at
// max_upload_bytes by the handler.
func LimitsOwnBody(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Path == uploadPath ||
		r.Method == http.MethodPut && strings.HasPrefix(r.URL.Path, uploadPath+"/")
}

func (a *API) mediaRoutes(r chi.Router) {
	r.Post(uploadPath, a.authed(a.mediaUpload))
	r.Post("/_matrix/media/v1/create", a.authed(a.mediaCreate))
	r.Put(uploadPath+"/{serverName}/{mediaId}", a.authed(a.mediaUploadTo))

	r.Get("/_matrix/client/v1/media/config", a.authed(a.mediaConfig))
	r.Get("/_matrix/client/v1/media/download/{serverName}/{mediaId}", a.authed(a.mediaDownload))
	r.Get("/_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}", a.authed(a.mediaDownload))
	r.Get("/_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}", a.authed(a.mediaThumbnail))
	r.Get("/_matrix/client/v1/media/preview_url", a.authed(a.mediaPreview))

	// Deprecated in v1.11. config and preview_url always required a token.
	r.Get("/_matrix/media/v3/config", a.authed(a.mediaConfig))
	r.Get("/_matrix/media/v3/preview_url", a.authed(a.mediaPreview))
	r.Get("/_matrix/media/v3/download/{serverName}/{mediaId}", a.legacyMediaDownload)
	r.Get("/_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}", a.legacyMediaDownload)
	r.Get("/_matrix/media/v3/thumbnail/{serverName}/{mediaId}", a.legacyMediaThumbnail)

	// Synapse-compatible administration.
	r.Post("/_synapse/admin/v1/media/quarantine/{serverName}/{mediaId}", a.authed(a.adminQuarantineMedia(true)))
	r.Post("/_synapse/admin/v1/media/unquarantine/{serverName}/{mediaId}", a.authed(a.adminQuarantineMedia(false)))
	r.Delete("/_synapse/admin/v1/media/{serverName}/{mediaId}", a.authed(a.adminDeleteMedia))
}

func uploadFrom(r *http.Request, c accounts.Caller) media.Upload {
	return media.Upload{Uploader: c.UserID, ContentType: r.Header.Get("Content-Type"),
		Filename: r.URL.Query().Get("filename"), Body: r.Body, DeclaredSize: r.ContentLength}
}

// POST /_matrix/media/v3/upload
func (a *API) mediaUpload(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	mxc, err := a.media.Upload(r.Context(), uploadFrom(r, c))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"content_uri": mxc})
}

// POST /_matrix/media/v1/create
func (a *API) mediaCreate(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	mxc, expires, err := a.media.Create(r.Context(), c.UserID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"content_uri": mxc, "unused_expires_at": expires})
}

// PUT /_matrix/media/v3/upload/{serverName}/{mediaId}
func (a *API) mediaUploadTo(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	err := a.media.UploadTo(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), uploadFrom(r, c))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{})
}

// GET /_matrix/client/v1/media/config
func (a *API) mediaConfig(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"m.upload.size": a.media.MaxUploadBytes()})
}

// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]
func (a *API) mediaDownload(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	a.download(w, r, false)
}

// GET /_matrix/media/v3/download/{serverName}/{mediaId}[/{fileName}], deprecated
func (a *API) legacyMediaDownload(w http.ResponseWriter, r *http.Request) {
	a.download(w, r, true)
}

func (a *API) download(w http.ResponseWriter, r *http.Request, legacy bool) {
	if legacy && !a.media.LegacyEnabled() {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Media not found"))
		return
	}
	wait, err := media.TimeoutParam(r.URL.Query())
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	content, err := a.media.Get(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), wait)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	defer content.File.Close()
	if legacy && !a.media.LegacyAllowed(content.Media) {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Media not found"))
		return
	}
	filename := content.Media.Filename
	if fn := pathParam(r, "fileName"); fn != "" {
		filename = pathParam(r, "fileName")
	}
	serveContent(w, r, content, filename)
}

func serveContent(w http.ResponseWriter, r *http.Request, c media.Content, filename string) {
	media.SetServeHeaders(w.Header(), c.ContentType, filename)
	http.ServeContent(w, r, "", time.UnixMilli(c.Media.UploadedTS), c.File)
}

// GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
func (a *API) mediaThumbnail(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	a.thumbnail(w, r, false)
}

// GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}, deprecated
func (a *API) legacyMediaThumbnail(w http.ResponseWriter, r *http.Request) {
	a.thumbnail(w, r, true)
}

func (a *API) thumbnail(w http.ResponseWriter, r *http.Request, legacy bool) {
	if legacy && !a.media.LegacyEnabled() {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Media not found"))
		return
	}
	req, err := media.ThumbnailParams(r.URL.Query())
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	wait, err := media.TimeoutParam(r.URL.Query())
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	content, err := a.media.Thumbnail(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), req, wait)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	defer content.File.Close()
	if legacy && !a.media.LegacyAllowed(content.Media) {
		mxhttp.WriteError(w, r, mxhttp.NotFound("Media not found"))
		return
	}
	serveContent(w, r, content, "")
}

// GET /_matrix/client/v1/media/preview_url. With url_preview off the
// endpoint answers 404 M_UNRECOGNIZED, as for any endpoint a server does
// not offer, so clients stop asking rather than retry one URL.
func (a *API) mediaPreview(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	target := r.URL.Query().Get("url")
	if target == "" && a.media.PreviewsEnabled() {
		mxhttp.WriteError(w, r, mxhttp.MissingParam("url is required"))
		return
	}
	og, err := a.media.Preview(r.Context(), c.UserID, target)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, og)
}

// requireAdmin fails unless the caller is a server administrator.
func (a *API) requireAdmin(r *http.Request, c accounts.Caller) error {
	u, err := a.db.GetUser(r.Context(), c.UserID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && !u.IsAdmin {
		return mxhttp.Forbidden("You are not a server admin")
	}
	return err
}

// POST /_synapse/admin/v1/media/(un)quarantine/{serverName}/{mediaId}
func (a *API) adminQuarantineMedia(quarantined bool) authedHandler {
	return func(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
		if err := a.requireAdmin(r, c); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		if err := a.media.Quarantine(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), quarantined); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		mxhttp.WriteJSON(w, http.StatusOK, map[string]any{})
	}
}

// DELETE /_synapse/admin/v1/media/{serverName}/{mediaId}
func (a *API) adminDeleteMedia(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	if err := a.requireAdmin(r, c); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	serverName, mediaID := pathParam(r, "serverName"), pathParam(r, "mediaId")
	if err := a.media.Delete(r.Context(), serverName, mediaID); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"deleted_media": []string{mediaID}, "total": 1})
}
