package clientapi

import (
	"net/http"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// Content repository (client-server API, Content repository). Uploads and
// /create stay under /_matrix/media; downloads, thumbnails, config and
// previews moved to /_matrix/client/v1/media with authentication in v1.11.
// The deprecated unauthenticated downloads are served per legacy_media.

func uploadFrom(r *http.Request, c accounts.Caller) media.Upload {
	return media.Upload{Uploader: c.UserID, ContentType: r.Header.Get("Content-Type"),
		Filename: r.URL.Query().Get("filename"), Body: r.Body, DeclaredSize: r.ContentLength}
}

// POST /_matrix/media/v3/upload
func (a *API) mediaUpload(r *http.Request, c accounts.Caller) (any, error) {
	mxc, err := a.media.Upload(r.Context(), uploadFrom(r, c))
	if err != nil {
		return nil, err
	}
	return map[string]string{"content_uri": mxc}, nil
}

// POST /_matrix/media/v1/create
func (a *API) mediaCreate(r *http.Request, c accounts.Caller) (any, error) {
	mxc, expires, err := a.media.Create(r.Context(), c.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"content_uri": mxc, "unused_expires_at": expires}, nil
}

// PUT /_matrix/media/v3/upload/{serverName}/{mediaId}
func (a *API) mediaUploadTo(r *http.Request, c accounts.Caller) (any, error) {
	err := a.media.UploadTo(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), uploadFrom(r, c))
	if err != nil {
		return nil, err
	}
	return map[string]any{}, nil
}

// GET /_matrix/client/v1/media/config
func (a *API) mediaConfig(r *http.Request, c accounts.Caller) (any, error) {
	return map[string]any{"m.upload.size": a.media.MaxUploadBytes()}, nil
}

// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]
func (a *API) mediaDownload(r *http.Request, c accounts.Caller) (any, error) {
	return a.download(r, false)
}

// GET /_matrix/media/v3/download/{serverName}/{mediaId}[/{fileName}], deprecated
func (a *API) legacyMediaDownload(r *http.Request, _ accounts.Caller) (any, error) {
	return a.download(r, true)
}

func (a *API) download(r *http.Request, legacy bool) (any, error) {
	if legacy && !a.media.LegacyEnabled() {
		return nil, mxhttp.NotFound("Media not found")
	}
	content, err := a.media.GetQueried(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), r.URL.Query())
	if err != nil {
		return nil, err
	}
	if legacy && !a.media.LegacyAllowed(content.Media) {
		content.File.Close()
		return nil, mxhttp.NotFound("Media not found")
	}
	filename := content.Media.Filename
	if fn := pathParam(r, "fileName"); fn != "" {
		filename = pathParam(r, "fileName")
	}
	return serveContent(content, filename), nil
}

// serveContent is the response that sends c's bytes (with range
// requests) and closes its file.
func serveContent(c media.Content, filename string) mxhttp.Stream {
	return mxhttp.Stream(func(w http.ResponseWriter, r *http.Request) {
		defer c.File.Close()
		media.SetServeHeaders(w.Header(), c.ContentType, filename)
		http.ServeContent(w, r, "", time.UnixMilli(c.Media.UploadedTS), c.File)
	})
}

// GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}
func (a *API) mediaThumbnail(r *http.Request, c accounts.Caller) (any, error) {
	return a.thumbnail(r, false)
}

// GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}, deprecated
func (a *API) legacyMediaThumbnail(r *http.Request, _ accounts.Caller) (any, error) {
	return a.thumbnail(r, true)
}

func (a *API) thumbnail(r *http.Request, legacy bool) (any, error) {
	if legacy && !a.media.LegacyEnabled() {
		return nil, mxhttp.NotFound("Media not found")
	}
	content, err := a.media.ThumbnailQueried(r.Context(), pathParam(r, "serverName"), pathParam(r, "mediaId"), r.URL.Query())
	if err != nil {
		return nil, err
	}
	if legacy && !a.media.LegacyAllowed(content.Media) {
		content.File.Close()
		return nil, mxhttp.NotFound("Media not found")
	}
	return serveContent(content, ""), nil
}

// GET /_matrix/client/v1/media/preview_url. With url_preview off the
// endpoint answers 404 M_UNRECOGNIZED, as for any endpoint a server does
// not offer, so clients stop asking rather than retry one URL.
func (a *API) mediaPreview(r *http.Request, c accounts.Caller) (any, error) {
	target := r.URL.Query().Get("url")
	if target == "" && a.media.PreviewsEnabled() {
		return nil, mxhttp.MissingParam("url is required")
	}
	og, err := a.media.Preview(r.Context(), c.UserID, target)
	if err != nil {
		return nil, err
	}
	return og, nil
}
