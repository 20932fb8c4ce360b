package clientapi

import (
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/ratelimit"
	"github.com/hearth-matrix/hearth/storage"
)

// Moderation set through the Synapse admin API: shadow-bans and per-user
// message rate limits (migration 0027).

// shadowBanned reports whether c's user is shadow-banned: their sends,
// state changes and invites answer as if they succeeded, with an event ID
// nobody else will ever see, and reach no room (Synapse's shadow-ban).
func shadowBanned(c accounts.Caller) bool {
	return c.AppService == nil && c.ShadowBanned
}

// fakeEventID is the event ID a shadow-banned sender is answered with.
func fakeEventID() string {
	return "$" + accounts.NewToken("")
}

// overrideLimiters holds one limiter per overridden (rate, burst).
type overrideLimiters struct {
	mu sync.Mutex
	m  map[string]*ratelimit.Limiter
}

func (o *overrideLimiters) get(rate, burst int64) *ratelimit.Limiter {
	k := fmt.Sprint(rate, "/", burst)
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil {
		o.m = map[string]*ratelimit.Limiter{}
	}
	l, ok := o.m[k]
	if !ok {
		l = ratelimit.New(float64(rate), int(burst))
		o.m[k] = l
	}
	return l
}

// limitMessage applies the message rate limit to c: the user's own
// override when an admin set one (0 and 0: none), else the configured
// one. It reports whether c is shadow-banned. Both come with a user's
// access token (accounts.Caller); an application service's rate-limited
// users are read here.
func (a *API) limitMessage(r *http.Request, c accounts.Caller) (shadowBanned bool, err error) {
	if c.AppService != nil && !a.rateLimited(c) {
		return false, nil
	}
	banned, o := c.ShadowBanned, c.MessageLimit
	if c.AppService != nil {
		banned = false
		switch ov, err := a.db.GetRatelimitOverride(r.Context(), c.UserID); {
		case err == nil:
			o = &ov
		case !errors.Is(err, storage.ErrNotFound):
			return false, err
		}
	}
	if !a.rateLimited(c) {
		return banned, nil
	}
	if o == nil {
		return banned, a.limit(r, a.live().limits.message, c.UserID)
	}
	if o.MessagesPerSecond == 0 && o.BurstCount == 0 {
		return banned, nil
	}
	return banned, a.limit(r, a.overrides.get(o.MessagesPerSecond, o.BurstCount), c.UserID)
}
