package clientapi_test

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"mime"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	_ "golang.org/x/image/webp"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// tinyWebP is a 64x32 lossless WebP of one colour, written by hand (x/image
// has no WebP encoder): a VP8L header and five single-symbol prefix codes.
var tinyWebP = []byte{0x52, 0x49, 0x46, 0x46, 0x18, 0x0, 0x0, 0x0, 0x57, 0x45, 0x42, 0x50, 0x56, 0x50, 0x38, 0x4c,
	0xc, 0x0, 0x0, 0x0, 0x2f, 0x3f, 0xc0, 0x7, 0x0, 0x28, 0x72, 0x3d, 0xaa, 0xd5, 0xff, 0x0}

// newUser registers a local user and returns its access token.
func newMediaUser(t *testing.T, hs *hearthtest.Server, localpart string, admin bool) string {
	t.Helper()
	login, err := hs.Accounts.Register(context.Background(), accounts.NewUser{Localpart: localpart, Password: "password-" + localpart, Admin: admin})
	if err != nil {
		t.Fatalf("registering %s: %v", localpart, err)
	}
	return login.AccessToken
}

// rawDo sends a request with a raw body and content type (hearthtest.Do
// always sends JSON).
func rawDo(t *testing.T, hs *hearthtest.Server, method, path, token, contentType string, body io.Reader) hearthtest.Response {
	t.Helper()
	req, err := http.NewRequest(method, hs.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := hearthtest.Response{Status: resp.StatusCode, Header: resp.Header, Body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		_ = json.Unmarshal(b, &out.JSON)
	}
	return out
}

// upload posts content and returns its server name and media ID.
func upload(t *testing.T, hs *hearthtest.Server, token, contentType, filename string, body []byte) (string, string) {
	t.Helper()
	path := "/_matrix/media/v3/upload"
	if filename != "" {
		path += "?filename=" + url.QueryEscape(filename)
	}
	r := rawDo(t, hs, "POST", path, token, contentType, bytes.NewReader(body))
	hearthtest.Expect(t, r, http.StatusOK, "")
	return splitMXC(t, r.JSON["content_uri"])
}

func splitMXC(t *testing.T, v any) (string, string) {
	t.Helper()
	s, _ := v.(string)
	rest, ok := strings.CutPrefix(s, "mxc://")
	server, id, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || id == "" {
		t.Fatalf("content_uri %v is not mxc://server/id", v)
	}
	return server, id
}

// mediaFiles lists the content files under <data_dir>/media.
func mediaFiles(t *testing.T, hs *hearthtest.Server) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(filepath.Join(hs.Config.DataDir, "media"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			out = append(out, p)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func testPNG(t *testing.T, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, gradient(w, h)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gradient(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), 100, 255})
		}
	}
	return img
}

func TestMediaUploadAndDownload(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, bob := newMediaUser(t, hs, "alice", false), newMediaUser(t, hs, "bob", false)
		body := testPNG(t, 20, 10)
		server, id := upload(t, hs, alice, "image/png", "test.png", body)
		if server != "hearth.test" {
			t.Fatalf("server name %q", server)
		}
		for _, c := range id {
			if !strings.ContainsRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-", c) {
				t.Fatalf("media ID %q has %q", id, c)
			}
		}
		hearthtest.Expect(t, rawDo(t, hs, "POST", "/_matrix/media/v3/upload", "", "image/png", bytes.NewReader(body)), http.StatusUnauthorized, "M_MISSING_TOKEN")

		path := "/_matrix/client/v1/media/download/" + server + "/" + id
		r := hs.Do(t, "GET", path, bob, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !bytes.Equal(r.Body, body) {
			t.Fatalf("downloaded %d bytes, uploaded %d", len(r.Body), len(body))
		}
		want := map[string]string{
			"Content-Type":                 "image/png",
			"Content-Disposition":          `inline; filename=test.png`,
			"X-Content-Type-Options":       "nosniff",
			"Cross-Origin-Resource-Policy": "cross-origin",
		}
		for h, v := range want {
			if got := r.Header.Get(h); got != v {
				t.Errorf("%s = %q, want %q", h, got, v)
			}
		}
		if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "sandbox") || !strings.Contains(csp, "default-src 'none'") {
			t.Errorf("Content-Security-Policy = %q", csp)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", path, "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")

		// A different, non-ASCII name given in the path wins, as filename*.
		r = hs.Do(t, "GET", path+"/"+url.PathEscape("☃ snow.png"), bob, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if _, params, err := mime.ParseMediaType(r.Header.Get("Content-Disposition")); err != nil || params["filename"] != "☃ snow.png" {
			t.Errorf("Content-Disposition %q gives %v (%v)", r.Header.Get("Content-Disposition"), params, err)
		}
		if !strings.Contains(r.Header.Get("Content-Disposition"), "filename*=utf-8''") {
			t.Errorf("non-ASCII filename not in RFC 5987 form: %q", r.Header.Get("Content-Disposition"))
		}

		// Disposition follows the type: unsafe types are attachments.
		for ctype, disp := range map[string]string{
			"Text/Plain; charset=utf-8": "inline", "image/svg+xml": "attachment", "text/html": "attachment",
			"application/octet-stream": "attachment", "video/mp4": "inline",
		} {
			s, i := upload(t, hs, alice, ctype, "", []byte("<svg onload=alert(1)>"))
			r := hs.Do(t, "GET", "/_matrix/client/v1/media/download/"+s+"/"+i, alice, nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			if got, _, _ := mime.ParseMediaType(r.Header.Get("Content-Disposition")); got != disp {
				t.Errorf("%s served as %q, want %s", ctype, r.Header.Get("Content-Disposition"), disp)
			}
			if r.Header.Get("Content-Type") != ctype {
				t.Errorf("Content-Type %q, uploaded as %q", r.Header.Get("Content-Type"), ctype)
			}
		}

		// No Content-Type: application/octet-stream.
		s, i := upload(t, hs, alice, "", "", []byte("x"))
		r = hs.Do(t, "GET", "/_matrix/client/v1/media/download/"+s+"/"+i, alice, nil)
		if r.Header.Get("Content-Type") != "application/octet-stream" {
			t.Errorf("Content-Type %q for an upload without one", r.Header.Get("Content-Type"))
		}

		r = hs.Do(t, "GET", "/_matrix/client/v1/media/config", alice, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["m.upload.size"] != float64(hs.Config.MaxUploadBytes) {
			t.Errorf("m.upload.size = %v, want %d", r.JSON["m.upload.size"], hs.Config.MaxUploadBytes)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/media/v3/config", alice, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/config", "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}

func TestMediaSameContentStoredOnce(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, admin := newMediaUser(t, hs, "alice", false), newMediaUser(t, hs, "admin", true)
		body := []byte("the same bytes, twice")
		s1, id1 := upload(t, hs, alice, "text/plain", "a.txt", body)
		s2, id2 := upload(t, hs, alice, "text/plain", "b.txt", body)
		if id1 == id2 {
			t.Fatal("two uploads got one media ID")
		}
		if files := mediaFiles(t, hs); len(files) != 1 {
			t.Fatalf("two identical uploads left %d files: %v", len(files), files)
		}
		// Deleting one keeps the file for the other; deleting both removes it.
		hearthtest.Expect(t, hs.Do(t, "DELETE", "/_synapse/admin/v1/media/"+s1+"/"+id1, alice, nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "DELETE", "/_synapse/admin/v1/media/"+s1+"/"+id1, admin, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/download/"+s1+"/"+id1, alice, nil), http.StatusNotFound, "M_NOT_FOUND")
		r := hs.Do(t, "GET", "/_matrix/client/v1/media/download/"+s2+"/"+id2, alice, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !bytes.Equal(r.Body, body) {
			t.Fatalf("second copy now reads %q", r.Body)
		}
		hearthtest.Expect(t, hs.Do(t, "DELETE", "/_synapse/admin/v1/media/"+s2+"/"+id2, admin, nil), http.StatusOK, "")
		if files := mediaFiles(t, hs); len(files) != 0 {
			t.Fatalf("files left after deleting every reference: %v", files)
		}
		hearthtest.Expect(t, hs.Do(t, "DELETE", "/_synapse/admin/v1/media/"+s2+"/"+id2, admin, nil), http.StatusNotFound, "M_NOT_FOUND")
	})
}

func TestMediaQuarantine(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, admin := newMediaUser(t, hs, "alice", false), newMediaUser(t, hs, "admin", true)
		s, id := upload(t, hs, alice, "image/png", "", testPNG(t, 200, 100))
		path := "/_matrix/client/v1/media/download/" + s + "/" + id
		thumb := "/_matrix/client/v1/media/thumbnail/" + s + "/" + id + "?width=32&height=32&method=crop"
		hearthtest.Expect(t, hs.Do(t, "GET", thumb, alice, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_synapse/admin/v1/media/quarantine/"+s+"/"+id, alice, nil), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_synapse/admin/v1/media/quarantine/"+s+"/"+id, admin, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", path, alice, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", thumb, alice, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_synapse/admin/v1/media/unquarantine/"+s+"/"+id, admin, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", path, alice, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_synapse/admin/v1/media/quarantine/"+s+"/nosuchmedia", admin, nil), http.StatusNotFound, "M_NOT_FOUND")
	})
}

func TestMediaLimits(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) {
			c.MaxRequestBytes = 1 << 16
			c.MaxUploadBytes = 100_000
			c.MediaQuotaBytes = 150_000
			c.UserLimitInfoURI = "https://example.org/limits"
		})
		alice, bob := newMediaUser(t, hs, "alice", false), newMediaUser(t, hs, "bob", false)
		// Uploads are not bound by max_request_bytes...
		upload(t, hs, alice, "application/octet-stream", "", bytes.Repeat([]byte{1}, 90_000))
		// ...but by max_upload_bytes, with or without a Content-Length.
		r := rawDo(t, hs, "POST", "/_matrix/media/v3/upload", bob, "application/octet-stream", bytes.NewReader(make([]byte, 100_001)))
		hearthtest.Expect(t, r, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		r = rawDo(t, hs, "POST", "/_matrix/media/v3/upload", bob, "application/octet-stream", io.MultiReader(strings.NewReader(strings.Repeat("x", 100_001))))
		hearthtest.Expect(t, r, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		// A JSON body is still bound by max_request_bytes.
		r = rawDo(t, hs, "POST", "/_matrix/media/v1/create", bob, "application/json", bytes.NewReader(make([]byte, 1<<17)))
		hearthtest.Expect(t, r, http.StatusOK, "") // create ignores its body; the limit only stops reading
		// The quota: alice has 90 000 of 150 000 bytes.
		// Beyond it: M_USER_LIMIT_EXCEEDED (v1.18) with the configured
		// info_uri, whether the size is declared or found while streaming.
		r = rawDo(t, hs, "POST", "/_matrix/media/v3/upload", alice, "application/octet-stream", bytes.NewReader(make([]byte, 70_000)))
		hearthtest.Expect(t, r, http.StatusForbidden, "M_USER_LIMIT_EXCEEDED")
		if r.JSON["info_uri"] != "https://example.org/limits" {
			t.Errorf("info_uri: %s", r.Body)
		}
		r = rawDo(t, hs, "POST", "/_matrix/media/v3/upload", alice, "application/octet-stream", io.MultiReader(bytes.NewReader(make([]byte, 70_000))))
		hearthtest.Expect(t, r, http.StatusForbidden, "M_USER_LIMIT_EXCEEDED")
		upload(t, hs, alice, "application/octet-stream", "", make([]byte, 50_000))
		// Refused uploads leave no files behind.
		if files := mediaFiles(t, hs); len(files) != 2 {
			t.Fatalf("want the 2 accepted files on disk, found %v", files)
		}
		hearthtest.Expect(t, rawDo(t, hs, "POST", "/_matrix/media/v3/upload?filename=a%2Fb", bob, "text/plain", strings.NewReader("x")),
			http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestMediaUploadRateLimit(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) { c.RateLimits = "on" })
	alice := newMediaUser(t, hs, "alice", false)
	var last hearthtest.Response
	for i := 0; i < 30; i++ {
		last = rawDo(t, hs, "POST", "/_matrix/media/v3/upload", alice, "text/plain", strings.NewReader(fmt.Sprint(i)))
		if last.Status != http.StatusOK {
			break
		}
	}
	hearthtest.Expect(t, last, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	if ms, _ := last.JSON["retry_after_ms"].(float64); ms <= 0 {
		t.Errorf("retry_after_ms missing: %s", last.Body)
	}
}

func TestMediaIDsAreChecked(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newMediaUser(t, hs, "alice", false)
		upload(t, hs, alice, "text/plain", "", []byte("secret"))
		for _, p := range []string{
			"/_matrix/client/v1/media/download/hearth.test/..%2F..%2Fhearth.db",
			"/_matrix/client/v1/media/download/hearth.test/..",
			"/_matrix/client/v1/media/download/hearth.test/a.b",
			"/_matrix/client/v1/media/download/..%2F..%2F/abc",
			"/_matrix/client/v1/media/download/bad%20name!/abc",
			"/_matrix/client/v1/media/thumbnail/hearth.test/..%2Fx?width=32&height=32",
		} {
			r := hs.Do(t, "GET", p, alice, nil)
			if r.Status != http.StatusBadRequest && r.Status != http.StatusNotFound {
				t.Errorf("%s: %d %s", p, r.Status, r.Body)
			}
			if r.ErrCode() != "M_INVALID_PARAM" && r.ErrCode() != "M_NOT_FOUND" && r.ErrCode() != "M_UNRECOGNIZED" {
				t.Errorf("%s: errcode %s", p, r.ErrCode())
			}
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/download/hearth.test/..%2F..%2Fhearth.db", alice, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/download/hearth.test/unknownMedia", alice, nil), http.StatusNotFound, "M_NOT_FOUND")
		// Remote media of a server that cannot be reached: 502 (as Synapse).
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/download/elsewhere.example/abc", alice, nil), http.StatusBadGateway, "M_UNKNOWN")
		hearthtest.Expect(t, rawDo(t, hs, "PUT", "/_matrix/media/v3/upload/hearth.test/..%2Fx", alice, "text/plain", strings.NewReader("x")),
			http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestMediaAsyncUpload(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.MaxPendingMediaUploads = 2 })
		alice, bob := newMediaUser(t, hs, "alice", false), newMediaUser(t, hs, "bob", false)
		r := hs.Do(t, "POST", "/_matrix/media/v1/create", alice, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		s, id := splitMXC(t, r.JSON["content_uri"])
		if exp, _ := r.JSON["unused_expires_at"].(float64); int64(exp) <= time.Now().UnixMilli() {
			t.Fatalf("unused_expires_at %v is not in the future", r.JSON["unused_expires_at"])
		}
		dl := "/_matrix/client/v1/media/download/" + s + "/" + id
		hearthtest.Expect(t, hs.Do(t, "GET", dl+"?timeout_ms=0", alice, nil), http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/thumbnail/"+s+"/"+id+"?width=32&height=32&timeout_ms=0", alice, nil),
			http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")

		// A download waiting for the upload gets it when it lands.
		got := make(chan hearthtest.Response, 1)
		go func() { got <- hs.Do(t, "GET", dl+"?timeout_ms=10000", bob, nil) }()
		time.Sleep(200 * time.Millisecond)

		put := "/_matrix/media/v3/upload/" + s + "/" + id + "?filename=late.txt"
		hearthtest.Expect(t, rawDo(t, hs, "PUT", put, bob, "text/plain", strings.NewReader("not yours")), http.StatusForbidden, "M_FORBIDDEN")
		hearthtest.Expect(t, rawDo(t, hs, "PUT", put, alice, "text/plain", strings.NewReader("arrived")), http.StatusOK, "")
		r = <-got
		hearthtest.Expect(t, r, http.StatusOK, "")
		if string(r.Body) != "arrived" || !strings.Contains(r.Header.Get("Content-Disposition"), "late.txt") {
			t.Fatalf("waiting download got %q, %q", r.Body, r.Header.Get("Content-Disposition"))
		}
		hearthtest.Expect(t, rawDo(t, hs, "PUT", put, alice, "text/plain", strings.NewReader("again")), http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")
		hearthtest.Expect(t, rawDo(t, hs, "PUT", "/_matrix/media/v3/upload/"+s+"/neverCreated", alice, "text/plain", strings.NewReader("x")),
			http.StatusNotFound, "M_NOT_FOUND")

		// At most two pending IDs per user.
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/media/v1/create", alice, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/media/v1/create", alice, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/media/v1/create", alice, nil), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/media/v1/create", bob, nil), http.StatusOK, "")
	})
}

func TestMediaCreateExpires(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, func(c *config.Config) {
			c.MaxPendingMediaUploads = 1
			c.MediaCreateExpirySeconds = 1
		})
		alice := newMediaUser(t, hs, "alice", false)
		r := hs.Do(t, "POST", "/_matrix/media/v1/create", alice, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		s, id := splitMXC(t, r.JSON["content_uri"])
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/media/v1/create", alice, nil), http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		time.Sleep(1100 * time.Millisecond)
		hearthtest.Expect(t, rawDo(t, hs, "PUT", "/_matrix/media/v3/upload/"+s+"/"+id, alice, "text/plain", strings.NewReader("late")),
			http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/download/"+s+"/"+id, alice, nil), http.StatusNotFound, "M_NOT_FOUND")
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/media/v1/create", alice, nil), http.StatusOK, "")
	})
}

func decodeImage(t *testing.T, r hearthtest.Response) image.Image {
	t.Helper()
	img, _, err := image.Decode(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("thumbnail (%s) does not decode: %v", r.Header.Get("Content-Type"), err)
	}
	return img
}

func TestMediaThumbnails(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newMediaUser(t, hs, "alice", false)
		src := gradient(1000, 500)
		var pngBuf, jpegBuf, gifBuf bytes.Buffer
		if err := png.Encode(&pngBuf, src); err != nil {
			t.Fatal(err)
		}
		if err := jpeg.Encode(&jpegBuf, src, nil); err != nil {
			t.Fatal(err)
		}
		if err := gif.Encode(&gifBuf, src, nil); err != nil {
			t.Fatal(err)
		}
		cases := []struct {
			ctype    string
			body     []byte
			w, h     int // source size
			outCType string
		}{
			{"image/png", pngBuf.Bytes(), 1000, 500, "image/png"},
			{"image/jpeg", jpegBuf.Bytes(), 1000, 500, "image/jpeg"},
			{"image/gif", gifBuf.Bytes(), 1000, 500, "image/png"},
			{"image/webp", tinyWebP, 64, 32, "image/webp"}, // smaller than 96x96: the original
		}
		for _, c := range cases {
			s, id := upload(t, hs, alice, c.ctype, "", c.body)
			base := "/_matrix/client/v1/media/thumbnail/" + s + "/" + id
			// crop: exactly the configured square (or smaller than the source allows).
			r := hs.Do(t, "GET", base+"?width=90&height=90&method=crop", alice, nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			if r.Header.Get("Content-Type") != c.outCType {
				t.Errorf("%s crop: Content-Type %q, want %s", c.ctype, r.Header.Get("Content-Type"), c.outCType)
			}
			wantCrop := image.Pt(96, 96)
			if c.w <= 96 && c.h <= 96 {
				wantCrop = image.Pt(c.w, c.h)
			}
			if got := decodeImage(t, r).Bounds().Size(); got != wantCrop {
				t.Errorf("%s crop 96x96: got %v", c.ctype, got)
			}
			first := r.Body
			// scale: fits 320x240 keeping the 2:1 aspect, never upscaled.
			r = hs.Do(t, "GET", base+"?width=300&height=200&method=scale", alice, nil)
			hearthtest.Expect(t, r, http.StatusOK, "")
			want := image.Pt(320, 160)
			if c.w < 320 {
				want = image.Pt(c.w, c.h)
			}
			if got := decodeImage(t, r).Bounds().Size(); got != want {
				t.Errorf("%s scale 320x240: got %v, want %v", c.ctype, got, want)
			}
			// Cached: the same bytes again.
			r = hs.Do(t, "GET", base+"?width=90&height=90&method=crop", alice, nil)
			if !bytes.Equal(r.Body, first) {
				t.Errorf("%s: second crop differs from the first", c.ctype)
			}
		}
		// The four images plus two thumbnails each of the three large ones
		// (the small WebP is its own thumbnail).
		if n := len(mediaFiles(t, hs)); n != 4+3*2 {
			t.Errorf("%d files on disk, want 10 (each thumbnail made once)", n)
		}

		// A small image is served as it is: no upscaling.
		small := testPNG(t, 10, 10)
		s, id := upload(t, hs, alice, "image/png", "", small)
		r := hs.Do(t, "GET", "/_matrix/client/v1/media/thumbnail/"+s+"/"+id+"?width=640&height=480", alice, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if !bytes.Equal(r.Body, small) {
			t.Errorf("small image was re-encoded")
		}

		// Not an image, or not one we can read: 400, no crash.
		s, id = upload(t, hs, alice, "image/png", "", []byte("this is not a PNG at all"))
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/thumbnail/"+s+"/"+id+"?width=32&height=32", alice, nil), http.StatusBadRequest, "M_UNKNOWN")
		s, id = upload(t, hs, alice, "image/jpeg", "", pngBuf.Bytes()[:200])
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/thumbnail/"+s+"/"+id+"?width=32&height=32", alice, nil), http.StatusBadRequest, "M_UNKNOWN")
		s, id = upload(t, hs, alice, "text/plain", "", []byte("hello"))
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/thumbnail/"+s+"/"+id+"?width=32&height=32", alice, nil), http.StatusBadRequest, "M_UNKNOWN")

		// Bad parameters.
		base := "/_matrix/client/v1/media/thumbnail/" + s + "/" + id
		hearthtest.Expect(t, hs.Do(t, "GET", base+"?height=32", alice, nil), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, hs.Do(t, "GET", base+"?width=-1&height=32", alice, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "GET", base+"?width=32&height=32&method=stretch", alice, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "GET", base+"?width=32&height=32&animated=maybe", alice, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/thumbnail/hearth.test/nothing?width=32&height=32", alice, nil), http.StatusNotFound, "M_NOT_FOUND")
	})
}

// bombPNG is a valid PNG header (signature and IHDR with a correct CRC)
// claiming 100000x100000 pixels, followed by garbage: decoding it would
// need 40 GB.
func bombPNG(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, image.NewGray(image.Rect(0, 0, 1, 1))); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	// IHDR data starts at 16: width, height as big-endian uint32.
	copy(b[16:24], []byte{0, 1, 0x86, 0xa0, 0, 1, 0x86, 0xa0})
	crc := crc32.ChecksumIEEE(b[12:29])
	copy(b[29:33], []byte{byte(crc >> 24), byte(crc >> 16), byte(crc >> 8), byte(crc)})
	return b
}

func TestMediaThumbnailDecompressionBomb(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice := newMediaUser(t, hs, "alice", false)
		bomb := bombPNG(t)
		if cfg, err := png.DecodeConfig(bytes.NewReader(bomb)); err != nil || cfg.Width != 100000 {
			t.Fatalf("test bomb is not a valid header: %v %v", cfg, err)
		}
		s, id := upload(t, hs, alice, "image/png", "", bomb)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		start := time.Now()
		r := hs.Do(t, "GET", "/_matrix/client/v1/media/thumbnail/"+s+"/"+id+"?width=32&height=32&method=crop", alice, nil)
		hearthtest.Expect(t, r, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		runtime.ReadMemStats(&after)
		if grew := int64(after.TotalAlloc) - int64(before.TotalAlloc); grew > 100<<20 {
			t.Errorf("refusing the bomb allocated %d MB", grew>>20)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("refusing the bomb took %v", d)
		}
	})
}

func TestLegacyMediaEndpoints(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		for _, mode := range []string{config.LegacyMediaOff, config.LegacyMediaBeforeSwitch, config.LegacyMediaOn} {
			t.Run(mode, func(t *testing.T) {
				hs := hearthtest.NewServer(t, b, func(c *config.Config) { c.LegacyMedia = mode })
				alice := newMediaUser(t, hs, "alice", false)
				body := testPNG(t, 100, 100)
				sOld, idOld := upload(t, hs, alice, "image/png", "old.png", body)
				sNew, idNew := upload(t, hs, alice, "image/png", "new.png", body)
				// Pretend the first upload predates the freeze, as on a
				// server upgraded to Hearth's media freeze.
				err := hs.DB.WriteTx(context.Background(), func(tx *sql.Tx) error {
					_, err := tx.Exec("UPDATE media SET created_ts = created_ts - 86400000 WHERE media_id = $1", idOld)
					return err
				})
				if err != nil {
					t.Fatal(err)
				}
				dl := func(s, id string) hearthtest.Response {
					return hs.Do(t, "GET", "/_matrix/media/v3/download/"+s+"/"+id, "", nil)
				}
				th := func(s, id string) hearthtest.Response {
					return hs.Do(t, "GET", "/_matrix/media/v3/thumbnail/"+s+"/"+id+"?width=32&height=32&method=crop", "", nil)
				}
				wantOld, wantNew := http.StatusNotFound, http.StatusNotFound
				switch mode {
				case config.LegacyMediaBeforeSwitch:
					wantOld = http.StatusOK
				case config.LegacyMediaOn:
					wantOld, wantNew = http.StatusOK, http.StatusOK
				}
				for _, c := range []struct {
					r    hearthtest.Response
					want int
				}{{dl(sOld, idOld), wantOld}, {th(sOld, idOld), wantOld}, {dl(sNew, idNew), wantNew}, {th(sNew, idNew), wantNew}} {
					code := ""
					if c.want == http.StatusNotFound {
						code = "M_NOT_FOUND"
					}
					hearthtest.Expect(t, c.r, c.want, code)
				}
				if wantOld == http.StatusOK {
					r := hs.Do(t, "GET", "/_matrix/media/v3/download/"+sOld+"/"+idOld+"/other.png", "", nil)
					if !bytes.Equal(r.Body, body) || !strings.Contains(r.Header.Get("Content-Disposition"), "other.png") {
						t.Errorf("legacy download with file name: %d %q", r.Status, r.Header.Get("Content-Disposition"))
					}
				}
				// The authenticated endpoints serve everything regardless.
				hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/download/"+sNew+"/"+idNew, alice, nil), http.StatusOK, "")
			})
		}
	})
}

// pageServer serves an Open Graph page and its image on addr, counting hits.
func pageServer(t *testing.T, addr string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	hits := &atomic.Int32{}
	img := testPNG(t, 60, 40)
	mux := http.NewServeMux()
	mux.HandleFunc("/page.html", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<html><head><title>Fallback</title>
<meta property="og:title" content="The Title" />
<meta property="og:description" content="A description" />
<meta property="og:type" content="article" />
<meta property="og:image" content="/img.png" /></head><body>hi</body></html>`)
	})
	mux.HandleFunc("/img.png", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(img)
	})
	mux.HandleFunc("/plain.html", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprint(w, `<html><head><title> Just a title </title><meta name="description" content="desc"></head></html>`)
	})
	srv := httptest.NewUnstartedServer(mux)
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot listen on %s: %v", addr, err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, hits
}

func TestURLPreview(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		page, hits := pageServer(t, "127.0.0.1:0")
		hs := hearthtest.NewServer(t, b, func(c *config.Config) {
			c.URLPreview = true
			c.URLPreviewAllowCIDRs = []string{"127.0.0.1/32"}
		})
		alice := newMediaUser(t, hs, "alice", false)
		preview := "/_matrix/client/v1/media/preview_url?url=" + url.QueryEscape(page.URL+"/page.html")
		r := hs.Do(t, "GET", preview, alice, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		for k, v := range map[string]any{"og:title": "The Title", "og:description": "A description", "og:type": "article",
			"og:image:width": float64(60), "og:image:height": float64(40), "og:image:type": "image/png"} {
			if r.JSON[k] != v {
				t.Errorf("%s = %v, want %v (%s)", k, r.JSON[k], v, r.Body)
			}
		}
		s, id := splitMXC(t, r.JSON["og:image"])
		img := hs.Do(t, "GET", "/_matrix/client/v1/media/download/"+s+"/"+id, alice, nil)
		hearthtest.Expect(t, img, http.StatusOK, "")
		if r.JSON["matrix:image:size"] != float64(len(img.Body)) {
			t.Errorf("matrix:image:size %v, image has %d bytes", r.JSON["matrix:image:size"], len(img.Body))
		}
		// Cached: the page is not fetched again.
		hearthtest.Expect(t, hs.Do(t, "GET", preview+"&ts=1", alice, nil), http.StatusOK, "")
		if hits.Load() != 1 {
			t.Errorf("page fetched %d times, want 1 (cached)", hits.Load())
		}
		r = hs.Do(t, "GET", "/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(page.URL+"/plain.html"), alice, nil)
		hearthtest.Expect(t, r, http.StatusOK, "")
		if r.JSON["og:title"] != "Just a title" || r.JSON["og:description"] != "desc" || r.JSON["og:image"] != nil {
			t.Errorf("fallback preview: %s", r.Body)
		}
		// The legacy path works too (it always needed a token).
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/media/v3/preview_url?url="+url.QueryEscape(page.URL+"/page.html"), alice, nil), http.StatusOK, "")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/preview_url?url=ftp://x/y", alice, nil), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/preview_url", alice, nil), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, hs.Do(t, "GET", preview, "", nil), http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}

func TestURLPreviewRefusesInternalAddresses(t *testing.T) {
	page, hits := pageServer(t, "127.0.0.1:0")
	// Without an allow-list, loopback is refused...
	hs := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) { c.URLPreview = true })
	alice := newMediaUser(t, hs, "alice", false)
	for _, target := range []string{page.URL + "/page.html", fmt.Sprintf("http://localhost:%d/page.html", page.Listener.Addr().(*net.TCPAddr).Port),
		"http://[::1]:1/", "http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/", "http://100.64.0.1/", "http://0.0.0.0:1/"} {
		r := hs.Do(t, "GET", "/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(target), alice, nil)
		hearthtest.Expect(t, r, http.StatusForbidden, "M_FORBIDDEN")
	}
	if hits.Load() != 0 {
		t.Fatalf("an internal page was fetched %d times", hits.Load())
	}

	// ...and an allowed address cannot redirect to a refused one.
	inner, innerHits := pageServer(t, "127.0.0.2:0")
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, inner.URL+"/page.html", http.StatusFound)
	})
	outer := httptest.NewServer(mux)
	defer outer.Close()
	hs = hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) {
		c.URLPreview = true
		c.URLPreviewAllowCIDRs = []string{"127.0.0.1/32"}
	})
	alice = newMediaUser(t, hs, "alice", false)
	r := hs.Do(t, "GET", "/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(outer.URL+"/go"), alice, nil)
	hearthtest.Expect(t, r, http.StatusForbidden, "M_FORBIDDEN")
	if innerHits.Load() != 0 {
		t.Fatal("the redirect target was fetched")
	}

	// Off (the default): the endpoint does not exist.
	hs = hearthtest.NewServer(t, hearthtest.SQLite, nil)
	alice = newMediaUser(t, hs, "alice", false)
	hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(page.URL), alice, nil), http.StatusNotFound, "M_UNRECOGNIZED")
}
