package mxhttp

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
)

// Request body limits. Every request body passes Common, which puts it
// under a limit: the server's default for the request (max_request_bytes
// for JSON endpoints; see homeserver.bodyLimit). A route may set its own
// with the LimitBody middleware (the route table names it per route), and a
// handler with ReadBody. Either way:
//
//   - a Content-Length over the limit is refused with 413 M_TOO_LARGE
//     before a byte of the body is read (LimitBody answers at once, before
//     the handler; otherwise the first Read fails);
//   - a body without one (chunked) is cut off when it passes the limit, so
//     a reader never holds more than the limit (plus one read buffer);
//   - a body that breaks off for another reason (the client went away mid
//     request, a malformed chunk) reads as a *BodyReadError, which
//     WriteError answers as a client failure, not an internal error.
//
// A limit is set before the body is read; once reading began it is fixed.

// MaxEventContentBytes bounds the content of an event a client sends: the
// whole event must fit the spec's PDU size limit of 65536 bytes
// (server-server API, Size limits), so content cannot be larger.
const MaxEventContentBytes = 65536

// BodyReadError is a failure to read the request body other than its size
// limit: the client went away or sent a malformed body. It is the client's
// failure, never a 500.
type BodyReadError struct{ Err error }

func (e *BodyReadError) Error() string { return "reading the request body: " + e.Err.Error() }
func (e *BodyReadError) Unwrap() error { return e.Err }

// body is a request body under a limit (0: none). The limit is applied on
// the first Read, so it can be changed until then.
type body struct {
	orig   io.ReadCloser
	w      http.ResponseWriter // the server's writer: MaxBytesReader tells it to close the connection after a refused body
	length int64               // Content-Length, -1 when unknown
	limit  int64
	r      io.Reader // orig under limit, from the first Read on
	over   bool      // a Read failed for the limit
}

func (b *body) Read(p []byte) (int, error) {
	if b.r == nil {
		if b.limit > 0 && b.length > b.limit {
			b.over = true
			return 0, &http.MaxBytesError{Limit: b.limit}
		}
		b.r = b.orig
		if b.limit > 0 {
			b.r = http.MaxBytesReader(b.w, b.orig, b.limit)
		}
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			b.over = true
		} else {
			err = &BodyReadError{Err: err}
		}
	}
	return n, err
}

// BodyTooLarge is 413 M_TOO_LARGE when reading r's body failed because it
// passed its limit, else nil. WriteError answers with it whatever error a
// handler returned then: code that read the body may not say why it
// failed (X-Matrix verification calls it malformed).
func BodyTooLarge(r *http.Request) error {
	if b, ok := r.Body.(*body); ok && b.over {
		return tooLarge(b.limit)
	}
	return nil
}

func (b *body) Close() error { return b.orig.Close() }

// limitBody puts r's body under limit n (0: none); w is the writer the
// server gave the handler, or nil. It fails with 413 M_TOO_LARGE when the
// declared Content-Length is over n, without reading anything.
func limitBody(w http.ResponseWriter, r *http.Request, n int64) error {
	if r.Body == nil || r.Body == http.NoBody {
		return nil
	}
	b, ok := r.Body.(*body)
	switch {
	case !ok:
		b = &body{orig: r.Body, w: w, length: r.ContentLength}
		r.Body = b
	case b.r != nil:
		return errors.New("mxhttp: request body limit changed after reading began")
	}
	b.limit = n
	if n > 0 && r.ContentLength > n {
		return tooLarge(n)
	}
	return nil
}

func tooLarge(n int64) *Error { return TooLarge("Request body is larger than %d bytes", n) }

// LimitBody is route middleware setting the route's body limit to n bytes,
// in place of the server's default: smaller for endpoints that take little,
// larger for uploads. A larger Content-Length is answered with 413
// M_TOO_LARGE before the handler runs.
func LimitBody(n int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if err := limitBody(w, r, n); err != nil {
				WriteError(w, r, err)
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

// ReadBody reads the whole request body, which may be at most limit bytes
// (0: the request's limit as set by Common or LimitBody). Over the limit it
// is 413 M_TOO_LARGE: at once for a larger Content-Length, else as soon as
// the body passes it; memory held is bounded by the limit.
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	if limit > 0 {
		if err := limitBody(nil, r, limit); err != nil {
			return nil, err
		}
	}
	if r.Body == nil {
		return nil, nil
	}
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(mbe.Limit)
		}
		return nil, err
	}
	return data, nil
}

// requestState is what Common and WriteError share about one request.
type requestState struct {
	clientGone atomic.Bool
	// req is the request as it arrived, for code below the handlers that
	// needs to know where a request came from (RequestOrigin).
	req *http.Request
}

const stateKey ctxKey = loggerKey + 1

// RequestOrigin is the request that ctx belongs to as Common received it
// (its peer address, host and headers), or nil outside a request. Read
// it while the request runs.
func RequestOrigin(ctx context.Context) *http.Request {
	if s, _ := ctx.Value(stateKey).(*requestState); s != nil {
		return s.req
	}
	return nil
}

func stateOf(r *http.Request) *requestState {
	s, _ := r.Context().Value(stateKey).(*requestState)
	return s
}

// clientGone reports whether err is the request failing because its client
// went away: the request's context is cancelled (the server does that when
// the connection closes) and the error is that cancellation, or the body
// broke off.
func clientGone(r *http.Request, err error) bool {
	if r.Context().Err() == nil {
		return false
	}
	var bre *BodyReadError
	return errors.Is(err, context.Canceled) || errors.As(err, &bre)
}
