package oauth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"errors"
	"net/http"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// tokenResponse is RFC 6749 section 5.1's successful response.
type tokenResponse struct {
	AccessToken  string `json:"access_token"`
	TokenType    string `json:"token_type"`
	ExpiresIn    int64  `json:"expires_in"`
	RefreshToken string `json:"refresh_token"`
	Scope        string `json:"scope"`
}

func newTokenResponse(l accounts.Login, scope string) tokenResponse {
	return tokenResponse{AccessToken: l.AccessToken, TokenType: "Bearer", ExpiresIn: l.ExpiresInMS / 1000,
		RefreshToken: l.RefreshToken, Scope: scope}
}

// POST /_hearth/oauth2/token: the token endpoint of the three grants.
// Clients are public (token_endpoint_auth_method none): client_id names
// them, PKCE or the device code proves them.
func (a *API) token(r *http.Request) (any, error) {
	if err := parseForm(r); err != nil {
		return nil, err
	}
	get := func(name string) string { v, _ := formValue(r, name); return v }
	for _, name := range []string{"grant_type", "client_id", "code", "redirect_uri", "code_verifier", "refresh_token", "device_code"} {
		if _, err := formValue(r, name); err != nil {
			return nil, err
		}
	}
	c, ok, err := a.loadClient(r, get("client_id"))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errOAuth(http.StatusUnauthorized, "invalid_client", "Unknown client_id")
	}
	grant := get("grant_type")
	switch grant {
	case grantAuthorizationCode, grantRefreshToken, grantDeviceCode:
	case "":
		return nil, invalidRequest("grant_type is required")
	default:
		return nil, errOAuth(http.StatusBadRequest, "unsupported_grant_type", "Unsupported grant_type")
	}
	if !c.allowsGrant(grant) {
		return nil, errOAuth(http.StatusBadRequest, "unauthorized_client", "The client did not register the "+grant+" grant type")
	}
	switch grant {
	case grantAuthorizationCode:
		return a.exchangeCode(r.Context(), c, get("code"), get("redirect_uri"), get("code_verifier"))
	case grantRefreshToken:
		return a.refresh(r.Context(), c, get("refresh_token"))
	default:
		return a.pollDevice(r.Context(), c, get("device_code"))
	}
}

// exchangeCode is the authorization code grant's token request (RFC 6749
// section 4.1.3, RFC 7636 section 4.6). A code used twice ends the
// session the first use started.
func (a *API) exchangeCode(ctx context.Context, c client, code, redirectURI, verifier string) (any, error) {
	if code == "" || redirectURI == "" || verifier == "" {
		return nil, invalidRequest("code, redirect_uri and code_verifier are required")
	}
	if !validVerifier(verifier) {
		return nil, invalidRequest("code_verifier must be 43 to 128 characters of A-Z, a-z, 0-9 and -._~")
	}
	now := time.Now()
	var resp tokenResponse
	var reused *storage.OAuthAuthRequest
	var refused *oauthError
	err := a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		req, used, err := storage.TakeOAuthCode(ctx, tx, code)
		if errors.Is(err, storage.ErrNotFound) {
			return invalidGrant("Unknown authorization code")
		}
		if err != nil {
			return err
		}
		if used {
			reused = &req
			return invalidGrant("The authorization code was already used")
		}
		// A failed check still uses the code up (committed with it): it
		// cannot be retried, by the client or by whoever stole it.
		switch {
		case req.ClientID != c.ClientID:
			refused = invalidGrant("The code was issued to another client")
		case req.RedirectURI != redirectURI:
			refused = invalidGrant("redirect_uri differs from the authorization request's")
		case req.CodeExpiresTS < now.UnixMilli():
			refused = invalidGrant("The authorization code has expired")
		case !pkceMatches(verifier, req.CodeChallenge):
			refused = invalidGrant("code_verifier does not match the code_challenge")
		}
		if refused != nil {
			return nil
		}
		login, err := a.issue(ctx, tx, req.UserID, req.DeviceID, c, req.Scope, now)
		resp = newTokenResponse(login, req.Scope)
		return err
	})
	if reused != nil && reused.UserID != "" {
		a.endSession(ctx, reused.UserID, reused.DeviceID, c.ClientID)
	}
	if err != nil {
		return nil, err
	}
	if refused != nil {
		return nil, refused
	}
	return resp, nil
}

// issue creates or reuses the scope's device for the user (client-server
// API, Device ID allocation) with a refresh token and a short-lived access
// token, and records the OAuth session.
func (a *API) issue(ctx context.Context, tx *sql.Tx, userID, deviceID string, c client, scope string, now time.Time) (accounts.Login, error) {
	if dead, err := storage.UserDeactivated(ctx, tx, userID); err != nil || dead {
		if err == nil {
			err = invalidGrant("The account is deactivated")
		}
		return accounts.Login{}, err
	}
	if locked, err := storage.UserLocked(ctx, tx, userID); err != nil || locked {
		if err == nil {
			err = invalidGrant("The account is locked")
		}
		return accounts.Login{}, err
	}
	login, err := a.accounts.LoginDevice(ctx, tx, accounts.NewDevice{UserID: userID, DeviceID: deviceID, RefreshToken: true, Client: c.ClientName}, now)
	if err != nil {
		if me := (*mxhttp.Error)(nil); errors.As(err, &me) && me.Status < 500 {
			return login, errOAuth(http.StatusBadRequest, "access_denied", me.Message)
		}
		return login, err
	}
	return login, storage.UpsertOAuthSession(ctx, tx, userID, login.DeviceID, c.ClientID, scope, now.UnixMilli())
}

// endSession deletes a device whose OAuth session shows signs of theft (a
// code or refresh token used twice), if it still belongs to clientID.
func (a *API) endSession(ctx context.Context, userID, deviceID, clientID string) {
	err := a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		owner, _, err := storage.OAuthSession(ctx, tx, userID, deviceID)
		if errors.Is(err, storage.ErrNotFound) || err == nil && owner != clientID {
			return nil
		}
		if err != nil {
			return err
		}
		return a.accounts.DeleteDevices(ctx, tx, userID, []string{deviceID})
	})
	if err != nil {
		a.log.Error("ending a reused OAuth session", "user_id", userID, "device_id", deviceID, "err", err)
		return
	}
	a.log.Warn("OAuth code or refresh token reused: session ended", "user_id", userID, "device_id", deviceID, "client_id", clientID)
}

// validVerifier: RFC 7636 section 4.1.
func validVerifier(v string) bool {
	if len(v) < 43 || len(v) > 128 {
		return false
	}
	for _, ch := range []byte(v) {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
			return false
		}
	}
	return true
}

// pkceMatches: BASE64URL(SHA256(verifier)) == challenge (S256), compared
// in constant time.
func pkceMatches(verifier, challenge string) bool {
	sum := sha256.Sum256([]byte(verifier))
	want := base64.RawURLEncoding.EncodeToString(sum[:])
	return subtle.ConstantTimeCompare([]byte(want), []byte(challenge)) == 1
}

// refresh is the refresh token grant (RFC 6749 section 6) with rotation:
// accounts.Refresh issues a new pair and keeps the old refresh token valid
// until the new pair is first used, so a lost response can be retried
// (client-server API, Refresh token grant). A refresh token presented
// after its generation was replaced is reuse: the session ends.
func (a *API) refresh(ctx context.Context, c client, refreshToken string) (any, error) {
	if refreshToken == "" {
		return nil, invalidRequest("refresh_token is required")
	}
	var scope, spentUser, spentDevice string
	err := a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		owner, err := storage.LookupRefreshToken(ctx, tx, refreshToken)
		if errors.Is(err, storage.ErrNotFound) {
			spentUser, spentDevice, err = storage.SpentRefreshToken(ctx, tx, refreshToken)
			if errors.Is(err, storage.ErrNotFound) {
				return invalidGrant("Unknown refresh token")
			}
			if err != nil {
				return err
			}
			return invalidGrant("The refresh token was already used")
		}
		if err != nil {
			return err
		}
		clientID, s, err := storage.OAuthSession(ctx, tx, owner.UserID, owner.DeviceID)
		if errors.Is(err, storage.ErrNotFound) || err == nil && clientID != c.ClientID {
			return invalidGrant("The refresh token was not issued to this client")
		}
		scope = s
		return err
	})
	if spentUser != "" {
		a.endSession(ctx, spentUser, spentDevice, c.ClientID)
	}
	if err != nil {
		return nil, err
	}
	login, err := a.accounts.Refresh(ctx, refreshToken)
	var me *mxhttp.Error
	if errors.As(err, &me) && me.Status < 500 {
		return nil, invalidGrant(me.Message)
	}
	if err != nil {
		return nil, err
	}
	return newTokenResponse(login, scope), nil
}

// POST /_hearth/oauth2/revoke (RFC 7009, client-server API, Token
// revocation): an access or refresh token ends its device's session, both
// tokens with it, whichever client sends it (so that secret scanners can
// revoke leaked tokens); an unknown token is 200 too.
func (a *API) revoke(r *http.Request) (any, error) {
	if err := parseForm(r); err != nil {
		return nil, err
	}
	tok, err := formValue(r, "token")
	if err != nil {
		return nil, err
	}
	if tok == "" {
		return nil, invalidRequest("token is required")
	}
	switch hint, _ := formValue(r, "token_type_hint"); hint {
	case "", "access_token", "refresh_token":
	default:
		return nil, errOAuth(http.StatusBadRequest, "unsupported_token_type", "token_type_hint must be access_token or refresh_token")
	}
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		userID, deviceID, err := storage.OAuthTokenDevice(r.Context(), tx, tok)
		if errors.Is(err, storage.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return a.accounts.DeleteDevices(r.Context(), tx, userID, []string{deviceID})
	})
	return nil, err
}
