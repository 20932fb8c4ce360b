package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// Media over federation (server-server API, Content Repository): serving
// our media to other servers as multipart/mixed, and fetching theirs for
// the media repository (media.Remote).

// GET /_matrix/federation/v1/media/download/{mediaId}
func (a *API) mediaDownload(r *http.Request, origin spec.ServerName) (any, error) {
	if a.media == nil {
		return nil, mxhttp.NotFound("Media not found")
	}
	content, err := a.media.GetQueried(r.Context(), string(a.serverName), pathParam(r, "mediaId"), r.URL.Query())
	if err != nil {
		return nil, err
	}
	return multipartMedia(content, content.Media.Filename), nil
}

// GET /_matrix/federation/v1/media/thumbnail/{mediaId}
func (a *API) mediaThumbnail(r *http.Request, origin spec.ServerName) (any, error) {
	if a.media == nil {
		return nil, mxhttp.NotFound("Media not found")
	}
	content, err := a.media.ThumbnailQueried(r.Context(), string(a.serverName), pathParam(r, "mediaId"), r.URL.Query())
	if err != nil {
		return nil, err
	}
	return multipartMedia(content, ""), nil
}

// multipartMedia is the response of the spec's two parts: the metadata (an
// empty object for now), then the bytes with their type and disposition.
// It closes c's file.
func multipartMedia(c media.Content, filename string) mxhttp.Stream {
	return func(w http.ResponseWriter, _ *http.Request) {
		defer c.File.Close()
		writeMultipartMedia(w, c, filename)
	}
}

func writeMultipartMedia(w http.ResponseWriter, c media.Content, filename string) {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return
	}
	_, _ = meta.Write([]byte("{}"))
	h := http.Header{}
	media.SetServeHeaders(h, c.ContentType, filename)
	part, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": h.Values("Content-Type"), "Content-Disposition": h.Values("Content-Disposition")})
	if err != nil {
		return
	}
	if _, err := io.Copy(part, c.File); err != nil {
		return // the client went away; nothing more to say
	}
	_ = mw.Close()
}

// mediaFetcher fetches remote media for the media repository.
type mediaFetcher struct{ a *API }

var _ media.Remote = mediaFetcher{}

// maxMetadataBytes bounds the JSON part of a multipart media answer.
const maxMetadataBytes = 64 << 10

// FetchMedia asks the origin's federation media endpoint and, unless the
// origin answers about the media itself, its legacy unauthenticated
// /_matrix/media/v3/download (for servers older than v1.11).
func (f mediaFetcher) FetchMedia(ctx context.Context, serverName, mediaID string, maxBytes int64) (media.RemoteMedia, error) {
	server := spec.ServerName(serverName)
	if server == f.a.serverName {
		return media.RemoteMedia{}, media.ErrRemoteNotFound
	}
	res, err := f.a.client.DownloadMedia(ctx, f.a.serverName, server, mediaID)
	if err != nil {
		return media.RemoteMedia{}, err
	}
	if res.StatusCode == http.StatusOK {
		return f.readMultipart(ctx, res, maxBytes)
	}
	// A Matrix answer about the media itself is final; anything else (the
	// endpoint unknown: 404/400 M_UNRECOGNIZED, 405, or a non-Matrix error
	// page) means an older server.
	switch code := errcodeOf(res); code {
	case "M_NOT_FOUND", "M_TOO_LARGE", "M_NOT_YET_UPLOADED", "M_LIMIT_EXCEEDED", "M_FORBIDDEN":
		return media.RemoteMedia{}, statusError(res.StatusCode, code)
	}
	// An older server: the legacy endpoint.
	legacy, err := http.NewRequestWithContext(ctx, http.MethodGet, "matrix://"+serverName+"/_matrix/media/v3/download/"+
		url.PathEscape(serverName)+"/"+url.PathEscape(mediaID)+"?allow_remote=false", nil)
	if err != nil {
		return media.RemoteMedia{}, err
	}
	doer, ok := f.a.client.(interface {
		DoHTTPRequest(context.Context, *http.Request) (*http.Response, error)
	})
	if !ok {
		return media.RemoteMedia{}, errors.New("the federation client cannot make plain requests")
	}
	res, err = doer.DoHTTPRequest(ctx, legacy)
	if err != nil {
		return media.RemoteMedia{}, err
	}
	if res.StatusCode != http.StatusOK {
		return media.RemoteMedia{}, statusError(res.StatusCode, errcodeOf(res))
	}
	return plainMedia(res), nil
}

// statusError maps a failed media answer: 404 is "no such media".
func statusError(status int, code string) error {
	if status == http.StatusNotFound {
		return media.ErrRemoteNotFound
	}
	return fmt.Errorf("remote media answer %d %s", status, code)
}

// errcodeOf reads (and closes) an error answer's errcode.
func errcodeOf(res *http.Response) string {
	defer res.Body.Close()
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.NewDecoder(io.LimitReader(res.Body, maxMetadataBytes)).Decode(&e)
	return e.ErrCode
}

// plainMedia is a single-part answer (the legacy endpoint, or what a
// Location points at).
func plainMedia(res *http.Response) media.RemoteMedia {
	return media.RemoteMedia{Body: res.Body, ContentType: res.Header.Get("Content-Type"), Filename: dispositionFilename(res.Header.Get("Content-Disposition"))}
}

func dispositionFilename(cd string) string {
	if _, params, err := mime.ParseMediaType(cd); err == nil {
		return params["filename"]
	}
	return ""
}

// readMultipart takes the content part of a federation media answer,
// following a Location part through the outbound guard (no private
// addresses unless configured).
func (f mediaFetcher) readMultipart(ctx context.Context, res *http.Response, maxBytes int64) (media.RemoteMedia, error) {
	mt, params, err := mime.ParseMediaType(res.Header.Get("Content-Type"))
	if err != nil || !strings.EqualFold(mt, "multipart/mixed") || params["boundary"] == "" {
		res.Body.Close()
		return media.RemoteMedia{}, fmt.Errorf("remote media answer is %q, not multipart/mixed", res.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(res.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		res.Body.Close()
		return media.RemoteMedia{}, fmt.Errorf("remote media answer without metadata: %w", err)
	}
	if _, err := io.Copy(io.Discard, io.LimitReader(meta, maxMetadataBytes)); err != nil {
		res.Body.Close()
		return media.RemoteMedia{}, err
	}
	part, err := mr.NextPart()
	if err != nil {
		res.Body.Close()
		return media.RemoteMedia{}, fmt.Errorf("remote media answer without content: %w", err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		res.Body.Close()
		u, err := url.Parse(loc)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
			return media.RemoteMedia{}, fmt.Errorf("remote media redirects to %q", loc)
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return media.RemoteMedia{}, err
		}
		lres, err := f.a.plainHTTP.Do(req)
		if err != nil {
			return media.RemoteMedia{}, err
		}
		if lres.StatusCode != http.StatusOK {
			lres.Body.Close()
			return media.RemoteMedia{}, statusError(lres.StatusCode, "")
		}
		if lres.ContentLength > maxBytes {
			lres.Body.Close()
			return media.RemoteMedia{}, fmt.Errorf("remote media of %d bytes is over the limit", lres.ContentLength)
		}
		return plainMedia(lres), nil
	}
	return media.RemoteMedia{
		Body:        partCloser{Reader: part, body: res.Body},
		ContentType: part.Header.Get("Content-Type"),
		Filename:    dispositionFilename(part.Header.Get("Content-Disposition")),
	}, nil
}

// partCloser reads one part and closes the whole answer.
type partCloser struct {
	io.Reader
	body io.Closer
}

func (p partCloser) Close() error { return p.body.Close() }
