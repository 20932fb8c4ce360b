package importdendrite

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/hearth-matrix/hearth/storage"
)

// importMedia copies every media file and thumbnail Dendrite has (local
// uploads and cached remote media) into Hearth's content-addressed store
// and records them. Dendrite names a file by the URL-safe base64 of its
// SHA-256 under media_api.base_path; Hearth by the hex SHA-256 under
// <data dir>/media. Copies are checked against Dendrite's recorded size.
func (im *importer) importMedia(ctx context.Context, tx *sql.Tx) error {
	base := im.cfg.path(im.cfg.MediaAPI.BasePath)
	if base == "" {
		base = im.cfg.path("media_store")
	}
	root := filepath.Join(im.hearth.DataDir, "media")
	type item struct {
		m    storage.Media
		hash string
	}
	var items []item
	t := im.rep.table("mediaapi_media_repository")
	err := im.src.each(ctx, "mediaapi_media_repository", `SELECT media_id, media_origin, content_type, file_size_bytes, creation_ts, upload_name, base64hash, user_id
		FROM mediaapi_media_repository ORDER BY creation_ts, media_id`, func(rows *sql.Rows) error {
		var it item
		var name, user sql.NullString
		if err := rows.Scan(&it.m.MediaID, &it.m.ServerName, &it.m.ContentType, &it.m.Size, &it.m.CreatedTS, &name, &it.hash, &user); err != nil {
			return err
		}
		t.Read++
		it.m.Filename = name.String
		if it.m.ServerName == im.server {
			it.m.Uploader = user.String
		}
		items = append(items, it)
		return nil
	})
	if err != nil {
		return err
	}
	dirOf := map[[2]string]string{}
	for _, it := range items {
		if len(it.hash) < 3 || strings.ContainsAny(it.hash, `/\.`) {
			im.rep.notCarried("media mxc://%s/%s: bad file hash %q", it.m.ServerName, it.m.MediaID, it.hash)
			continue
		}
		dir := filepath.Join(base, it.hash[0:1], it.hash[1:2], it.hash[2:])
		sha, size, err := copyIntoStore(filepath.Join(dir, "file"), root)
		if errors.Is(err, fs.ErrNotExist) {
			im.rep.notCarried("media mxc://%s/%s: its file is missing in %s", it.m.ServerName, it.m.MediaID, dir)
			continue
		}
		if err != nil {
			return err
		}
		if size != it.m.Size {
			im.rep.notCarried("media mxc://%s/%s: the file has %d bytes, Dendrite recorded %d", it.m.ServerName, it.m.MediaID, size, it.m.Size)
		}
		it.m.SHA256, it.m.Size, it.m.UploadedTS = sha, size, it.m.CreatedTS
		if err := storage.InsertMedia(ctx, tx, it.m); err != nil {
			return err
		}
		dirOf[[2]string{it.m.ServerName, it.m.MediaID}] = dir
		t.Written++
	}
	if err := im.withProgress("mediaapi_media_repository", nil); err != nil {
		return err
	}
	im.rep.Notes = append(im.rep.Notes, "Dendrite has no media quarantine: no media is quarantined after the import")

	t = im.rep.table("mediaapi_thumbnail")
	var thumbs []storage.Thumbnail
	err = im.src.each(ctx, "mediaapi_thumbnail", `SELECT media_id, media_origin, content_type, file_size_bytes, creation_ts, width, height, resize_method FROM mediaapi_thumbnail`,
		func(rows *sql.Rows) error {
			var th storage.Thumbnail
			if err := rows.Scan(&th.MediaID, &th.ServerName, &th.ContentType, &th.Size, &th.CreatedTS, &th.Width, &th.Height, &th.Method); err != nil {
				return err
			}
			t.Read++
			thumbs = append(thumbs, th)
			return nil
		})
	if err != nil {
		return err
	}
	sort.Slice(thumbs, func(i, j int) bool { return thumbs[i].MediaID < thumbs[j].MediaID })
	for _, th := range thumbs {
		dir, ok := dirOf[[2]string{th.ServerName, th.MediaID}]
		if !ok {
			im.rep.notCarried("thumbnail %dx%d of mxc://%s/%s: its media was not carried", th.Width, th.Height, th.ServerName, th.MediaID)
			continue
		}
		sha, size, err := copyIntoStore(filepath.Join(dir, fmt.Sprintf("thumbnail-%dx%d-%s", th.Width, th.Height, th.Method)), root)
		if errors.Is(err, fs.ErrNotExist) {
			im.rep.notCarried("thumbnail %dx%d of mxc://%s/%s: its file is missing", th.Width, th.Height, th.ServerName, th.MediaID)
			continue
		}
		if err != nil {
			return err
		}
		th.SHA256, th.Size = sha, size
		if err := storage.InsertThumbnail(ctx, tx, th); err != nil {
			return err
		}
		t.Written++
	}
	return im.withProgress("mediaapi_thumbnail", nil)
}

// copyIntoStore copies a file into Hearth's media store under its hex
// SHA-256 (fan-out sha[:2]/sha[2:4]/sha), written to a temporary name,
// synced and renamed, as the media repository does. A file already there
// (the same bytes twice, or a rerun) is kept.
func copyIntoStore(src, root string) (sha string, size int64, err error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", 0, err
	}
	tmp, err := os.CreateTemp(root, ".tmp-import-")
	if err != nil {
		return "", 0, err
	}
	defer os.Remove(tmp.Name())
	h := sha256.New()
	size, err = io.Copy(io.MultiWriter(tmp, h), in)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("copying %s: %w", src, err)
	}
	sha = hex.EncodeToString(h.Sum(nil))
	dst := filepath.Join(root, sha[:2], sha[2:4], sha)
	if _, err := os.Stat(dst); err == nil {
		return sha, size, nil
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return "", 0, err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return "", 0, err
	}
	return sha, size, nil
}

// importFederation reports what the federation sender had queued: the
// events and EDUs not yet sent. They are not carried (servers fetch
// missed events when the next one arrives); destination backoff starts
// clean.
func (im *importer) importFederation(ctx context.Context, tx *sql.Tx) error {
	for _, q := range []struct{ table, what string }{{"federationsender_queue_pdus", "events"}, {"federationsender_queue_edus", "EDUs"}} {
		per := map[string]int{}
		t := im.rep.table(q.table)
		err := im.src.each(ctx, q.table, `SELECT server_name FROM `+q.table, func(rows *sql.Rows) error {
			var s string
			t.Read++
			err := rows.Scan(&s)
			per[s]++
			return err
		})
		if err != nil {
			return err
		}
		servers := make([]string, 0, len(per))
		for s := range per {
			servers = append(servers, s)
		}
		sort.Strings(servers)
		for _, s := range servers {
			im.rep.Notes = append(im.rep.Notes, fmt.Sprintf("%d %s queued for %s were never sent and are not carried (it fetches missed events when the next one arrives)", per[s], q.what, s))
		}
	}
	for _, tb := range []string{"federationsender_blacklist", "federationsender_assumed_offline"} {
		n, err := im.src.count(ctx, tb)
		if err != nil {
			return err
		}
		im.rep.table(tb).Read = n
		if n > 0 {
			im.rep.Notes = append(im.rep.Notes, fmt.Sprintf("%d destinations in %s: backoff reset, Hearth will try them again", n, tb))
		}
	}
	for _, tb := range []string{"federationsender_queue_pdus", "federationsender_queue_edus", "federationsender_blacklist", "federationsender_assumed_offline"} {
		im.progress(tb)
	}
	return nil
}
