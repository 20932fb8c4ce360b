package media_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"image"
	"image/color"
	"image/png"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Tests of the content repository below HTTP, on real storage (a temporary
// SQLite database, and PostgreSQL when HEARTH_TEST_POSTGRES is set) and a
// real media directory.

const alice = "@alice:hearth.test"

type repo struct {
	*media.Repository
	cfg    config.Config
	db     *storage.DB
	reopen func() *media.Repository
}

func newRepo(t *testing.T, b hearthtest.Backend, modify func(*config.Config)) repo {
	t.Helper()
	cfg := hearthtest.TestConfig(t, b)
	if modify != nil {
		modify(&cfg)
	}
	ctx := context.Background()
	db, err := storage.Open(ctx, cfg.DatabaseURL, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	log := slog.New(slog.DiscardHandler)
	open := func() *media.Repository {
		r, err := media.Open(ctx, cfg, db, log)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	return repo{Repository: open(), cfg: cfg, db: db, reopen: open}
}

func (r repo) upload(t *testing.T, contentType string, body []byte) (server, id string) {
	t.Helper()
	mxc, err := r.Upload(context.Background(), media.Upload{Uploader: alice, ContentType: contentType, Filename: "f.bin",
		Body: bytes.NewReader(body), DeclaredSize: int64(len(body))})
	if err != nil {
		t.Fatal(err)
	}
	server, id, err = media.ParseMXC(mxc)
	if err != nil {
		t.Fatalf("upload returned %q: %v", mxc, err)
	}
	return server, id
}

func read(t *testing.T, c media.Content) []byte {
	t.Helper()
	defer c.File.Close()
	b, err := io.ReadAll(c.File)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func errCode(err error) string {
	var me *mxhttp.Error
	if errors.As(err, &me) {
		return me.ErrCode
	}
	return ""
}

// files lists the content files of the media directory (not temporaries).
func (r repo) files(t *testing.T) []string {
	t.Helper()
	var out []string
	root := filepath.Join(r.cfg.DataDir, "media")
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			out = append(out, strings.TrimPrefix(path, root))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func pngOf(t *testing.T, w, h int) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// Uploaded content comes back byte for byte with its content type,
// filename, size and uploader, also from a repository opened afresh.
func TestUploadThenDownloadIsIdentical(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		r := newRepo(t, b, nil)
		ctx := context.Background()
		body := make([]byte, 300_000)
		_, _ = rand.Read(body)
		mxc, err := r.Upload(ctx, media.Upload{Uploader: alice, ContentType: "application/pdf", Filename: "report ✓.pdf",
			Body: bytes.NewReader(body), DeclaredSize: -1})
		if err != nil {
			t.Fatal(err)
		}
		server, id, err := media.ParseMXC(mxc)
		if err != nil || server != "hearth.test" {
			t.Fatalf("mxc %q: %v", mxc, err)
		}
		for name, repo := range map[string]*media.Repository{"same": r.Repository, "reopened": r.reopen()} {
			c, err := repo.Get(ctx, server, id, 0)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if got := read(t, c); !bytes.Equal(got, body) {
				t.Fatalf("%s: downloaded %d bytes differing from the %d uploaded", name, len(got), len(body))
			}
			m := c.Media
			if c.ContentType != "application/pdf" || m.Filename != "report ✓.pdf" || m.Size != int64(len(body)) || m.Uploader != alice || m.UploadedTS == 0 {
				t.Fatalf("%s: metadata %+v, content type %q", name, m, c.ContentType)
			}
		}
		// No type given: served as application/octet-stream.
		server, id = r.upload(t, "", []byte("raw"))
		c, err := r.Get(ctx, server, id, 0)
		if err != nil || c.ContentType != "application/octet-stream" || string(read(t, c)) != "raw" {
			t.Fatalf("untyped upload: %q %v", c.ContentType, err)
		}
	})
}

// Identical uploads are stored once; deleting one keeps the file for the
// other, deleting both removes it, and deleted media is not served.
func TestDeduplicationAndDelete(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		r := newRepo(t, b, nil)
		ctx := context.Background()
		body := []byte("the same bytes twice")
		s1, id1 := r.upload(t, "text/plain", body)
		s2, id2 := r.upload(t, "text/plain", body)
		if id1 == id2 {
			t.Fatal("two uploads got one media ID")
		}
		if fs := r.files(t); len(fs) != 1 {
			t.Fatalf("two identical uploads stored as %v", fs)
		}
		if err := r.Delete(ctx, s1, id1); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(ctx, s1, id1, 0); errCode(err) != "M_NOT_FOUND" {
			t.Fatalf("deleted media: %v", err)
		}
		c, err := r.Get(ctx, s2, id2, 0)
		if err != nil || !bytes.Equal(read(t, c), body) {
			t.Fatalf("the other copy after deleting one: %v", err)
		}
		if err := r.Delete(ctx, s2, id2); err != nil {
			t.Fatal(err)
		}
		if fs := r.files(t); len(fs) != 0 {
			t.Fatalf("files left after deleting every reference: %v", fs)
		}
		if err := r.Delete(ctx, s2, id2); errCode(err) != "M_NOT_FOUND" {
			t.Fatalf("deleting twice: %v", err)
		}
	})
}

// A thumbnail has exactly the configured size's bounds: crop fills the
// size, scale fits within it keeping the aspect ratio, nothing is ever
// upscaled, and each thumbnail is made once.
func TestThumbnailBounds(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		r := newRepo(t, b, nil) // sizes: 32x32 crop, 96x96 crop, 320x240 scale, 640x480 scale, 800x600 scale
		ctx := context.Background()
		server, id := r.upload(t, "image/png", pngOf(t, 1000, 500))
		for _, c := range []struct {
			req  media.ThumbnailRequest
			w, h int
		}{
			{media.ThumbnailRequest{Width: 96, Height: 96, Method: "crop"}, 96, 96},
			{media.ThumbnailRequest{Width: 20, Height: 20, Method: "crop"}, 32, 32},
			{media.ThumbnailRequest{Width: 300, Height: 200, Method: "scale"}, 320, 160},
			{media.ThumbnailRequest{Width: 640, Height: 480, Method: "scale"}, 640, 320},
			{media.ThumbnailRequest{Width: 5000, Height: 5000, Method: "scale"}, 800, 400},
		} {
			th, err := r.Thumbnail(ctx, server, id, c.req, 0)
			if err != nil {
				t.Fatalf("%+v: %v", c.req, err)
			}
			data := read(t, th)
			cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("%+v: thumbnail is not an image: %v", c.req, err)
			}
			if cfg.Width != c.w || cfg.Height != c.h || "image/"+format != th.ContentType {
				t.Fatalf("%+v: got %dx%d %s (%s), want %dx%d", c.req, cfg.Width, cfg.Height, format, th.ContentType, c.w, c.h)
			}
			again, err := r.reopen().Thumbnail(ctx, server, id, c.req, 0)
			if err != nil || !bytes.Equal(read(t, again), data) {
				t.Fatalf("%+v: second request served something else: %v", c.req, err)
			}
		}
		var n int
		if err := r.db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM media_thumbnails WHERE media_id = $1`, id).Scan(&n); err != nil || n != 5 {
			t.Fatalf("%d thumbnail rows for 5 sizes: %v", n, err)
		}

		// Smaller than the size: the original, never upscaled.
		small := pngOf(t, 20, 10)
		server, id = r.upload(t, "image/png", small)
		th, err := r.Thumbnail(ctx, server, id, media.ThumbnailRequest{Width: 640, Height: 480, Method: "scale"}, 0)
		if err != nil || !bytes.Equal(read(t, th), small) {
			t.Fatalf("thumbnail of a small image is not the original: %v", err)
		}
		// Not an image, or a bad request: refused.
		server, id = r.upload(t, "image/png", []byte("not a png"))
		if _, err := r.Thumbnail(ctx, server, id, media.ThumbnailRequest{Width: 32, Height: 32, Method: "crop"}, 0); err == nil {
			t.Fatal("thumbnailed garbage")
		}
		if _, err := r.Thumbnail(ctx, server, id, media.ThumbnailRequest{Width: 32, Height: 32, Method: "stretch"}, 0); errCode(err) != "M_INVALID_PARAM" {
			t.Fatalf("method stretch: %v", err)
		}
		if _, err := r.Thumbnail(ctx, server, id, media.ThumbnailRequest{Width: 0, Height: 32, Method: "crop"}, 0); errCode(err) != "M_INVALID_PARAM" {
			t.Fatalf("width 0: %v", err)
		}
	})
}

// Quarantined media, unknown media and other servers' media (with no
// federation plugged in) are not served, content or thumbnail.
func TestQuarantinedAndMissingMediaNotServed(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		r := newRepo(t, b, nil)
		ctx := context.Background()
		server, id := r.upload(t, "image/png", pngOf(t, 100, 100))
		thumb := media.ThumbnailRequest{Width: 32, Height: 32, Method: "crop"}
		if err := r.Quarantine(ctx, server, id, true); err != nil {
			t.Fatal(err)
		}
		for name, repo := range map[string]*media.Repository{"same": r.Repository, "reopened": r.reopen()} {
			if _, err := repo.Get(ctx, server, id, 0); errCode(err) != "M_NOT_FOUND" {
				t.Fatalf("%s: quarantined media served: %v", name, err)
			}
			if _, err := repo.Thumbnail(ctx, server, id, thumb, 0); errCode(err) != "M_NOT_FOUND" {
				t.Fatalf("%s: thumbnail of quarantined media served: %v", name, err)
			}
		}
		if err := r.Quarantine(ctx, server, id, false); err != nil {
			t.Fatal(err)
		}
		if c, err := r.Get(ctx, server, id, 0); err != nil {
			t.Fatalf("released from quarantine: %v", err)
		} else {
			c.File.Close()
		}
		if err := r.Quarantine(ctx, server, "nosuchmedia", true); errCode(err) != "M_NOT_FOUND" {
			t.Fatalf("quarantining unknown media: %v", err)
		}
		for _, c := range []struct{ server, id string }{{"hearth.test", "nosuchmedia"}, {"elsewhere.example", id}} {
			if _, err := r.Get(ctx, c.server, c.id, 0); errCode(err) != "M_NOT_FOUND" {
				t.Fatalf("%s/%s: %v", c.server, c.id, err)
			}
			if _, err := r.Thumbnail(ctx, c.server, c.id, thumb, 0); errCode(err) != "M_NOT_FOUND" {
				t.Fatalf("thumbnail of %s/%s: %v", c.server, c.id, err)
			}
		}
	})
}

// Media IDs and server names outside the spec's grammar are refused before
// any lookup (nothing like ../ reaches the store or the disk), and the IDs
// the repository makes are within it.
func TestMediaIDsValidated(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		r := newRepo(t, b, nil)
		ctx := context.Background()
		for _, c := range []struct{ server, id string }{
			{"hearth.test", "../../etc/passwd"}, {"hearth.test", "a/b"}, {"hearth.test", "a.b"}, {"hearth.test", ""},
			{"hearth.test", strings.Repeat("a", 256)}, {"hearth.test", "a%2e"}, {"hearth.test", "ümlaut"},
			{"../hearth.test", "abc"}, {"", "abc"}, {"hearth test", "abc"},
		} {
			if err := media.CheckID(c.server, c.id); errCode(err) != "M_INVALID_PARAM" {
				t.Fatalf("CheckID(%q, %q): %v", c.server, c.id, err)
			}
			if _, err := r.Get(ctx, c.server, c.id, 0); errCode(err) != "M_INVALID_PARAM" {
				t.Fatalf("Get(%q, %q): %v", c.server, c.id, err)
			}
			if err := r.Delete(ctx, c.server, c.id); errCode(err) != "M_INVALID_PARAM" {
				t.Fatalf("Delete(%q, %q): %v", c.server, c.id, err)
			}
		}
		for _, uri := range []string{"http://hearth.test/abc", "mxc://hearth.test", "mxc://hearth.test/a/b", "mxc:///abc"} {
			if _, _, err := media.ParseMXC(uri); err == nil {
				t.Fatalf("ParseMXC(%q) accepted", uri)
			}
		}
		for range 20 {
			server, id := r.upload(t, "text/plain", []byte("x"))
			if err := media.CheckID(server, id); err != nil || len(id) < 16 {
				t.Fatalf("generated ID %q: %v", id, err)
			}
		}
	})
}

// An upload over the size limit is refused whether or not its size was
// declared, and leaves no file and no row behind.
func TestUploadLimit(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		r := newRepo(t, b, func(c *config.Config) { c.MaxUploadBytes = 1000 })
		ctx := context.Background()
		for _, declared := range []int64{1001, -1} {
			_, err := r.Upload(ctx, media.Upload{Uploader: alice, ContentType: "text/plain",
				Body: bytes.NewReader(make([]byte, 1001)), DeclaredSize: declared})
			if errCode(err) != "M_TOO_LARGE" {
				t.Fatalf("1001 bytes, declared %d: %v", declared, err)
			}
		}
		if fs := r.files(t); len(fs) != 0 {
			t.Fatalf("refused uploads left files %v", fs)
		}
		var n int
		if err := r.db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM media`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("refused uploads left %d rows: %v", n, err)
		}
		server, id := r.upload(t, "text/plain", make([]byte, 1000))
		if c, err := r.Get(ctx, server, id, 0); err != nil || len(read(t, c)) != 1000 {
			t.Fatalf("an upload of exactly the limit: %v", err)
		}
	})
}

// A media ID created for a later upload: not yet servable (504
// M_NOT_YET_UPLOADED), fillable only by its creator and only once, and a
// download waiting for it gets the content as soon as it arrives.
func TestAsyncUpload(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		r := newRepo(t, b, nil)
		ctx := context.Background()
		mxc, _, err := r.Create(ctx, alice)
		if err != nil {
			t.Fatal(err)
		}
		server, id, err := media.ParseMXC(mxc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := r.Get(ctx, server, id, 0); errCode(err) != "M_NOT_YET_UPLOADED" {
			t.Fatalf("before the upload: %v", err)
		}
		var wg sync.WaitGroup
		var waited []byte
		var waitErr error
		wg.Go(func() {
			c, err := r.Get(ctx, server, id, 20*time.Second)
			if waitErr = err; err == nil {
				waited, _ = io.ReadAll(c.File)
				c.File.Close()
			}
		})
		time.Sleep(50 * time.Millisecond)
		up := func(user, body string) error {
			return r.UploadTo(ctx, server, id, media.Upload{Uploader: user, ContentType: "text/plain", Body: strings.NewReader(body), DeclaredSize: -1})
		}
		if err := up("@mallory:hearth.test", "not yours"); errCode(err) != "M_FORBIDDEN" {
			t.Fatalf("another user's upload: %v", err)
		}
		start := time.Now()
		if err := up(alice, "finally"); err != nil {
			t.Fatal(err)
		}
		wg.Wait()
		if waitErr != nil || string(waited) != "finally" {
			t.Fatalf("waiting download: %q %v", waited, waitErr)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("the waiting download took %v after the upload", d)
		}
		if err := up(alice, "again"); errCode(err) != "M_CANNOT_OVERWRITE_MEDIA" {
			t.Fatalf("second upload: %v", err)
		}
		c, err := r.Get(ctx, server, id, 0)
		if err != nil || string(read(t, c)) != "finally" {
			t.Fatalf("after a refused overwrite: %v", err)
		}
	})
}
