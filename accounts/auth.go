package accounts

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hearth-matrix/hearth/appservice"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Caller is the authenticated user and device behind a request.
type Caller struct {
	UserID   string
	DeviceID string
	IsGuest  bool
	// Suspended: the account is suspended (v1.13); handlers refuse the
	// actions a suspended account may not take with ErrSuspended.
	Suspended bool
	// ShadowBanned and MessageLimit (nil: none) are the admin's moderation
	// of the account, known with the token (SetShadowBanned and
	// SetMessageLimit drop cached tokens like SetLocked); not set for an
	// application service.
	ShadowBanned bool
	MessageLimit *storage.RatelimitOverride
	// Token is the access token the request presented.
	Token string
	// AppService is the application service whose as_token the request
	// presented (acting as its sender or an asserted user); nil otherwise.
	AppService *appservice.Registration
}

// AccessToken extracts the access token from the Authorization header or,
// deprecated but still allowed by the spec, the access_token query
// parameter (client-server API, Using access tokens).
func AccessToken(r *http.Request) (string, bool) {
	if h := r.Header.Get("Authorization"); h != "" {
		if tok, ok := strings.CutPrefix(h, "Bearer "); ok && tok != "" {
			return strings.TrimSpace(tok), true
		}
		return "", false
	}
	if tok := r.URL.Query().Get("access_token"); tok != "" {
		return tok, true
	}
	return "", false
}

// lastSeenEvery bounds how often a device's last_seen is written.
const lastSeenEvery = time.Minute

// Authenticate resolves the request's access token to a Caller: 401
// M_MISSING_TOKEN without one, 401 M_UNKNOWN_TOKEN for an unknown one, and
// for an expired (refreshable) one M_UNKNOWN_TOKEN with soft_logout, so the
// client refreshes instead of logging out.
//
// A locked account's token (account locking, v1.12) is refused with 401
// M_USER_LOCKED and soft_logout, so the client keeps its session; only
// AuthenticateLocked, for logging out, lets it through.
func (a *Accounts) Authenticate(r *http.Request) (Caller, error) {
	c, locked, err := a.authenticate(r)
	if err == nil && locked {
		return Caller{}, UserLocked()
	}
	return c, err
}

// UserLocked is the error for every request of a locked account but
// logout (client-server API, Account locking).
func UserLocked() *mxhttp.Error {
	return mxhttp.UserLocked("This account has been locked").With("soft_logout", true)
}

// AuthenticateLocked is Authenticate that also accepts a locked account's
// token: POST /logout and /logout/all must work for locked accounts.
func (a *Accounts) AuthenticateLocked(r *http.Request) (Caller, error) {
	c, _, err := a.authenticate(r)
	return c, err
}

// SetLocked locks or unlocks an account. Its tokens stay valid (the client
// keeps its session for when the lock is lifted), but cached ones are
// dropped here and in every other process so the lock applies at once.
func (a *Accounts) SetLocked(ctx context.Context, userID string, locked bool) error {
	return a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
		a.forgetTokensOnCommit(tx, userID)
		return storage.SetUserLocked(ctx, tx, userID, locked)
	})
}

// SetSuspended suspends or unsuspends an account; like SetLocked it
// drops the cached tokens everywhere so every process sees it at once.
func (a *Accounts) SetSuspended(ctx context.Context, userID string, suspended bool) error {
	return a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
		a.forgetTokensOnCommit(tx, userID)
		return storage.SetUserSuspended(ctx, tx, userID, suspended)
	})
}

// SetShadowBanned sets or clears an account's shadow-ban (clientapi's
// limitMessage); like SetLocked it drops the cached tokens everywhere, so
// every process sees it at once.
func (a *Accounts) SetShadowBanned(ctx context.Context, userID string, banned bool) error {
	return a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
		a.forgetTokensOnCommit(tx, userID)
		return storage.SetShadowBanned(ctx, tx, userID, banned)
	})
}

// SetMessageLimit sets (o non-nil) or removes an account's own message
// rate limit; like SetLocked it drops the cached tokens everywhere.
func (a *Accounts) SetMessageLimit(ctx context.Context, userID string, o *storage.RatelimitOverride) error {
	return a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
		a.forgetTokensOnCommit(tx, userID)
		return storage.SetRatelimitOverride(ctx, tx, userID, o)
	})
}

// ErrSuspended is the answer to an action a suspended account may not
// take (client-server API, Account suspension): 403 M_USER_SUSPENDED.
func ErrSuspended() *mxhttp.Error {
	return mxhttp.UserSuspended("You cannot perform this action while suspended.")
}

// authenticate resolves the token to a Caller and says whether its
// account is locked. An application service's users are not checked for
// locks: the service acts for them.
func (a *Accounts) authenticate(r *http.Request) (Caller, bool, error) {
	tok, ok := AccessToken(r)
	if !ok {
		return Caller{}, false, mxhttp.MissingToken("Missing access token")
	}
	if a.AppServices != nil {
		if reg, ok := a.AppServices.ByToken(tok); ok {
			c, err := a.assertIdentity(r, reg, tok)
			return c, false, err
		}
	}
	now := time.Now()
	hash := string(storage.TokenHash(tok))
	owner, cached := a.tokens.get(hash, now)
	if !cached {
		var err error
		owner, err = a.DB.LookupAccessToken(r.Context(), tok)
		if errors.Is(err, storage.ErrNotFound) {
			return Caller{}, false, mxhttp.UnknownToken("Unknown access token").With("soft_logout", false)
		}
		if err != nil {
			return Caller{}, false, err
		}
		if len(owner.PrevRefreshHash) == 0 {
			a.tokens.put(hash, owner, now)
		}
	}
	if owner.ExpiresTS != 0 && now.UnixMilli() >= owner.ExpiresTS {
		return Caller{}, false, mxhttp.UnknownToken("Access token has expired").With("soft_logout", true)
	}
	if len(owner.PrevRefreshHash) > 0 {
		// First use of a refreshed access token: the refresh token it was
		// exchanged for, and that token's access tokens, are now revoked.
		if err := a.DB.WriteTx(r.Context(), func(tx *sql.Tx) error {
			a.forgetTokensOnCommit(tx, owner.UserID)
			return storage.RevokeRefreshGeneration(r.Context(), tx, owner.PrevRefreshHash)
		}); err != nil {
			return Caller{}, false, err
		}
	}
	a.touchDevice(r, owner.UserID, owner.DeviceID, now)
	return Caller{UserID: owner.UserID, DeviceID: owner.DeviceID, IsGuest: owner.IsGuest, Suspended: owner.Suspended,
		ShadowBanned: owner.ShadowBanned, MessageLimit: owner.MessageLimit, Token: tok}, owner.Locked, nil
}

// touchDevice records last_seen_ts and last_seen_ip at most once a minute
// per device, so authentication does not turn every read into a write.
func (a *Accounts) touchDevice(r *http.Request, userID, deviceID string, now time.Time) {
	key := userID + "|" + deviceID
	a.seenMu.Lock()
	if a.lastSeen == nil {
		a.lastSeen = map[string]time.Time{}
	}
	if now.Sub(a.lastSeen[key]) < lastSeenEvery {
		a.seenMu.Unlock()
		return
	}
	a.lastSeen[key] = now
	a.seenMu.Unlock()
	ip := r.RemoteAddr
	if i := strings.LastIndexByte(ip, ':'); i > 0 {
		ip = strings.Trim(ip[:i], "[]")
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := a.DB.TouchDevice(ctx, userID, deviceID, now.UnixMilli(), ip); err != nil {
		mxhttp.Logger(r).Warn("recording device last seen", "err", err)
	}
}

// forgetTokensOnCommit drops the user's cached access tokens once tx,
// which revokes some of them, commits.
func (a *Accounts) forgetTokensOnCommit(tx *sql.Tx, userID string) {
	a.DB.AfterCommit(tx, func() {
		a.tokens.dropUser(userID)
		if a.TokensRevoked != nil {
			a.TokensRevoked(userID)
		}
	})
}

// ForgetTokens drops the cached access tokens of a user (another process
// revoked some), or of everyone when userID is "".
func (a *Accounts) ForgetTokens(userID string) {
	if userID == "" {
		a.tokens.clear()
	} else {
		a.tokens.dropUser(userID)
	}
}

// lastSeenState is embedded in Accounts.
type lastSeenState struct {
	seenMu   sync.Mutex
	lastSeen map[string]time.Time
}

// assertIdentity is authentication by an application service's as_token
// (Application Service API, Identity assertion): the caller is the
// service's sender, or the user named by ?user_id= when that user is in
// the service's users namespaces and exists (403 M_FORBIDDEN otherwise);
// ?device_id= must name one of that user's devices (400
// M_UNKNOWN_DEVICE).
func (a *Accounts) assertIdentity(r *http.Request, reg *appservice.Registration, tok string) (Caller, error) {
	q := r.URL.Query()
	userID := a.AppServices.SenderID(reg)
	if asserted := q.Get("user_id"); asserted != "" && asserted != userID {
		localpart, server, ok := strings.Cut(strings.TrimPrefix(asserted, "@"), ":")
		if !ok || !strings.HasPrefix(asserted, "@") || server != a.ServerName || !reg.OwnsUser(asserted, a.ServerName) {
			return Caller{}, mxhttp.Forbidden("The application service may not act as %s", asserted)
		}
		exists, err := a.DB.UserExists(r.Context(), localpart)
		if err != nil {
			return Caller{}, err
		}
		if !exists {
			return Caller{}, mxhttp.Forbidden("The application service has not registered %s", asserted)
		}
		userID = asserted
	}
	c := Caller{UserID: userID, Token: tok, AppService: reg}
	if deviceID := q.Get("device_id"); deviceID != "" {
		if _, err := a.DB.GetDevice(r.Context(), userID, deviceID); errors.Is(err, storage.ErrNotFound) {
			return Caller{}, &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_UNKNOWN_DEVICE", Message: "No device " + deviceID + " of " + userID}
		} else if err != nil {
			return Caller{}, err
		}
		c.DeviceID = deviceID
	}
	return c, nil
}
