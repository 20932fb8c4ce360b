package media

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/net/html"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/netguard"
	"github.com/hearth-matrix/hearth/ratelimit"
	"github.com/hearth-matrix/hearth/storage"
)

// URL previews (GET /_matrix/client/v1/media/preview_url). The server
// fetches what users point it at, so it must not become a way into the
// network behind it: every connection, including each redirect hop and
// whatever a name resolves to at that moment, goes through a dialer whose
// Control hook refuses internal addresses (loopback, private, link-local,
// CGNAT, multicast, unspecified, reserved) unless url_preview_allow_cidrs
// lets them through. No proxy from the environment is used.

const (
	previewMaxHTML  = 1 << 20 // bytes of a page read for its Open Graph tags
	previewMaxImage = 10 << 20
	previewTimeout  = 20 * time.Second
	previewCacheFor = time.Hour
	previewRedirs   = 5
)

type previewer struct {
	r      *Repository
	client *http.Client
	limits *ratelimit.Limiter
}

func newPreviewer(r *Repository, allowCIDRs []string) (*previewer, error) {
	p := &previewer{r: r, limits: ratelimit.New(0.5, 10)}
	guard, err := netguard.New(allowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("url_preview_allow_cidrs: %w", err)
	}
	dialer := guard.Dialer(10 * time.Second)
	transport := &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		MaxIdleConns:          10,
		IdleConnTimeout:       30 * time.Second,
	}
	p.client = &http.Client{
		Transport: transport,
		Timeout:   previewTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= previewRedirs {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %s URL", req.URL.Scheme)
			}
			return nil
		},
	}
	return p, nil
}

// Preview returns the Open Graph data of a URL for user, from the cache
// when it was fetched within the last hour (ts, the client's preferred
// time, may be answered with a newer version, as the spec allows).
func (r *Repository) Preview(ctx context.Context, user, rawURL string) (map[string]any, error) {
	p := r.preview.Load()
	if p == nil {
		return nil, mxhttp.Unrecognized("URL previews are disabled on this server")
	}
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(rawURL) > 2048 {
		return nil, mxhttp.InvalidParam("url must be an absolute http or https URL")
	}
	u.Fragment = ""
	key := u.String()
	now := time.Now()
	if og, err := r.db.GetURLPreview(ctx, key, now.Add(-previewCacheFor).UnixMilli()); err == nil {
		var out map[string]any
		if err := json.Unmarshal([]byte(og), &out); err == nil {
			return out, nil
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if r.rateLimits.Load() {
		if ok, wait := p.limits.Allow(user); !ok {
			return nil, mxhttp.LimitExceeded("Too many URL previews").With("retry_after_ms", wait.Milliseconds())
		}
	}
	og, err := p.fetch(ctx, key)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(og)
	if err != nil {
		return nil, fmt.Errorf("encoding preview: %w", err)
	}
	err = r.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.InsertURLPreview(ctx, tx, key, now.UnixMilli(), string(b)) })
	return og, err
}

// get fetches a URL with the guarded client and returns the response with
// its body limited to limit bytes.
func (p *previewer) get(ctx context.Context, target string) (*http.Response, error) {
	ctx, cancel := context.WithTimeout(ctx, previewTimeout)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		cancel()
		return nil, mxhttp.InvalidParam("Invalid URL")
	}
	req.Header.Set("User-Agent", "Hearth URL preview (Matrix homeserver)")
	req.Header.Set("Accept", "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5")
	resp, err := p.client.Do(req)
	if err != nil {
		cancel()
		if errors.Is(err, netguard.ErrBlocked) {
			return nil, mxhttp.Forbidden("URL previews of non-public addresses are not allowed")
		}
		return nil, &mxhttp.Error{Status: http.StatusBadGateway, ErrCode: "M_UNKNOWN", Message: "Could not fetch the URL"}
	}
	resp.Body = cancelOnClose{resp.Body, cancel}
	if resp.StatusCode/100 != 2 {
		resp.Body.Close()
		return nil, &mxhttp.Error{Status: http.StatusBadGateway, ErrCode: "M_UNKNOWN",
			Message: fmt.Sprintf("The URL answered with status %d", resp.StatusCode)}
	}
	return resp, nil
}

type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// fetch builds the preview of one URL: the Open Graph tags of an HTML page
// (with og:image stored as media), or an image stored as media itself.
func (p *previewer) fetch(ctx context.Context, target string) (map[string]any, error) {
	resp, err := p.get(ctx, target)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	ctype, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	og := map[string]any{}
	switch {
	case strings.HasPrefix(ctype, "image/"):
		if err := p.storeImage(ctx, og, resp.Body, ctype, resp.Request.URL); err != nil {
			return nil, err
		}
		og["og:url"] = target
	case ctype == "text/html" || ctype == "application/xhtml+xml":
		tags := parseOpenGraph(io.LimitReader(resp.Body, previewMaxHTML))
		for k, v := range tags {
			og[k] = v
		}
		if img, ok := tags["og:image"]; ok {
			delete(og, "og:image")
			if ref, err := resp.Request.URL.Parse(img); err == nil && (ref.Scheme == "http" || ref.Scheme == "https") {
				p.fetchImage(ctx, og, ref.String())
			}
		}
	}
	return og, nil
}

// fetchImage adds a page's og:image to og; a failure only leaves it out.
func (p *previewer) fetchImage(ctx context.Context, og map[string]any, target string) {
	resp, err := p.get(ctx, target)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	ctype, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if !strings.HasPrefix(ctype, "image/") {
		return
	}
	_ = p.storeImage(ctx, og, resp.Body, ctype, resp.Request.URL)
}

// storeImage saves a fetched image as server-owned media and describes it
// in og (og:image as mxc, type, size, dimensions when decodable).
func (p *previewer) storeImage(ctx context.Context, og map[string]any, body io.Reader, ctype string, from *url.URL) error {
	limit := min(int64(previewMaxImage), p.r.maxUpload)
	t, err := p.r.files.receive(body, limit)
	if errors.Is(err, errTooLarge) {
		return nil // previews simply go without an image that large
	}
	if err != nil {
		return fmt.Errorf("fetching preview image: %w", err)
	}
	now := time.Now().UnixMilli()
	filename := ""
	if i := strings.LastIndexByte(from.Path, '/'); i >= 0 {
		filename = from.Path[i+1:]
	}
	m := storage.Media{ServerName: p.r.serverName, MediaID: newMediaID(), ContentType: ctype, Filename: filename,
		Size: t.size, SHA256: t.sha, CreatedTS: now, UploadedTS: now}
	if len(filename) > 255 {
		m.Filename = ""
	}
	if err := p.r.commit(ctx, t, func(tx *sql.Tx) error { return storage.InsertMedia(ctx, tx, m) }); err != nil {
		return err
	}
	og["og:image"] = MXC(m.ServerName, m.MediaID)
	og["og:image:type"] = ctype
	og["matrix:image:size"] = m.Size
	if f, err := p.r.files.open(m.SHA256); err == nil {
		if cfg, _, err := image.DecodeConfig(f); err == nil {
			og["og:image:width"], og["og:image:height"] = cfg.Width, cfg.Height
		}
		f.Close()
	}
	return nil
}

// parseOpenGraph collects og:* meta tags, falling back to <title> and the
// description meta tag for og:title and og:description.
func parseOpenGraph(r io.Reader) map[string]string {
	out := map[string]string{}
	var title, description string
	z := html.NewTokenizer(r)
	inTitle := false
	for {
		switch z.Next() {
		case html.ErrorToken:
			if _, ok := out["og:title"]; !ok && title != "" {
				out["og:title"] = title
			}
			if _, ok := out["og:description"]; !ok && description != "" {
				out["og:description"] = description
			}
			return out
		case html.StartTagToken, html.SelfClosingTagToken:
			tok := z.Token()
			switch tok.Data {
			case "title":
				inTitle = title == ""
			case "meta":
				var prop, name, content string
				for _, a := range tok.Attr {
					switch strings.ToLower(a.Key) {
					case "property":
						prop = a.Val
					case "name":
						name = strings.ToLower(a.Val)
					case "content":
						content = a.Val
					}
				}
				if strings.HasPrefix(prop, "og:") && len(out) < 50 {
					if _, dup := out[prop]; !dup {
						out[prop] = truncate(content, 1000)
					}
				}
				if name == "description" && description == "" {
					description = truncate(content, 1000)
				}
			}
		case html.TextToken:
			if inTitle {
				title = truncate(strings.TrimSpace(string(bytes.TrimSpace(z.Text()))), 1000)
				inTitle = false
			}
		case html.EndTagToken:
			inTitle = false
		}
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }
