package mxhttp

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// countingReader yields n bytes of 'x' after prefix and counts what was
// read from it.
type countingReader struct {
	prefix  string
	n, read int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.read >= c.n {
		return 0, io.EOF
	}
	if int64(len(p)) > c.n-c.read {
		p = p[:c.n-c.read]
	}
	i := 0
	for ; i < len(p) && c.read+int64(i) < int64(len(c.prefix)); i++ {
		p[i] = c.prefix[c.read+int64(i)]
	}
	for ; i < len(p); i++ {
		p[i] = 'x'
	}
	c.read += int64(len(p))
	return len(p), nil
}

// serve runs h behind Common with a default limit and returns the response
// and how many body bytes were read.
func serve(t *testing.T, limit int64, h http.Handler, body *countingReader, chunked bool) (*httptest.ResponseRecorder, int64) {
	t.Helper()
	req := httptest.NewRequest("POST", "/x", body)
	req.ContentLength = body.n
	if chunked {
		req.ContentLength = -1
	}
	rec := httptest.NewRecorder()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	Common(log, func(*http.Request) int64 { return limit }, nil, nil, h).ServeHTTP(rec, req)
	return rec, body.read
}

func errcode(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	var e struct{ ErrCode string }
	_ = json.Unmarshal(rec.Body.Bytes(), &e)
	return e.ErrCode
}

func jsonHandler(w http.ResponseWriter, r *http.Request) {
	var v map[string]any
	if err := ReadJSON(r, &v); err != nil {
		WriteError(w, r, err)
		return
	}
	WriteJSON(w, http.StatusOK, map[string]any{})
}

func TestBodyLimitContentLengthReadsNothing(t *testing.T) {
	rec, read := serve(t, 1<<20, http.HandlerFunc(jsonHandler), &countingReader{prefix: `{"a":"`, n: 100 << 20}, false)
	if rec.Code != http.StatusRequestEntityTooLarge || errcode(t, rec) != "M_TOO_LARGE" {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if read != 0 {
		t.Fatalf("read %d bytes of a body whose Content-Length was over the limit", read)
	}
}

func TestBodyLimitChunkedStopsAtLimit(t *testing.T) {
	rec, read := serve(t, 1<<20, http.HandlerFunc(jsonHandler), &countingReader{prefix: `{"a":"`, n: 100 << 20}, true)
	if rec.Code != http.StatusRequestEntityTooLarge || errcode(t, rec) != "M_TOO_LARGE" {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
	if read > 1<<20+64<<10 {
		t.Fatalf("read %d bytes of a chunked body limited to 1 MiB", read)
	}
}

func TestBodyLimitUnderLimit(t *testing.T) {
	body := `{"a":"` + strings.Repeat("x", 1000) + `"}`
	rec, _ := serve(t, 2000, http.HandlerFunc(jsonHandler), &countingReader{prefix: body, n: int64(len(body))}, true)
	if rec.Code != http.StatusOK {
		t.Fatalf("got %d %s", rec.Code, rec.Body)
	}
}

func TestLimitBodyMiddleware(t *testing.T) {
	ran := false
	h := LimitBody(100)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ran = true
		jsonHandler(w, r)
	}))
	// Lower than the default: refused before the handler runs.
	rec, read := serve(t, 1<<20, h, &countingReader{prefix: `{"a":"`, n: 101}, false)
	if rec.Code != http.StatusRequestEntityTooLarge || ran || read != 0 {
		t.Fatalf("got %d, handler ran %v, read %d", rec.Code, ran, read)
	}
	rec, _ = serve(t, 1<<20, h, &countingReader{prefix: `{"a":"`, n: 101}, true)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked: got %d", rec.Code)
	}
	// Higher than the default: a route may raise it (uploads).
	up := LimitBody(10 << 20)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if err != nil || n != 5<<20 {
			t.Errorf("read %d, %v", n, err)
		}
	}))
	if rec, _ = serve(t, 1<<20, up, &countingReader{n: 5 << 20}, false); rec.Code != http.StatusOK {
		t.Fatalf("raised limit: got %d %s", rec.Code, rec.Body)
	}
}

func TestReadBodyLimit(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := ReadBody(r, 10)
		if err != nil {
			WriteError(w, r, err)
			return
		}
		w.Write(b)
	})
	for _, chunked := range []bool{false, true} {
		rec, _ := serve(t, 1<<20, h, &countingReader{n: 11}, chunked)
		if rec.Code != http.StatusRequestEntityTooLarge || errcode(t, rec) != "M_TOO_LARGE" {
			t.Fatalf("chunked %v: got %d %s", chunked, rec.Code, rec.Body)
		}
		rec, _ = serve(t, 1<<20, h, &countingReader{n: 10}, chunked)
		if rec.Code != http.StatusOK || rec.Body.String() != strings.Repeat("x", 10) {
			t.Fatalf("chunked %v: got %d %q", chunked, rec.Code, rec.Body)
		}
	}
}

// brokenReader fails after a few bytes, as a client going away mid-body.
type brokenReader struct{ n int }

func (b *brokenReader) Read(p []byte) (int, error) {
	if b.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	b.n--
	p[0] = 'x'
	return 1, nil
}

// A client that went away is no server failure: nothing logged at error
// level, nothing written, 499 for the access log and metrics.
func TestWriteErrorClientGone(t *testing.T) {
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	var observed int
	observe := func(_ *http.Request, _ string, status int, _ time.Duration) { observed = status }
	route := func(*http.Request) string { return "/sync" }
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, errors.Join(errors.New("counting one-time keys"), r.Context().Err()))
	})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	req := httptest.NewRequest("GET", "/sync", nil).WithContext(ctx)
	rec := httptest.NewRecorder()
	Common(log, func(*http.Request) int64 { return 0 }, observe, route, h).ServeHTTP(rec, req)
	if rec.Body.Len() != 0 {
		t.Errorf("wrote %q to a client that went away", rec.Body)
	}
	if observed != StatusClientGone {
		t.Errorf("observed status %d, want %d", observed, StatusClientGone)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("logged an error: %s", logs.String())
	}

	// A handler that gives up without writing when its client is gone
	// (the /sync long-poll) is recorded the same way.
	observed = 0
	h2 := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	Common(log, func(*http.Request) int64 { return 0 }, observe, route, h2).ServeHTTP(httptest.NewRecorder(), req)
	if observed != StatusClientGone {
		t.Errorf("silent handler: observed status %d, want %d", observed, StatusClientGone)
	}

	// The same error while the client is still there is a 500.
	logs.Reset()
	rec = httptest.NewRecorder()
	h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, r, errors.Join(errors.New("counting one-time keys"), context.Canceled))
	})
	Common(log, func(*http.Request) int64 { return 0 }, observe, route, h).ServeHTTP(rec, httptest.NewRequest("GET", "/sync", nil))
	if rec.Code != http.StatusInternalServerError || observed != 500 || !strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("got %d, observed %d, log %s", rec.Code, observed, logs.String())
	}

	// A body that broke off is the client's failure: 400, no error log.
	logs.Reset()
	rec = httptest.NewRecorder()
	h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		WriteError(w, r, err)
	})
	req = httptest.NewRequest("PUT", "/upload", &brokenReader{n: 100})
	Common(log, func(*http.Request) int64 { return 1 << 20 }, observe, route, h).ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest || strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("got %d, log %s", rec.Code, logs.String())
	}
}

// Whatever a handler made of a body cut off at its limit, the answer is
// 413 M_TOO_LARGE.
func TestBodyOverLimitIsTooLargeWhateverTheHandlerSays(t *testing.T) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			WriteError(w, r, BadJSON("Malformed federation request"))
			return
		}
		WriteJSON(w, http.StatusOK, map[string]any{})
	})
	for _, chunked := range []bool{false, true} {
		rec, _ := serve(t, 1000, h, &countingReader{n: 1001}, chunked)
		if rec.Code != http.StatusRequestEntityTooLarge || errcode(t, rec) != "M_TOO_LARGE" {
			t.Errorf("chunked %v: got %d %s", chunked, rec.Code, rec.Body)
		}
		if rec, _ = serve(t, 1000, h, &countingReader{n: 1000}, chunked); rec.Code != http.StatusOK {
			t.Errorf("chunked %v: at the limit got %d %s", chunked, rec.Code, rec.Body)
		}
	}
}

func TestLoggedPathRedactsDelayIDs(t *testing.T) {
	for in, want := range map[string]string{
		"/_matrix/client/unstable/org.matrix.msc4140/delayed_events/syd_abc/send": "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/<redacted>/send",
		"/_matrix/client/unstable/org.matrix.msc4140/delayed_events/syd_abc":      "/_matrix/client/unstable/org.matrix.msc4140/delayed_events/<redacted>",
		"/_matrix/client/unstable/org.matrix.msc4140/delayed_events":              "/_matrix/client/unstable/org.matrix.msc4140/delayed_events",
		"/_matrix/client/v3/sync": "/_matrix/client/v3/sync",
	} {
		if got := LoggedPath(in); got != want {
			t.Errorf("LoggedPath(%q) = %q, want %q", in, got, want)
		}
	}
}
