package media

import (
	"mime"
	"net/http"
	"strings"
)

// inlineTypes are the content types the spec lists as safe to serve with
// Content-Disposition: inline (Serving inline content). Everything else,
// SVG and HTML included, is an attachment.
var inlineTypes = map[string]bool{
	"text/css": true, "text/plain": true, "text/csv": true, "application/json": true, "application/ld+json": true,
	"image/jpeg": true, "image/gif": true, "image/png": true, "image/apng": true, "image/webp": true, "image/avif": true,
	"video/mp4": true, "video/webm": true, "video/ogg": true, "video/quicktime": true,
	"audio/mp4": true, "audio/webm": true, "audio/aac": true, "audio/mpeg": true, "audio/ogg": true,
	"audio/wave": true, "audio/wav": true, "audio/x-wav": true, "audio/x-pn-wav": true, "audio/flac": true, "audio/x-flac": true,
}

// contentSecurityPolicy is the spec's recommended policy plus media-src,
// so that audio and video open directly still play.
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; " +
	"style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"

// Inline reports whether content of this type may be shown inline. Case and
// parameters do not matter ("Text/Plain; charset=utf-8" is text/plain).
func Inline(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && inlineTypes[strings.ToLower(mt)]
}

// SetServeHeaders sets the headers that make served media safe in a
// browser: the type as uploaded (trusted only because the disposition
// follows from it), inline or attachment with the file name (RFC 6266,
// non-ASCII names as filename*=utf-8”...), a sandboxing CSP, nosniff, and
// Cross-Origin-Resource-Policy so web clients can embed it.
func SetServeHeaders(h http.Header, contentType, filename string) {
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	disposition := "attachment"
	if Inline(contentType) {
		disposition = "inline"
	}
	if filename != "" {
		if d := mime.FormatMediaType(disposition, map[string]string{"filename": filename}); d != "" {
			disposition = d
		}
	}
	h.Set("Content-Type", contentType)
	h.Set("Content-Disposition", disposition)
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Resource-Policy", "cross-origin")
	h.Set("Cache-Control", "private, max-age=86400")
}
