package oauth

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/storage"
)

// userCodeAlphabet has no vowels (no words) and no look-alikes, as RFC
// 8628 section 6.1 suggests: 20 letters, 8 of them, about 34 bits, typed
// under a rate limit.
const userCodeAlphabet = "BCDFGHJKLMNPQRSTVWXZ"

func newUserCode() string {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	out := make([]byte, 0, 9)
	for i, x := range b {
		if i == 4 {
			out = append(out, '-')
		}
		out = append(out, userCodeAlphabet[int(x)%len(userCodeAlphabet)])
	}
	return string(out)
}

// normalizeUserCode accepts what a user types: any case, with or without
// the dash and spaces.
func normalizeUserCode(s string) string {
	var out []byte
	for _, ch := range []byte(strings.ToUpper(s)) {
		if strings.IndexByte(userCodeAlphabet, ch) >= 0 {
			out = append(out, ch)
		}
	}
	if len(out) != 8 {
		return ""
	}
	return string(out[:4]) + "-" + string(out[4:])
}

// POST /_hearth/oauth2/device: the device authorization request (RFC 8628
// section 3.1, client-server API, Device authorisation flow; v1.18).
func (a *API) deviceAuthorization(r *http.Request) (any, error) {
	if err := parseForm(r); err != nil {
		return nil, err
	}
	clientID, err := formValue(r, "client_id")
	if err != nil {
		return nil, err
	}
	scope, err := formValue(r, "scope")
	if err != nil {
		return nil, err
	}
	c, ok, err := a.loadClient(r, clientID)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errOAuth(http.StatusUnauthorized, "invalid_client", "Unknown client_id")
	}
	if !c.allowsGrant(grantDeviceCode) {
		return nil, errOAuth(http.StatusBadRequest, "unauthorized_client", "The client did not register the device_code grant type")
	}
	deviceID, oe := parseScope(scope)
	if oe != nil {
		return nil, oe
	}
	now := time.Now()
	deviceCode := accounts.NewToken("")
	g := storage.OAuthDeviceGrant{ClientID: c.ClientID, Scope: strings.Join(strings.Fields(scope), " "), DeviceID: deviceID,
		CreatedTS: now.UnixMilli(), ExpiresTS: now.Add(deviceGrantLifetime).UnixMilli()}
	for tries := 0; ; tries++ {
		g.UserCode = newUserCode()
		err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error { return storage.InsertDeviceGrant(r.Context(), tx, deviceCode, g) })
		if !errors.Is(err, storage.ErrConflict) || tries == 5 {
			break
		}
	}
	if err != nil {
		return nil, err
	}
	verify := a.baseURL(r) + prefix + "/link"
	return map[string]any{
		"device_code":               deviceCode,
		"user_code":                 g.UserCode,
		"verification_uri":          verify,
		"verification_uri_complete": verify + "?code=" + url.QueryEscape(g.UserCode),
		"expires_in":                int(deviceGrantLifetime.Seconds()),
		"interval":                  int(devicePollInterval.Seconds()),
	}, nil
}

// pollDevice is the device access token request (RFC 8628 sections 3.4,
// 3.5): authorization_pending until the user answers, slow_down when
// polled faster than the interval, access_denied, expired_token, or the
// tokens, once.
func (a *API) pollDevice(ctx context.Context, c client, deviceCode string) (any, error) {
	if deviceCode == "" {
		return nil, invalidRequest("device_code is required")
	}
	now := time.Now()
	var resp tokenResponse
	err := a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		g, err := storage.PollDeviceGrant(ctx, tx, deviceCode, now.UnixMilli())
		if errors.Is(err, storage.ErrNotFound) {
			return invalidGrant("Unknown device code")
		}
		if err != nil {
			return err
		}
		switch {
		case g.ClientID != c.ClientID:
			return invalidGrant("The device code was issued to another client")
		case g.ExpiresTS < now.UnixMilli():
			return errOAuth(http.StatusBadRequest, "expired_token", "The device code has expired")
		case g.Status == "denied":
			return errOAuth(http.StatusBadRequest, "access_denied", "The user denied the request")
		case g.Status == "done":
			return invalidGrant("The device code was already used")
		case g.Status == "pending" && now.UnixMilli()-g.LastPollTS < devicePollInterval.Milliseconds():
			return errOAuth(http.StatusBadRequest, "slow_down", "Poll no more often than every "+devicePollInterval.String())
		case g.Status == "pending":
			return errOAuth(http.StatusBadRequest, "authorization_pending", "The user has not answered yet")
		}
		if ok, err := storage.FinishDeviceGrant(ctx, tx, deviceCode); err != nil || !ok {
			if err == nil {
				err = invalidGrant("The device code was already used")
			}
			return err
		}
		login, err := a.issue(ctx, tx, g.UserID, g.DeviceID, c, g.Scope, now)
		resp = newTokenResponse(login, g.Scope)
		return err
	})
	if err != nil {
		var oe *oauthError
		if errors.As(err, &oe) && (oe.code == "authorization_pending" || oe.code == "slow_down") {
			// The poll time must stick although the answer is an error.
			if werr := a.db.WriteTx(ctx, func(tx *sql.Tx) error {
				_, err := storage.PollDeviceGrant(ctx, tx, deviceCode, now.UnixMilli())
				return err
			}); werr != nil {
				return nil, werr
			}
		}
		return nil, err
	}
	return resp, nil
}

// GET /_hearth/oauth2/link: the user code page (verification_uri). With
// ?code= (verification_uri_complete) it shows the request to approve.
func (a *API) linkPage(w http.ResponseWriter, r *http.Request) error {
	user, err := a.requireUser(w, r)
	if err != nil || user == "" {
		return err
	}
	code := r.URL.Query().Get("code")
	if code == "" {
		a.render(w, r, http.StatusOK, "link", map[string]any{"UserID": user})
		return nil
	}
	return a.showDeviceGrant(w, r, user, code)
}

func (a *API) showDeviceGrant(w http.ResponseWriter, r *http.Request, user, typed string) error {
	again := func(status int, format string) error {
		a.render(w, r, status, "link", map[string]any{"UserID": user, "Error": say(format)})
		return nil
	}
	if !allow(a.userCode, clientIP(r)) {
		return again(http.StatusTooManyRequests, "Too many attempts. Wait a minute and try again.")
	}
	code := normalizeUserCode(typed)
	if code == "" {
		return again(http.StatusBadRequest, "That is not a valid code. Check it and try again.")
	}
	g, err := a.db.DeviceGrantByUserCode(r.Context(), code)
	if errors.Is(err, storage.ErrNotFound) || err == nil && (g.Status != "pending" || g.ExpiresTS < time.Now().UnixMilli()) {
		return again(http.StatusBadRequest, "That code is unknown, expired or already used. Check it and try again.")
	}
	if err != nil {
		return err
	}
	c, ok, err := a.loadClient(r, g.ClientID)
	if err != nil {
		return err
	}
	if !ok {
		return again(http.StatusBadRequest, "The application is no longer registered.")
	}
	a.render(w, r, http.StatusOK, "consent", a.clientView(r, c, map[string]any{
		"UserCode": g.UserCode, "DeviceID": g.DeviceID, "UserID": user, "Action": prefix + "/link"}))
	return nil
}

// POST /_hearth/oauth2/link: a typed code shows the request; allow or deny
// answers it.
func (a *API) linkSubmit(w http.ResponseWriter, r *http.Request) error {
	user, err := a.formUser(r)
	if err != nil {
		return err
	}
	action := r.PostForm.Get("action")
	if action == "" {
		return a.showDeviceGrant(w, r, user, r.PostForm.Get("code"))
	}
	// Answers count against the same limit as typed codes: a code guessed
	// here would sign someone else's device into this account.
	if !allow(a.userCode, clientIP(r)) {
		return pageErr(http.StatusTooManyRequests, "Too many attempts. Wait a minute and try again.")
	}
	code := normalizeUserCode(r.PostForm.Get("user_code"))
	status := "denied"
	if action == "allow" {
		status = "approved"
	}
	var decided bool
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		var err error
		decided, err = storage.DecideDeviceGrant(r.Context(), tx, code, status, user)
		return err
	})
	if err != nil {
		return err
	}
	if !decided {
		return badPage("This code was already answered or has expired.")
	}
	if status == "approved" {
		a.done(w, r, "Done. Go back to your other device: it is signing in.")
	} else {
		a.done(w, r, "The request was denied. You can close this page.")
	}
	return nil
}
