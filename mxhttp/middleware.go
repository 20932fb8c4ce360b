package mxhttp

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"strings"
	"time"
)

type ctxKey int

const loggerKey ctxKey = iota

// Logger returns the request's logger, which carries its request id.
func Logger(r *http.Request) *slog.Logger {
	if l, ok := r.Context().Value(loggerKey).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// statusWriter remembers the status for the access log and metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	n, err := s.ResponseWriter.Write(b)
	s.bytes += n
	return n, err
}

func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// RequestObserver receives each finished request, for metrics.
type RequestObserver func(r *http.Request, route string, status int, d time.Duration)

// StatusClientGone is the status the access log and metrics record for a
// request whose client went away before it was answered (nginx's 499
// "client closed request"). It is never sent: see WriteError.
const StatusClientGone = 499

// Common wraps a handler with what every request gets: a request id, an
// access log line (path only: query strings may hold access tokens), panic
// recovery as a plain Matrix 500, a body size limit and CORS. bodyLimit
// gives the default limit for a request's body (0: none), which a route may
// replace with LimitBody; see body.go.
func Common(base *slog.Logger, bodyLimit func(*http.Request) int64, observe RequestObserver, routeOf func(*http.Request) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		id := newRequestID()
		log := base.With("req", id)
		state := &requestState{req: r}
		ctx := context.WithValue(r.Context(), loggerKey, log)
		r = r.WithContext(context.WithValue(ctx, stateKey, state))
		sw := &statusWriter{ResponseWriter: w}
		w.Header().Set("X-Request-Id", id)
		setCORS(w.Header())
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.Error("handler panic", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				if sw.status == 0 {
					WriteJSON(sw, http.StatusInternalServerError, Internal("Internal server error"))
				}
			}
			d := time.Since(start)
			status := sw.status
			switch {
			case status == 0 && (state.clientGone.Load() || r.Context().Err() != nil):
				// Nothing written and the client gone (its context is
				// cancelled before the server's own cancel after this
				// handler): 499, whether or not WriteError was called.
				status = StatusClientGone
			case status == 0:
				status = http.StatusOK
			}
			log.Info("request", "method", r.Method, "path", LoggedPath(r.URL.Path), "status", status,
				"bytes", sw.bytes, "ms", strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64), "remote", r.RemoteAddr)
			if observe != nil {
				observe(r, routeOf(r), status, d)
			}
		}()
		// CORS preflight: answered for every path (client-server API, Web
		// Browser Clients).
		if r.Method == http.MethodOptions {
			sw.WriteHeader(http.StatusOK)
			return
		}
		// A Content-Length over the default is refused by the body's first
		// Read, not here: the route may still raise the limit (LimitBody).
		_ = limitBody(w, r, bodyLimit(r))
		next.ServeHTTP(sw, r)
	})
}

// setCORS sets the headers the spec requires on every client-server API
// response so browser clients such as Element Web work.
func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
}

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// NotFoundHandler answers unknown endpoints with 404 M_UNRECOGNIZED.
func NotFoundHandler(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusNotFound, Unrecognized("Unrecognized request: %s %s", r.Method, r.URL.Path))
}

// MethodNotAllowedHandler answers a known path with the wrong method with
// 405 M_UNRECOGNIZED, as the spec asks.
func MethodNotAllowedHandler(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusMethodNotAllowed, &Error{Status: http.StatusMethodNotAllowed, ErrCode: "M_UNRECOGNIZED",
		Message: fmt.Sprintf("Method %s is not allowed on %s", r.Method, r.URL.Path)})
}

// secretSegments are path segments that follow these prefixes and are
// credentials themselves: an MSC4140 delay ID lets anyone holding it send,
// cancel or restart the delayed event without an access token.
var secretSegments = []string{"/org.matrix.msc4140/delayed_events/"}

// LoggedPath is path as the access log writes it: with the segments that
// are credentials replaced by "<redacted>" (query strings, which may hold
// access tokens, are never logged).
func LoggedPath(path string) string {
	for _, p := range secretSegments {
		i := strings.Index(path, p)
		if i < 0 {
			continue
		}
		start := i + len(p)
		end := strings.IndexByte(path[start:], '/')
		if end < 0 {
			end = len(path) - start
		}
		if end > 0 {
			path = path[:start] + "<redacted>" + path[start+end:]
		}
	}
	return path
}
