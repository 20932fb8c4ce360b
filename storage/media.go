package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Media is one mxc:// content item: its metadata, and the SHA-256 of the
// file on disk holding its bytes. UploadedTS is 0 while an ID made by
// POST /_matrix/media/v1/create waits for its upload.
type Media struct {
	ServerName  string
	MediaID     string
	Uploader    string
	ContentType string
	Filename    string
	Size        int64
	SHA256      string
	CreatedTS   int64
	UploadedTS  int64
	ExpiresTS   int64
	Quarantined bool
}

// Thumbnail is a cached thumbnail of a media item for one configured size.
type Thumbnail struct {
	ServerName, MediaID string
	Width, Height       int
	Method              string
	Animated            bool
	ContentType         string
	Size                int64
	SHA256              string
	CreatedTS           int64
}

func nullInt(n int64) any {
	if n == 0 {
		return nil
	}
	return n
}

// InsertMedia records a media item; ErrConflict if the ID exists.
func InsertMedia(ctx context.Context, tx *sql.Tx, m Media) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO media (server_name, media_id, uploader, content_type, filename, size, sha256,
		created_ts, uploaded_ts, expires_ts, quarantined) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
		m.ServerName, m.MediaID, nullString(m.Uploader), nullString(m.ContentType), nullString(m.Filename), nullInt(m.Size),
		nullString(m.SHA256), m.CreatedTS, nullInt(m.UploadedTS), nullInt(m.ExpiresTS), m.Quarantined)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("inserting media: %w", err)
	}
	return nil
}

const mediaColumns = `server_name, media_id, uploader, content_type, filename, size, sha256, created_ts, uploaded_ts, expires_ts, quarantined`

// scanMedia reads mediaColumns, then the extra columns into extra.
func scanMedia(row interface{ Scan(...any) error }, extra ...any) (Media, error) {
	var m Media
	var uploader, ctype, filename, sha sql.NullString
	var size, uploaded, expires sql.NullInt64
	err := row.Scan(append([]any{&m.ServerName, &m.MediaID, &uploader, &ctype, &filename, &size, &sha, &m.CreatedTS, &uploaded, &expires, &m.Quarantined}, extra...)...)
	if errors.Is(err, sql.ErrNoRows) {
		return m, ErrNotFound
	}
	if err != nil {
		return m, fmt.Errorf("loading media: %w", err)
	}
	m.Uploader, m.ContentType, m.Filename, m.SHA256 = uploader.String, ctype.String, filename.String, sha.String
	m.Size, m.UploadedTS, m.ExpiresTS = size.Int64, uploaded.Int64, expires.Int64
	return m, nil
}

// GetMedia loads a media item; ErrNotFound if there is none.
func (db *DB) GetMedia(ctx context.Context, serverName, mediaID string) (Media, error) {
	return scanMedia(db.read.QueryRowContext(ctx, `SELECT `+mediaColumns+` FROM media WHERE server_name = $1 AND media_id = $2`,
		serverName, mediaID))
}

// GetMediaTx loads a media item inside a write transaction.
func GetMediaTx(ctx context.Context, tx *sql.Tx, serverName, mediaID string) (Media, error) {
	return scanMedia(tx.QueryRowContext(ctx, `SELECT `+mediaColumns+` FROM media WHERE server_name = $1 AND media_id = $2`,
		serverName, mediaID))
}

// DeleteExpiredPendingMedia drops a user's create IDs that expired unused.
func DeleteExpiredPendingMedia(ctx context.Context, tx *sql.Tx, uploader string, now int64) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM media WHERE uploader = $1 AND uploaded_ts IS NULL AND expires_ts <= $2`, uploader, now)
	if err != nil {
		return fmt.Errorf("deleting expired media IDs: %w", err)
	}
	return nil
}

// CountPendingMedia counts a user's create IDs still waiting for an upload.
func CountPendingMedia(ctx context.Context, tx *sql.Tx, uploader string, now int64) (int, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE uploader = $1 AND uploaded_ts IS NULL AND expires_ts > $2`,
		uploader, now).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting pending media: %w", err)
	}
	return n, nil
}

// UserMediaBytes sums the sizes of everything a user has uploaded.
func UserMediaBytes(ctx context.Context, tx *sql.Tx, uploader string) (int64, error) {
	var n int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(SUM(size), 0) FROM media WHERE uploader = $1`, uploader).Scan(&n); err != nil {
		return 0, fmt.Errorf("summing media sizes: %w", err)
	}
	return n, nil
}

// CompletePendingMedia fills in the content of a created media ID. It
// reports false when the ID was already uploaded (the caller checked it was
// pending, so that means a concurrent upload won).
func CompletePendingMedia(ctx context.Context, tx *sql.Tx, m Media) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE media SET content_type = $1, filename = $2, size = $3, sha256 = $4, uploaded_ts = $5,
		expires_ts = NULL WHERE server_name = $6 AND media_id = $7 AND uploaded_ts IS NULL`,
		nullString(m.ContentType), nullString(m.Filename), m.Size, m.SHA256, m.UploadedTS, m.ServerName, m.MediaID)
	if err != nil {
		return false, fmt.Errorf("completing media upload: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("completing media upload: %w", err)
	}
	return n == 1, nil
}

// SetMediaQuarantined marks a media item (not) servable and records the
// change (media_quarantine_changes); ErrNotFound if absent.
func SetMediaQuarantined(ctx context.Context, tx *sql.Tx, serverName, mediaID string, quarantined bool) error {
	res, err := tx.ExecContext(ctx, `UPDATE media SET quarantined = $1 WHERE server_name = $2 AND media_id = $3`,
		quarantined, serverName, mediaID)
	if err != nil {
		return fmt.Errorf("quarantining media: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return ErrNotFound
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO media_quarantine_changes (server_name, media_id, quarantined) VALUES ($1, $2, $3)`,
		serverName, mediaID, quarantined)
	if err != nil {
		return fmt.Errorf("recording quarantine change: %w", err)
	}
	return nil
}

// QuarantineChange is one change of a media item's quarantine.
type QuarantineChange struct {
	StreamID    int64
	ServerName  string
	MediaID     string
	Quarantined bool
}

// QuarantineChanges returns up to limit changes after fromID, in order,
// and the newest stream ID there is.
func (db *DB) QuarantineChanges(ctx context.Context, fromID int64, limit int) ([]QuarantineChange, int64, error) {
	var max int64
	if err := db.Read().QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_id), 0) FROM media_quarantine_changes`).Scan(&max); err != nil {
		return nil, 0, fmt.Errorf("reading quarantine changes: %w", err)
	}
	l, err := queryList(ctx, db.Read(), "listing quarantine changes", `SELECT stream_id, server_name, media_id, quarantined
		FROM media_quarantine_changes WHERE stream_id > $1 AND stream_id <= $2 ORDER BY stream_id LIMIT $3`,
		func(rows *sql.Rows, c *QuarantineChange) error {
			return rows.Scan(&c.StreamID, &c.ServerName, &c.MediaID, &c.Quarantined)
		}, fromID, max, limit)
	return l, max, err
}

// DeleteMedia removes a media item and its thumbnails and returns the file
// hashes they referenced, for the caller to remove once unreferenced.
func DeleteMedia(ctx context.Context, tx *sql.Tx, serverName, mediaID string) ([]string, error) {
	hashes, err := queryColumn[string](ctx, tx, "listing media files", `SELECT sha256 FROM media WHERE server_name = $1 AND media_id = $2 AND sha256 IS NOT NULL
		UNION SELECT sha256 FROM media_thumbnails WHERE server_name = $1 AND media_id = $2`, serverName, mediaID)
	if err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM media_thumbnails WHERE server_name = $1 AND media_id = $2`, serverName, mediaID); err != nil {
		return nil, fmt.Errorf("deleting thumbnails: %w", err)
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM media WHERE server_name = $1 AND media_id = $2`, serverName, mediaID)
	if err != nil {
		return nil, fmt.Errorf("deleting media: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return nil, ErrNotFound
	}
	return hashes, nil
}

// MediaFileRefs counts the media items and thumbnails using a file.
func (db *DB) MediaFileRefs(ctx context.Context, sha256 string) (int, error) {
	var n int
	err := db.write.QueryRowContext(ctx, `SELECT (SELECT COUNT(*) FROM media WHERE sha256 = $1) +
		(SELECT COUNT(*) FROM media_thumbnails WHERE sha256 = $1)`, sha256).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting file references: %w", err)
	}
	return n, nil
}

// GetThumbnail loads a cached thumbnail; ErrNotFound if not made yet.
func (db *DB) GetThumbnail(ctx context.Context, serverName, mediaID string, width, height int, method string, animated bool) (Thumbnail, error) {
	t := Thumbnail{ServerName: serverName, MediaID: mediaID, Width: width, Height: height, Method: method, Animated: animated}
	err := db.read.QueryRowContext(ctx, `SELECT content_type, size, sha256, created_ts FROM media_thumbnails
		WHERE server_name = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5 AND animated = $6`,
		serverName, mediaID, width, height, method, animated).Scan(&t.ContentType, &t.Size, &t.SHA256, &t.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return t, ErrNotFound
	}
	if err != nil {
		return t, fmt.Errorf("loading thumbnail: %w", err)
	}
	return t, nil
}

// InsertThumbnail records a thumbnail; a concurrent twin is kept instead.
func InsertThumbnail(ctx context.Context, tx *sql.Tx, t Thumbnail) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO media_thumbnails (server_name, media_id, width, height, method, animated,
		content_type, size, sha256, created_ts) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING`,
		t.ServerName, t.MediaID, t.Width, t.Height, t.Method, t.Animated, t.ContentType, t.Size, t.SHA256, t.CreatedTS)
	if err != nil {
		return fmt.Errorf("inserting thumbnail: %w", err)
	}
	return nil
}

// GetURLPreview returns the newest cached preview of url fetched at or
// after since; ErrNotFound if there is none.
func (db *DB) GetURLPreview(ctx context.Context, url string, since int64) (string, error) {
	var og string
	err := db.read.QueryRowContext(ctx, `SELECT og FROM media_url_previews WHERE url = $1 AND fetched_ts >= $2
		ORDER BY fetched_ts DESC LIMIT 1`, url, since).Scan(&og)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("loading URL preview: %w", err)
	}
	return og, nil
}

// InsertURLPreview caches a preview and drops older ones of the same URL.
func InsertURLPreview(ctx context.Context, tx *sql.Tx, url string, fetchedTS int64, og string) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM media_url_previews WHERE url = $1 AND fetched_ts < $2`, url, fetchedTS); err != nil {
		return fmt.Errorf("pruning URL previews: %w", err)
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO media_url_previews (url, fetched_ts, og) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING`,
		url, fetchedTS, og)
	if err != nil {
		return fmt.Errorf("caching URL preview: %w", err)
	}
	return nil
}

// EnsureMediaSetting stores value under name unless a value is already
// there, and returns the stored value: the first writer wins for good.
func (db *DB) EnsureMediaSetting(ctx context.Context, name, value string) (string, error) {
	var out string
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO media_settings (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING`,
			name, value); err != nil {
			return err
		}
		return tx.QueryRowContext(ctx, `SELECT value FROM media_settings WHERE name = $1`, name).Scan(&out)
	})
	if err != nil {
		return "", fmt.Errorf("media setting %s: %w", name, err)
	}
	return out, nil
}
