// Package media is the content repository (client-server API, Content
// repository): uploads streamed to disk and stored once per SHA-256,
// metadata in the database, thumbnails made once and cached, URL previews,
// and the hook through which federation will fetch remote media.
//
// It answers with mxhttp errors so clientapi can pass them straight on.
package media

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/singleflight"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/ratelimit"
	"github.com/hearth-matrix/hearth/storage"
)

// Remote fetches media that another homeserver holds. Federation implements
// it (GET /_matrix/federation/v1/media/download/{mediaId}, falling back to
// the legacy /_matrix/media/v3/download on the origin) and cmd plugs it in
// with SetRemote; until then remote media IDs are 404 M_NOT_FOUND unless
// already cached.
type Remote interface {
	// FetchMedia returns the content of mxc://serverName/mediaID. It
	// returns ErrRemoteNotFound when the origin says there is no such media.
	// The repository reads at most maxBytes+1 bytes of Body and closes it.
	FetchMedia(ctx context.Context, serverName, mediaID string, maxBytes int64) (RemoteMedia, error)
}

// RemoteMedia is content fetched from another server.
type RemoteMedia struct {
	Body        io.ReadCloser
	ContentType string
	Filename    string
}

// ErrRemoteNotFound is what a Remote returns when the origin has no such media.
var ErrRemoteNotFound = errors.New("remote media not found")

// Repository is the content repository of one homeserver.
type Repository struct {
	db         *storage.DB
	files      *fileStore
	log        *slog.Logger
	serverName string

	maxUpload     int64
	quota         int64
	limitInfoURI  string // info_uri of M_USER_LIMIT_EXCEEDED
	maxPending    int
	createExpiry  time.Duration
	maxPixels     int64
	thumbSizes    []config.ThumbnailSize
	legacy        string
	legacyFreeze  int64       // ms; media created before it is served by the legacy endpoints in before_switch mode
	rateLimits    atomic.Bool // rate_limits; reloads
	uploadBuckets *ratelimit.Limiter

	remote Remote
	// preview is nil when url_preview is off; it reloads (Update).
	preview atomic.Pointer[previewer]
	// previewCfg is what preview was built from; Update's lock.
	previewMu  sync.Mutex
	previewCfg previewSettings

	thumbSem    chan struct{}
	thumbFlight singleflight.Group

	waitMu  sync.Mutex
	waiters map[string][]chan struct{}
}

// Upload rate limit per user: a burst of uploadBurst, then one every
// uploadEvery.
const (
	uploadBurst = 20
	uploadEvery = time.Second
)

// maxWait caps timeout_ms for content not yet uploaded.
const maxWait = 60 * time.Second

// Open prepares the repository: the media directory under cfg.DataDir and
// the legacy-media freeze time, recorded in the database at first start.
func Open(ctx context.Context, cfg config.Config, db *storage.DB, log *slog.Logger) (*Repository, error) {
	files, err := newFileStore(filepath.Join(cfg.DataDir, "media"))
	if err != nil {
		return nil, err
	}
	freeze, err := db.EnsureMediaSetting(ctx, "legacy_freeze_ts", strconv.FormatInt(time.Now().UnixMilli(), 10))
	if err != nil {
		return nil, err
	}
	freezeTS, err := strconv.ParseInt(freeze, 10, 64)
	if err != nil {
		return nil, fmt.Errorf("media setting legacy_freeze_ts %q is not a number", freeze)
	}
	r := &Repository{
		db: db, files: files, log: log, serverName: cfg.ServerName,
		maxUpload: cfg.MaxUploadBytes, quota: cfg.MediaQuotaBytes, limitInfoURI: cfg.LimitInfoURI(), maxPending: cfg.MaxPendingMediaUploads,
		createExpiry: time.Duration(cfg.MediaCreateExpirySeconds) * time.Second, maxPixels: cfg.MaxThumbnailPixels,
		legacy: cfg.LegacyMedia, legacyFreeze: freezeTS,
		uploadBuckets: ratelimit.New(1/uploadEvery.Seconds(), uploadBurst),
		thumbSem:      make(chan struct{}, 2),
		waiters:       map[string][]chan struct{}{},
	}
	for _, s := range cfg.ThumbnailSizes {
		ts, err := config.ParseThumbnailSize(s)
		if err != nil {
			return nil, err
		}
		r.thumbSizes = append(r.thumbSizes, ts)
	}
	if err := r.Update(cfg); err != nil {
		return nil, err
	}
	return r, nil
}

// previewSettings are the keys URL previews are built from.
type previewSettings struct {
	on    bool
	allow string // url_preview_allow_cidrs, joined
}

// Update applies the reloadable keys of cfg (rate_limits, url_preview,
// url_preview_allow_cidrs); on an error nothing changes.
func (r *Repository) Update(cfg config.Config) error {
	r.previewMu.Lock()
	defer r.previewMu.Unlock()
	want := previewSettings{on: cfg.URLPreview, allow: strings.Join(cfg.URLPreviewAllowCIDRs, ",")}
	if want != r.previewCfg {
		var p *previewer
		if cfg.URLPreview {
			var err error
			if p, err = newPreviewer(r, cfg.URLPreviewAllowCIDRs); err != nil {
				return err
			}
		}
		r.preview.Store(p)
		r.previewCfg = want
	}
	r.rateLimits.Store(cfg.RateLimits == "on")
	return nil
}

// SetRemote plugs in the federation client that fetches remote media.
func (r *Repository) SetRemote(remote Remote) { r.remote = remote }

// MaxUploadBytes is the upload limit, for /media/config.
func (r *Repository) MaxUploadBytes() int64 { return r.maxUpload }

// PreviewsEnabled reports whether url_preview is on.
func (r *Repository) PreviewsEnabled() bool { return r.preview.Load() != nil }

// MXC renders a content URI.
func MXC(serverName, mediaID string) string { return "mxc://" + serverName + "/" + mediaID }

// ParseMXC splits and checks an mxc:// URI.
func ParseMXC(uri string) (serverName, mediaID string, err error) {
	rest, ok := strings.CutPrefix(uri, "mxc://")
	serverName, mediaID, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 {
		return "", "", fmt.Errorf("%q is not an mxc://server/id URI", uri)
	}
	if err := CheckID(serverName, mediaID); err != nil {
		return "", "", err
	}
	return serverName, mediaID, nil
}

// CheckID refuses server names and media IDs outside the spec's grammar
// (Security considerations): this is what keeps "../" and friends out of
// every lookup.
func CheckID(serverName, mediaID string) error {
	if err := config.ValidServerName(serverName); err != nil {
		return mxhttp.InvalidParam("Invalid server name: %v", err)
	}
	if mediaID == "" || len(mediaID) > 255 {
		return mxhttp.InvalidParam("Invalid media ID")
	}
	for i := 0; i < len(mediaID); i++ {
		c := mediaID[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return mxhttp.InvalidParam("Media IDs may contain only A-Z, a-z, 0-9, _ and -")
		}
	}
	return nil
}

// newMediaID returns 24 random characters of the URL-safe base64 alphabet,
// exactly the characters the spec allows in a media ID.
func newMediaID() string {
	var b [18]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Upload is one piece of content arriving from a user.
type Upload struct {
	Uploader    string
	ContentType string
	Filename    string
	Body        io.Reader
	// DeclaredSize is the Content-Length, or -1 when unknown; a declared
	// size over the limit is refused before reading anything.
	DeclaredSize int64
}

func (r *Repository) checkUpload(ctx context.Context, u *Upload) error {
	if u.DeclaredSize > r.maxUpload {
		return mxhttp.TooLarge("Uploads are limited to %d bytes", r.maxUpload)
	}
	if !utf8.ValidString(u.Filename) || len(u.Filename) > 255 || strings.ContainsAny(u.Filename, "\x00/\\") {
		return mxhttp.InvalidParam("filename must be UTF-8, at most 255 bytes, without / or \\")
	}
	if len(u.ContentType) > 255 {
		return mxhttp.InvalidParam("Content-Type is too long")
	}
	if u.ContentType == "" {
		u.ContentType = "application/octet-stream"
	}
	if u.DeclaredSize > 0 && r.quota > 0 {
		used, err := r.quotaUsed(ctx, u.Uploader)
		if err != nil {
			return err
		}
		if used+u.DeclaredSize > r.quota {
			return mxhttp.UserLimit(r.limitInfoURI, "This upload would exceed your media quota of %d bytes", r.quota)
		}
	}
	return nil
}

func (r *Repository) quotaUsed(ctx context.Context, user string) (int64, error) {
	var used int64
	err := r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		var err error
		used, err = storage.UserMediaBytes(ctx, tx, user)
		return err
	})
	return used, err
}

// rateLimit takes one upload token of user, or answers 429.
func (r *Repository) rateLimit(user string) error {
	if !r.rateLimits.Load() {
		return nil
	}
	if ok, wait := r.uploadBuckets.Allow(user); !ok {
		return mxhttp.LimitExceeded("Too many uploads").With("retry_after_ms", wait.Milliseconds())
	}
	return nil
}

// receive streams an upload's body to a temporary file.
func (r *Repository) receive(body io.Reader) (tempFile, error) {
	t, err := r.files.receive(body, r.maxUpload)
	var mbe *http.MaxBytesError // the request's own limit (mxhttp.Common)
	switch {
	case errors.Is(err, errTooLarge) || errors.As(err, &mbe):
		return t, mxhttp.TooLarge("Uploads are limited to %d bytes", r.maxUpload)
	case err != nil:
		return t, fmt.Errorf("receiving upload: %w", err)
	}
	return t, nil
}

// commit places a received file under its hash and runs fn (which inserts
// the rows referencing it) in one transaction, holding the hash's lock so a
// concurrent delete cannot remove the file in between. When fn fails, a file
// nothing references is removed again.
func (r *Repository) commit(ctx context.Context, t tempFile, fn func(tx *sql.Tx) error) error {
	unlock := r.files.lock(t.sha)
	defer unlock()
	if err := r.files.place(t); err != nil {
		return err
	}
	err := r.db.WriteTx(ctx, fn)
	if err != nil {
		if n, rerr := r.db.MediaFileRefs(context.WithoutCancel(ctx), t.sha); rerr == nil && n == 0 {
			_ = r.files.remove(t.sha)
		}
	}
	return err
}

// withinQuota fails with 403 M_USER_LIMIT_EXCEEDED when user's uploads plus size exceed the quota.
func (r *Repository) withinQuota(ctx context.Context, tx *sql.Tx, user string, size int64) error {
	if r.quota <= 0 {
		return nil
	}
	used, err := storage.UserMediaBytes(ctx, tx, user)
	if err != nil {
		return err
	}
	if used+size > r.quota {
		return mxhttp.UserLimit(r.limitInfoURI, "This upload would exceed your media quota of %d bytes", r.quota)
	}
	return nil
}

// Upload stores new content (POST /_matrix/media/v3/upload) and returns its mxc URI.
func (r *Repository) Upload(ctx context.Context, u Upload) (string, error) {
	if err := r.rateLimit(u.Uploader); err != nil {
		return "", err
	}
	if err := r.checkUpload(ctx, &u); err != nil {
		return "", err
	}
	t, err := r.receive(u.Body)
	if err != nil {
		return "", err
	}
	now := time.Now().UnixMilli()
	m := storage.Media{ServerName: r.serverName, MediaID: newMediaID(), Uploader: u.Uploader, ContentType: u.ContentType,
		Filename: u.Filename, Size: t.size, SHA256: t.sha, CreatedTS: now, UploadedTS: now}
	err = r.commit(ctx, t, func(tx *sql.Tx) error {
		if err := r.withinQuota(ctx, tx, u.Uploader, t.size); err != nil {
			return err
		}
		return storage.InsertMedia(ctx, tx, m)
	})
	if err != nil {
		return "", err
	}
	return MXC(m.ServerName, m.MediaID), nil
}

// Create reserves a media ID for a later upload (POST /_matrix/media/v1/create).
func (r *Repository) Create(ctx context.Context, user string) (mxc string, expiresTS int64, err error) {
	if err := r.rateLimit(user); err != nil {
		return "", 0, err
	}
	now := time.Now()
	m := storage.Media{ServerName: r.serverName, MediaID: newMediaID(), Uploader: user,
		CreatedTS: now.UnixMilli(), ExpiresTS: now.Add(r.createExpiry).UnixMilli()}
	err = r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if err := storage.DeleteExpiredPendingMedia(ctx, tx, user, now.UnixMilli()); err != nil {
			return err
		}
		n, err := storage.CountPendingMedia(ctx, tx, user, now.UnixMilli())
		if err != nil {
			return err
		}
		if n >= r.maxPending {
			return mxhttp.LimitExceeded("You have %d media IDs waiting for an upload; upload to them or wait for them to expire", n).
				With("retry_after_ms", r.createExpiry.Milliseconds())
		}
		return storage.InsertMedia(ctx, tx, m)
	})
	if err != nil {
		return "", 0, err
	}
	return MXC(m.ServerName, m.MediaID), m.ExpiresTS, nil
}

// UploadTo fills a media ID made by Create (PUT
// /_matrix/media/v3/upload/{serverName}/{mediaId}): only its creator may,
// and only once.
func (r *Repository) UploadTo(ctx context.Context, serverName, mediaID string, u Upload) error {
	if err := CheckID(serverName, mediaID); err != nil {
		return err
	}
	if serverName != r.serverName {
		return mxhttp.NotFound("Media not found")
	}
	m, err := r.db.GetMedia(ctx, serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && m.UploadedTS == 0 && m.ExpiresTS <= time.Now().UnixMilli() {
		return mxhttp.NotFound("Media not found")
	}
	if err != nil {
		return err
	}
	if m.Uploader != u.Uploader {
		return mxhttp.Forbidden("Only the user who created this media ID may upload to it")
	}
	if m.UploadedTS != 0 {
		return cannotOverwrite()
	}
	if err := r.rateLimit(u.Uploader); err != nil {
		return err
	}
	if err := r.checkUpload(ctx, &u); err != nil {
		return err
	}
	t, err := r.receive(u.Body)
	if err != nil {
		return err
	}
	m.ContentType, m.Filename, m.Size, m.SHA256, m.UploadedTS = u.ContentType, u.Filename, t.size, t.sha, time.Now().UnixMilli()
	err = r.commit(ctx, t, func(tx *sql.Tx) error {
		if err := r.withinQuota(ctx, tx, u.Uploader, t.size); err != nil {
			return err
		}
		ok, err := storage.CompletePendingMedia(ctx, tx, m)
		if err == nil && !ok {
			return cannotOverwrite()
		}
		return err
	})
	if err != nil {
		return err
	}
	r.notifyUploaded(serverName, mediaID)
	return nil
}

func cannotOverwrite() error {
	return &mxhttp.Error{Status: 409, ErrCode: "M_CANNOT_OVERWRITE_MEDIA", Message: "This media has already been uploaded"}
}

// Content is media ready to serve: its metadata and open file. The caller
// closes File.
type Content struct {
	Media       storage.Media
	ContentType string // of File: the media's own, or the thumbnail's
	File        *os.File
}

// Get opens media for download. Content created but not yet uploaded is
// waited for up to wait, then 504 M_NOT_YET_UPLOADED. Remote media comes
// from the cache or, with a Remote plugged in, from its origin.
func (r *Repository) Get(ctx context.Context, serverName, mediaID string, wait time.Duration) (Content, error) {
	m, err := r.lookup(ctx, serverName, mediaID, wait)
	if err != nil {
		return Content{}, err
	}
	f, err := r.files.open(m.SHA256)
	if err != nil {
		return Content{}, fmt.Errorf("opening media file %s: %w", m.SHA256, err)
	}
	return Content{Media: m, ContentType: m.ContentType, File: f}, nil
}

// lookup finds servable media metadata, waiting for async uploads.
func (r *Repository) lookup(ctx context.Context, serverName, mediaID string, wait time.Duration) (storage.Media, error) {
	if err := CheckID(serverName, mediaID); err != nil {
		return storage.Media{}, err
	}
	wait = min(max(wait, 0), maxWait)
	deadline := time.Now().Add(wait)
	for {
		m, err := r.db.GetMedia(ctx, serverName, mediaID)
		if errors.Is(err, storage.ErrNotFound) && serverName != r.serverName {
			return r.fetchRemote(ctx, serverName, mediaID)
		}
		if errors.Is(err, storage.ErrNotFound) || err == nil && m.Quarantined {
			return m, mxhttp.NotFound("Media not found")
		}
		if err != nil {
			return m, err
		}
		if m.UploadedTS != 0 {
			return m, nil
		}
		if m.ExpiresTS <= time.Now().UnixMilli() {
			return m, mxhttp.NotFound("Media not found")
		}
		left := time.Until(deadline)
		if left <= 0 {
			return m, &mxhttp.Error{Status: 504, ErrCode: "M_NOT_YET_UPLOADED", Message: "Content has not yet been uploaded"}
		}
		if err := r.waitUploaded(ctx, serverName, mediaID, left); err != nil {
			return m, err
		}
	}
}

// waitUploaded sleeps until this process sees the upload, or at most half a
// second, so an upload through another process is seen by polling.
func (r *Repository) waitUploaded(ctx context.Context, serverName, mediaID string, d time.Duration) error {
	key := serverName + "/" + mediaID
	ch := make(chan struct{})
	r.waitMu.Lock()
	r.waiters[key] = append(r.waiters[key], ch)
	r.waitMu.Unlock()
	defer func() {
		r.waitMu.Lock()
		defer r.waitMu.Unlock()
		list := r.waiters[key]
		for i, c := range list {
			if c == ch {
				list = append(list[:i], list[i+1:]...)
				break
			}
		}
		if len(list) == 0 {
			delete(r.waiters, key)
		} else {
			r.waiters[key] = list
		}
	}()
	timer := time.NewTimer(min(d, 500*time.Millisecond))
	defer timer.Stop()
	select {
	case <-ch:
	case <-timer.C:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (r *Repository) notifyUploaded(serverName, mediaID string) {
	key := serverName + "/" + mediaID
	r.waitMu.Lock()
	defer r.waitMu.Unlock()
	for _, ch := range r.waiters[key] {
		close(ch)
	}
	delete(r.waiters, key)
}

// fetchRemote downloads remote media through the Remote and caches it. The
// cache time is its created_ts, so the legacy freeze treats it as new, as
// the spec says.
func (r *Repository) fetchRemote(ctx context.Context, serverName, mediaID string) (storage.Media, error) {
	if r.remote == nil {
		return storage.Media{}, mxhttp.NotFound("Media not found")
	}
	rm, err := r.remote.FetchMedia(ctx, serverName, mediaID, r.maxUpload)
	if errors.Is(err, ErrRemoteNotFound) {
		return storage.Media{}, mxhttp.NotFound("Media not found")
	}
	if err != nil {
		return storage.Media{}, &mxhttp.Error{Status: 502, ErrCode: "M_UNKNOWN", Message: "Could not fetch the media from " + serverName}
	}
	defer rm.Body.Close()
	t, err := r.files.receive(rm.Body, r.maxUpload)
	if errors.Is(err, errTooLarge) {
		return storage.Media{}, &mxhttp.Error{Status: 502, ErrCode: "M_TOO_LARGE", Message: "Remote media is too large"}
	}
	if err != nil {
		return storage.Media{}, fmt.Errorf("fetching remote media: %w", err)
	}
	now := time.Now().UnixMilli()
	m := storage.Media{ServerName: serverName, MediaID: mediaID, ContentType: rm.ContentType, Filename: rm.Filename,
		Size: t.size, SHA256: t.sha, CreatedTS: now, UploadedTS: now}
	if m.ContentType == "" {
		m.ContentType = "application/octet-stream"
	}
	err = r.commit(ctx, t, func(tx *sql.Tx) error { return storage.InsertMedia(ctx, tx, m) })
	if errors.Is(err, storage.ErrConflict) { // fetched concurrently: use the stored copy
		return r.db.GetMedia(ctx, serverName, mediaID)
	}
	return m, err
}

// LegacyAllowed reports whether the unauthenticated /_matrix/media/v3
// endpoints may serve this media under legacy_media.
func (r *Repository) LegacyAllowed(m storage.Media) bool {
	switch r.legacy {
	case config.LegacyMediaOn:
		return true
	case config.LegacyMediaBeforeSwitch:
		return m.CreatedTS < r.legacyFreeze
	}
	return false
}

// LegacyEnabled reports whether the legacy endpoints are served at all.
func (r *Repository) LegacyEnabled() bool { return r.legacy != config.LegacyMediaOff }

// Quarantine makes media unservable (or servable again) without deleting it.
func (r *Repository) Quarantine(ctx context.Context, serverName, mediaID string, quarantined bool) error {
	if err := CheckID(serverName, mediaID); err != nil {
		return err
	}
	err := r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		return storage.SetMediaQuarantined(ctx, tx, serverName, mediaID, quarantined)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("Media not found")
	}
	return err
}

// Delete removes media, its thumbnails, and the files no other media uses.
func (r *Repository) Delete(ctx context.Context, serverName, mediaID string) error {
	if err := CheckID(serverName, mediaID); err != nil {
		return err
	}
	var hashes []string
	err := r.db.WriteTx(ctx, func(tx *sql.Tx) error {
		var err error
		hashes, err = storage.DeleteMedia(ctx, tx, serverName, mediaID)
		return err
	})
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("Media not found")
	}
	if err != nil {
		return err
	}
	for _, h := range hashes {
		if err := r.removeIfUnused(ctx, h); err != nil {
			return err
		}
	}
	return nil
}

func (r *Repository) removeIfUnused(ctx context.Context, sha string) error {
	unlock := r.files.lock(sha)
	defer unlock()
	n, err := r.db.MediaFileRefs(ctx, sha)
	if err != nil {
		return err
	}
	if n == 0 {
		return r.files.remove(sha)
	}
	return nil
}
