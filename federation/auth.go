package federation

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// Inbound request authentication (server-server API, Request
// Authentication): every /_matrix/federation endpoint but the version
// query is registered behind authenticate, so a request must carry a valid
// X-Matrix signature of its origin, addressed to us, before its handler runs.

type originKey struct{}

// Origin is the authenticated server that made a federation request.
func Origin(ctx context.Context) spec.ServerName {
	s, _ := ctx.Value(originKey{}).(spec.ServerName)
	return s
}

// authenticate verifies X-Matrix and puts the origin in the context. The
// request body is read whole (it is part of what is signed) and handed on.
func (a *API) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			next.ServeHTTP(w, r)
			return
		}
		if !hasXMatrix(r) {
			mxhttp.WriteError(w, r, mxhttp.Unauthorized("Missing X-Matrix Authorization header"))
			return
		}
		for _, h := range r.Header.Values("Authorization") {
			_, origin, dest, _, _ := fclient.ParseAuthorization(h)
			if dest != "" && dest != a.serverName {
				mxhttp.WriteError(w, r, mxhttp.Unauthorized("This server is not %s", dest))
				return
			}
			if origin == a.serverName {
				mxhttp.WriteError(w, r, mxhttp.Unauthorized("Requests from our own server name are not accepted"))
				return
			}
		}
		fr, resp := fclient.VerifyHTTPRequest(r, time.Now(), a.serverName, nil, a.keyRing)
		if fr == nil {
			switch {
			case resp.Code == http.StatusUnauthorized:
				mxhttp.WriteError(w, r, mxhttp.Unauthorized("Invalid X-Matrix signature"))
			case resp.Code >= 500:
				mxhttp.WriteError(w, r, mxhttp.Internal("Could not check the request signature"))
			default:
				mxhttp.WriteError(w, r, mxhttp.BadJSON("Malformed federation request"))
			}
			return
		}
		origin := fr.Origin()
		if a.queue != nil {
			a.queue.ServerAlive(origin) // it just talked to us: retry what waits for it
		}
		r.Body = io.NopCloser(bytes.NewReader(fr.Content()))
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), originKey{}, origin)))
	})
}

func hasXMatrix(r *http.Request) bool {
	for _, h := range r.Header.Values("Authorization") {
		if strings.HasPrefix(h, "X-Matrix ") {
			return true
		}
	}
	return false
}
