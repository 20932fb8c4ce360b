package media

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"image"
	_ "image/gif" // registers GIF; image.Decode returns its first frame
	"image/jpeg"
	"image/png"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp" // registers WebP with image.Decode

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Thumbnailing (client-server API, Thumbnails). Only the configured sizes
// are ever made, each once per media item and cached (row and file), so a
// client cannot make the server render arbitrary sizes. Images are checked
// with image.DecodeConfig before decoding, and refused above
// max_thumbnail_pixels, so a small file that claims to be huge costs no
// memory. At most two thumbnails are rendered at a time.

// thumbnailable are the content types we can decode; the bytes are sniffed
// anyway, the type only saves opening files that cannot be images.
var thumbnailable = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// ThumbnailRequest is what a client asks for.
type ThumbnailRequest struct {
	Width, Height int
	Method        string // crop or scale
	Animated      bool
}

// pickSize chooses the configured size for a request: the smallest one of
// the requested method that is at least as large as asked, else the largest
// of that method; sizes of the other method only when there are none.
func (r *Repository) pickSize(req ThumbnailRequest) (config.ThumbnailSize, bool) {
	var best config.ThumbnailSize
	found := false
	for _, pass := range []bool{true, false} {
		for _, s := range r.thumbSizes {
			if (s.Method == req.Method) != pass {
				continue
			}
			fits := s.Width >= req.Width && s.Height >= req.Height
			bestFits := found && best.Width >= req.Width && best.Height >= req.Height
			switch {
			case !found:
			case fits && !bestFits:
			case fits && bestFits && s.Width*s.Height < best.Width*best.Height:
			case !fits && !bestFits && s.Width*s.Height > best.Width*best.Height:
			default:
				continue
			}
			best, found = s, true
		}
		if found {
			return best, true
		}
	}
	return best, false
}

// Thumbnail opens (making it first if needed) a thumbnail of media.
func (r *Repository) Thumbnail(ctx context.Context, serverName, mediaID string, req ThumbnailRequest, wait time.Duration) (Content, error) {
	if req.Width < 1 || req.Height < 1 {
		return Content{}, mxhttp.InvalidParam("width and height must be positive integers")
	}
	if req.Method != "crop" && req.Method != "scale" {
		return Content{}, mxhttp.InvalidParam("method must be crop or scale")
	}
	m, err := r.lookup(ctx, serverName, mediaID, wait)
	if err != nil {
		return Content{}, err
	}
	if !thumbnailable[mediaType(m.ContentType)] {
		return Content{}, mxhttp.Unknown("Cannot generate thumbnails for content of type %q", m.ContentType)
	}
	size, ok := r.pickSize(req)
	if !ok {
		return Content{}, mxhttp.Unknown("Thumbnails are disabled on this server")
	}
	// GIF is the only format we can animate; for the others animated=true
	// means the same as false (spec: behave as though animated is false).
	animated := req.Animated && mediaType(m.ContentType) == "image/gif"
	th, err := r.db.GetThumbnail(ctx, serverName, mediaID, size.Width, size.Height, size.Method, animated)
	if errors.Is(err, storage.ErrNotFound) {
		key := fmt.Sprintf("%s/%s/%dx%d/%s/%t", serverName, mediaID, size.Width, size.Height, size.Method, animated)
		var v any
		// Detached from this request: others may be waiting on the same render.
		renderCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		v, err, _ = r.thumbFlight.Do(key, func() (any, error) { return r.makeThumbnail(renderCtx, m, size, animated) })
		cancel()
		if err == nil {
			th = v.(storage.Thumbnail)
		}
	}
	if err != nil {
		return Content{}, err
	}
	f, err := r.files.open(th.SHA256)
	if err != nil {
		return Content{}, fmt.Errorf("opening thumbnail file: %w", err)
	}
	return Content{Media: m, ContentType: th.ContentType, File: f}, nil
}

func mediaType(contentType string) string {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// makeThumbnail renders, stores and records one thumbnail.
func (r *Repository) makeThumbnail(ctx context.Context, m storage.Media, size config.ThumbnailSize, animated bool) (storage.Thumbnail, error) {
	select {
	case r.thumbSem <- struct{}{}:
		defer func() { <-r.thumbSem }()
	case <-ctx.Done():
		return storage.Thumbnail{}, ctx.Err()
	}
	th := storage.Thumbnail{ServerName: m.ServerName, MediaID: m.MediaID, Width: size.Width, Height: size.Height,
		Method: size.Method, Animated: animated, CreatedTS: time.Now().UnixMilli()}
	src, err := r.files.open(m.SHA256)
	if err != nil {
		return th, fmt.Errorf("opening media file: %w", err)
	}
	defer src.Close()
	cfg, format, err := image.DecodeConfig(src)
	if err != nil {
		return th, mxhttp.Unknown("The content is not an image we can thumbnail")
	}
	if int64(cfg.Width)*int64(cfg.Height) > r.maxPixels || cfg.Width < 1 || cfg.Height < 1 {
		return th, mxhttp.TooLarge("Image of %dx%d pixels is too large to thumbnail", cfg.Width, cfg.Height)
	}
	// Small enough already: serve the original rather than re-encode it
	// (spec: never upscale; return the original content). Not for a GIF
	// when no animation is wanted: then its first frame is re-encoded.
	fits := cfg.Width <= size.Width && cfg.Height <= size.Height
	if fits && (format != "gif" || animated) {
		th.ContentType, th.Size, th.SHA256 = "image/"+format, m.Size, m.SHA256
		err := r.db.WriteTx(ctx, func(tx *sql.Tx) error { return storage.InsertThumbnail(ctx, tx, th) })
		return th, err
	}
	if _, err := src.Seek(0, io.SeekStart); err != nil {
		return th, fmt.Errorf("rewinding media file: %w", err)
	}
	img, err := decodeImage(src)
	if err != nil {
		return th, mxhttp.Unknown("The content is not an image we can thumbnail")
	}
	out := resize(img, size)
	var buf bytes.Buffer
	if format == "jpeg" {
		th.ContentType = "image/jpeg"
		err = jpeg.Encode(&buf, out, &jpeg.Options{Quality: 80})
	} else {
		th.ContentType = "image/png" // keeps transparency
		err = png.Encode(&buf, out)
	}
	if err != nil {
		return th, fmt.Errorf("encoding thumbnail: %w", err)
	}
	t, err := r.files.receive(&buf, int64(buf.Len()))
	if err != nil {
		return th, err
	}
	th.Size, th.SHA256 = t.size, t.sha
	err = r.commit(ctx, t, func(tx *sql.Tx) error { return storage.InsertThumbnail(ctx, tx, th) })
	return th, err
}

// decodeImage decodes the first frame, turning a decoder panic on hostile
// input into an error.
func decodeImage(f *os.File) (img image.Image, err error) {
	defer func() {
		if p := recover(); p != nil {
			img, err = nil, fmt.Errorf("image decoder panic: %v", p)
		}
	}()
	img, _, err = image.Decode(f)
	return img, err
}

// resize renders img for a configured size, never upscaling. scale fits the
// whole image within the size keeping its aspect; crop takes the centred
// region of the size's aspect and scales it to the size (or, when the image
// is smaller, crops at 1:1).
func resize(img image.Image, size config.ThumbnailSize) image.Image {
	b := img.Bounds()
	sw, sh := b.Dx(), b.Dy()
	srcRect := b
	var dw, dh int
	if size.Method == "scale" {
		ratio := min(float64(size.Width)/float64(sw), float64(size.Height)/float64(sh), 1)
		dw, dh = max(1, int(float64(sw)*ratio+0.5)), max(1, int(float64(sh)*ratio+0.5))
	} else {
		cw, ch := sw, int(int64(sw)*int64(size.Height)/int64(size.Width))
		if ch > sh {
			cw, ch = int(int64(sh)*int64(size.Width)/int64(size.Height)), sh
		}
		cw, ch = max(cw, 1), max(ch, 1)
		x0, y0 := b.Min.X+(sw-cw)/2, b.Min.Y+(sh-ch)/2
		srcRect = image.Rect(x0, y0, x0+cw, y0+ch)
		dw, dh = min(size.Width, cw), min(size.Height, ch)
	}
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	draw.BiLinear.Scale(dst, dst.Bounds(), img, srcRect, draw.Src, nil)
	return dst
}
