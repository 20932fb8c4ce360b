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
// query is registered as signed in routes.go, so a request must carry a valid
// X-Matrix signature of its origin, addressed to us, before its handler runs.

type originKey struct{}

// Origin is the authenticated server that made a federation request.
func Origin(ctx context.Context) spec.ServerName {
	s, _ := ctx.Value(originKey{}).(spec.ServerName)
	return s
}

// verify checks r's X-Matrix signature and returns r with the origin in
// its context. The request body is read whole (it is part of what is
// signed) and handed on.
func (a *API) verify(r *http.Request) (*http.Request, error) {
	if !hasXMatrix(r) {
		return nil, mxhttp.Unauthorized("Missing X-Matrix Authorization header")
	}
	for _, h := range r.Header.Values("Authorization") {
		_, origin, dest, _, _ := fclient.ParseAuthorization(h)
		if dest != "" && dest != a.serverName {
			return nil, mxhttp.Unauthorized("This server is not %s", dest)
		}
		if origin == a.serverName {
			return nil, mxhttp.Unauthorized("Requests from our own server name are not accepted")
		}
	}
	fr, resp := fclient.VerifyHTTPRequest(r, time.Now(), a.serverName, nil, a.keyRing)
	if fr == nil {
		switch {
		case resp.Code == http.StatusUnauthorized:
			return nil, mxhttp.Unauthorized("Invalid X-Matrix signature")
		case resp.Code >= 500:
			return nil, mxhttp.Internal("Could not check the request signature")
		default:
			return nil, mxhttp.BadJSON("Malformed federation request")
		}
	}
	origin := fr.Origin()
	if a.queue != nil {
		a.queue.ServerAlive(origin) // it just talked to us: retry what waits for it
	}
	r.Body = io.NopCloser(bytes.NewReader(fr.Content()))
	return r.WithContext(context.WithValue(r.Context(), originKey{}, origin)), nil
}

func hasXMatrix(r *http.Request) bool {
	for _, h := range r.Header.Values("Authorization") {
		if strings.HasPrefix(h, "X-Matrix ") {
			return true
		}
	}
	return false
}
