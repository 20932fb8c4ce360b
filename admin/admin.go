// Package admin serves the Synapse-compatible admin API
// (/_synapse/admin/*) that tools such as synadm and synapse-admin call.
// Every route is in routes.go; every event an admin action makes (members
// leaving a deleted room, a deactivated user leaving their rooms) goes
// through the room core.
package admin

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"

	"github.com/go-chi/chi/v5"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// API is the admin API of one homeserver.
type API struct {
	cfg      config.Config
	db       *storage.DB
	accounts *accounts.Accounts
	rooms    *rooms.Rooms
	media    *media.Repository
	log      *slog.Logger
	version  string
	senders  Senders

	// ctx bounds background room deletions; Close cancels it and waits.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Deps are what the admin API is built on.
type Deps struct {
	Config   config.Config
	DB       *storage.DB
	Accounts *accounts.Accounts
	Rooms    *rooms.Rooms
	Media    *media.Repository
	Log      *slog.Logger
	Version  string
	// Senders is the federation send queue (federation.Queue); nil
	// without federation.
	Senders Senders
}

// Senders is what the admin API asks of the federation send queue.
type Senders interface {
	// ResetBackoff makes a sender waiting out a backoff try again now.
	ResetBackoff(dest spec.ServerName)
}

// New returns the admin API over d and resumes the room deletions a
// previous process left unfinished. Processes sharing a PostgreSQL
// database may both resume one: every step of a deletion can be done twice.
func New(d Deps) *API {
	ctx, cancel := context.WithCancel(context.Background())
	a := &API{cfg: d.Config, db: d.DB, accounts: d.Accounts, rooms: d.Rooms, media: d.Media, log: d.Log, version: d.Version, senders: d.Senders, ctx: ctx, cancel: cancel}
	a.ResumeDeletions()
	a.ResumeTasks()
	return a
}

// background runs fn in the background under the API's context, unless
// the API is stopping (the work is then resumed on the next start).
func (a *API) background(fn func(ctx context.Context)) {
	if a.ctx.Err() != nil {
		return
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		fn(a.ctx)
	}()
}

// Close stops background room deletions (they resume on the next start)
// and waits for them.
func (a *API) Close() {
	a.cancel()
	a.wg.Wait()
}

// GET /_synapse/admin/v1/server_version.
func (a *API) serverVersion(r *http.Request, c accounts.Caller) (any, error) {
	return map[string]string{"server_version": "Hearth " + a.version}, nil
}

// pathParam returns a path parameter, percent-decoded (chi hands out raw
// segments when the request's encoding differs from Go's default).
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v
	}
	if d, err := url.PathUnescape(v); err == nil {
		return d
	}
	return v
}

// userParam is the {userId} path parameter, checked to be a valid user ID
// (400 M_INVALID_PARAM) and, with local, one of this server's (400
// M_INVALID_PARAM, as Synapse's "Can only look up local users").
func (a *API) userParam(r *http.Request, local bool) (string, error) {
	id := pathParam(r, "userId")
	uid, err := spec.NewUserID(id, true)
	if err != nil {
		return "", mxhttp.InvalidParam("Invalid user ID %q", id)
	}
	if local && string(uid.Domain()) != a.cfg.ServerName {
		return "", mxhttp.InvalidParam("Can only look up local users")
	}
	return id, nil
}

// existingUser is userParam for a local user that exists (404 M_NOT_FOUND).
func (a *API) existingUser(r *http.Request) (storage.User, error) {
	id, err := a.userParam(r, true)
	if err != nil {
		return storage.User{}, err
	}
	u, err := a.db.GetUser(r.Context(), id)
	if errors.Is(err, storage.ErrNotFound) {
		return u, mxhttp.NotFound("User not found")
	}
	return u, err
}

// roomParam is the {roomId} path parameter, checked to be a room ID.
func roomParam(r *http.Request) (string, error) {
	id := pathParam(r, "roomId")
	if _, err := spec.NewRoomID(id); err != nil || !strings.HasPrefix(id, "!") {
		return "", mxhttp.InvalidParam("%q is not a valid room ID", id)
	}
	return id, nil
}

// paging reads from and limit: non-negative integers, limit defaulting to
// def; anything else is 400 M_INVALID_PARAM.
func paging(r *http.Request, def int) (from, limit int, err error) {
	q := r.URL.Query()
	from, limit = 0, def
	if s := q.Get("from"); s != "" {
		if from, err = strconv.Atoi(s); err != nil || from < 0 {
			return 0, 0, mxhttp.InvalidParam("Query parameter from must be a string representing a non-negative integer")
		}
	}
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 0 {
			return 0, 0, mxhttp.InvalidParam("Query parameter limit must be a string representing a non-negative integer")
		}
	}
	return from, limit, nil
}

// boolParam reads an optional "true"/"false" query parameter: nil when
// absent, 400 M_INVALID_PARAM when it is anything else.
func boolParam(r *http.Request, name string) (*bool, error) {
	s, ok := r.URL.Query()[name]
	if !ok || len(s) == 0 {
		return nil, nil
	}
	switch s[0] {
	case "true":
		t := true
		return &t, nil
	case "false":
		f := false
		return &f, nil
	}
	return nil, mxhttp.InvalidParam("Query parameter %s must be true or false", name)
}

// dirParam reads dir: "f" (forwards, the default) or "b".
func dirParam(r *http.Request, def string) (backwards bool, err error) {
	d := r.URL.Query().Get("dir")
	if d == "" {
		d = def
	}
	switch d {
	case "f":
		return false, nil
	case "b":
		return true, nil
	}
	return false, mxhttp.InvalidParam("Unknown direction: %s", d)
}

// nextToken adds next_token (Synapse sends it as a string in user lists)
// when more rows follow this page.
func nextToken(body map[string]any, from, n, total int, asString bool) {
	if from+n < total {
		if asString {
			body["next_token"] = strconv.Itoa(from + n)
		} else {
			body["next_token"] = from + n
		}
	}
}
