package federation_test

import (
	"bytes"
	"encoding/json"
	"image"
	"image/color"
	"image/png"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

func testImage(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for x := 0; x < 64; x++ {
		for y := 0; y < 48; y++ {
			img.Set(x, y, color.RGBA{uint8(x * 4), uint8(y * 5), 99, 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// rawGet fetches a client API path and returns status, headers and body.
func (u fedUser) rawDo(t *testing.T, method, path, contentType string, body []byte) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u.hs.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+u.token)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header, b
}

func (u fedUser) upload(t *testing.T, contentType, filename string, body []byte) string {
	t.Helper()
	status, _, b := u.rawDo(t, "POST", "/_matrix/media/v3/upload?filename="+filename, contentType, body)
	if status != http.StatusOK {
		t.Fatalf("upload: %d %s", status, b)
	}
	var res struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return strings.TrimPrefix(res.ContentURI, "mxc://")
}

// Media uploaded on A is downloaded and thumbnailed by a user on B, through
// the federation media endpoints, and cached on B.
func TestRemoteMedia(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		img := testImage(t)
		mxc := alice.upload(t, "image/png", "pic.png", img)

		status, h, body := bob.rawDo(t, "GET", "/_matrix/client/v1/media/download/"+mxc, "", nil)
		if status != http.StatusOK || !bytes.Equal(body, img) {
			t.Fatalf("download through B: %d, %d bytes", status, len(body))
		}
		if h.Get("Content-Type") != "image/png" || !strings.Contains(h.Get("Content-Disposition"), "pic.png") {
			t.Fatalf("headers: %v", h)
		}
		status, h, body = bob.rawDo(t, "GET", "/_matrix/client/v1/media/thumbnail/"+mxc+"?width=32&height=32&method=scale", "", nil)
		if status != http.StatusOK {
			t.Fatalf("thumbnail through B: %d %s", status, body)
		}
		if _, _, err := image.Decode(bytes.NewReader(body)); err != nil {
			t.Fatalf("thumbnail is not an image (%s): %v", h.Get("Content-Type"), err)
		}
		// Cached: B serves it with A down.
		fed[0].FederationDown(t)
		status, _, body = bob.rawDo(t, "GET", "/_matrix/client/v1/media/download/"+mxc, "", nil)
		if status != http.StatusOK || !bytes.Equal(body, img) {
			t.Fatalf("cached download: %d, %d bytes", status, len(body))
		}
	})
}

// Unknown remote media is 404 M_NOT_FOUND.
func TestRemoteMediaNotFound(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		bob := newFedUser(t, fed[1], "bob")
		status, _, body := bob.rawDo(t, "GET", "/_matrix/client/v1/media/download/"+fed[0].Config.ServerName+"/nosuchmedia", "", nil)
		if status != http.StatusNotFound || !strings.Contains(string(body), "M_NOT_FOUND") {
			t.Fatalf("got %d %s", status, body)
		}
	})
}

// A server without the federation media endpoints is asked through its
// legacy /_matrix/media/v3/download.
func TestRemoteMediaLegacyFallback(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, func(i int, cfg *config.Config) { cfg.LegacyMedia = config.LegacyMediaOn })
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		img := testImage(t)
		mxc := alice.upload(t, "image/png", "old.png", img)
		fed[0].WrapFederation(func(fedH, client http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch {
				case strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/media/"):
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusNotFound)
					_, _ = w.Write([]byte(`{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`))
				case strings.HasPrefix(r.URL.Path, "/_matrix/media/"):
					client.ServeHTTP(w, r)
				default:
					fedH.ServeHTTP(w, r)
				}
			})
		})
		status, _, body := bob.rawDo(t, "GET", "/_matrix/client/v1/media/download/"+mxc, "", nil)
		if status != http.StatusOK || !bytes.Equal(body, img) {
			t.Fatalf("download through the legacy endpoint: %d %s", status, body)
		}
	})
}

// Remote media over max_upload_bytes is refused while streaming.
func TestRemoteMediaTooLarge(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, func(i int, cfg *config.Config) {
			if i == 1 {
				cfg.MaxUploadBytes = 1000
			}
		})
		alice, bob := newFedUser(t, fed[0], "alice"), newFedUser(t, fed[1], "bob")
		mxc := alice.upload(t, "application/octet-stream", "big.bin", bytes.Repeat([]byte("x"), 5000))
		status, _, body := bob.rawDo(t, "GET", "/_matrix/client/v1/media/download/"+mxc, "", nil)
		if status != http.StatusBadGateway || !strings.Contains(string(body), "M_TOO_LARGE") {
			t.Fatalf("got %d %s", status, body)
		}
	})
}
