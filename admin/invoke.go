package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// Invoke runs the admin API handler that method and path name, in
// process, as the server admin c: the admin console's way to reuse every
// endpoint's checks and its durable, resumable actions without an HTTP
// round trip or an access token. The result is the response body as
// JSON values (objects as map[string]any); errors are the handler's
// Matrix errors.
func (a *API) Invoke(ctx context.Context, c accounts.Caller, method, path string, query url.Values, body any) (map[string]any, error) {
	req, err := newRequest(ctx, method, path, query, body)
	if err != nil {
		return nil, err
	}
	var out any
	var herr error
	found := false
	mux := chi.NewRouter()
	for _, rt := range a.routes() {
		rt := rt
		mux.Method(rt.method, rt.path, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			found = true
			out, herr = rt.h(r, c)
		}))
	}
	mux.ServeHTTP(httptest.NewRecorder(), req)
	if !found {
		return nil, mxhttp.NotFound("No admin endpoint %s %s", method, path)
	}
	return result(req, out, herr)
}

// Call runs one handler h (of this or another API's route table) in
// process as Invoke does, for the admin endpoints served elsewhere (the
// client API's send_server_notice). path has no parameters to match.
func Call(ctx context.Context, c accounts.Caller, h func(*http.Request, accounts.Caller) (any, error), method, path string, body any) (map[string]any, error) {
	req, err := newRequest(ctx, method, path, nil, body)
	if err != nil {
		return nil, err
	}
	out, herr := h(req, c)
	return result(req, out, herr)
}

// newRequest is an in-process request; path is escaped as on the wire
// (url.PathEscape of each parameter).
func newRequest(ctx context.Context, method, path string, query url.Values, body any) (*http.Request, error) {
	var raw []byte
	if body != nil {
		var err error
		if raw, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	target := path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	// The caller's own route context (the console's route) must not leak
	// into the admin router's matching.
	ctx = context.WithValue(ctx, chi.RouteCtxKey, (*chi.Context)(nil))
	req, err := http.NewRequestWithContext(ctx, method, target, bytes.NewReader(raw))
	if err != nil {
		return nil, mxhttp.InvalidParam("Bad path %q", path)
	}
	req.Header.Set("Content-Type", "application/json")
	return req, nil
}

// result is a handler's answer as JSON values.
func result(req *http.Request, out any, herr error) (map[string]any, error) {
	if herr != nil {
		return nil, herr
	}
	// Bodies that write themselves (201 Created) are run into a recorder.
	if s, ok := out.(mxhttp.Stream); ok {
		rec := httptest.NewRecorder()
		s(rec, req)
		out = json.RawMessage(rec.Body.Bytes())
	}
	enc, err := json.Marshal(out)
	if err != nil {
		return nil, err
	}
	m := map[string]any{}
	if err := json.Unmarshal(enc, &m); err != nil {
		return nil, err
	}
	return m, nil
}
