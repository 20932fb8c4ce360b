package media

import (
	"context"
	"net/url"
	"strconv"
	"time"

	"github.com/hearth-matrix/hearth/mxhttp"
)

// Query parameters shared by the client and federation media endpoints.

// TimeoutParam reads the timeout_ms query parameter of downloads and
// thumbnails (default 20 s, at most an hour).
func TimeoutParam(q url.Values) (time.Duration, error) {
	s := q.Get("timeout_ms")
	if s == "" {
		return 20 * time.Second, nil
	}
	ms, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ms < 0 {
		return 0, mxhttp.InvalidParam("timeout_ms must be a non-negative integer")
	}
	return time.Duration(min(ms, 3_600_000)) * time.Millisecond, nil
}

// ThumbnailParams reads the query parameters of a thumbnail request.
func ThumbnailParams(q url.Values) (ThumbnailRequest, error) {
	req := ThumbnailRequest{Method: q.Get("method")}
	if req.Method == "" {
		req.Method = "scale"
	}
	for _, p := range []struct {
		name string
		dst  *int
	}{{"width", &req.Width}, {"height", &req.Height}} {
		s := q.Get(p.name)
		if s == "" {
			return req, mxhttp.MissingParam("%s is required", p.name)
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 100_000 {
			return req, mxhttp.InvalidParam("%s must be a positive integer", p.name)
		}
		*p.dst = n
	}
	if s := q.Get("animated"); s != "" {
		b, err := strconv.ParseBool(s)
		if err != nil {
			return req, mxhttp.InvalidParam("animated must be true or false")
		}
		req.Animated = b
	}
	return req, nil
}

// GetQueried is Get with the wait read from a download's query.
func (r *Repository) GetQueried(ctx context.Context, serverName, mediaID string, q url.Values) (Content, error) {
	wait, err := TimeoutParam(q)
	if err != nil {
		return Content{}, err
	}
	return r.Get(ctx, serverName, mediaID, wait)
}

// ThumbnailQueried is Thumbnail with the size, method and wait read from a
// thumbnail request's query.
func (r *Repository) ThumbnailQueried(ctx context.Context, serverName, mediaID string, q url.Values) (Content, error) {
	req, err := ThumbnailParams(q)
	if err != nil {
		return Content{}, err
	}
	wait, err := TimeoutParam(q)
	if err != nil {
		return Content{}, err
	}
	return r.Thumbnail(ctx, serverName, mediaID, req, wait)
}
