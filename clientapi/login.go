package clientapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Login, refresh, logout and whoami (client-server API, Client
// Authentication: Login, Refreshing access tokens, Current account
// information) and POST /v1/login/get_token.

// loginTokenLifetime is how long an m.login.token token from get_token lives.
const loginTokenLifetime = 2 * time.Minute

// GET /login
func (a *API) loginFlows(r *http.Request, _ accounts.Caller) (any, error) {
	var flows []map[string]any
	if a.conf().PasswordLogin {
		flows = append(flows, map[string]any{"type": "m.login.password"})
	}
	flows = append(flows, map[string]any{"type": "m.login.token", "get_login_token": true})
	// m.login.sso leads to Hearth's sign-in page: offered when that page has
	// a way in (a provider, or the password form).
	if a.conf().PasswordLogin || len(a.conf().SSOProviders) > 0 {
		flows = append(flows, ssoFlow(a.conf().SSOProviders))
	}
	if a.accounts.AppServices != nil && len(a.accounts.AppServices.All()) > 0 {
		flows = append(flows, map[string]any{"type": loginTypeAppService})
	}
	return map[string]any{"flows": flows}, nil
}

type loginRequest struct {
	Type                     string `json:"type"`
	Token                    string `json:"token"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	RefreshToken             bool   `json:"refresh_token"`
}

// POST /login
func (a *API) login(r *http.Request, _ accounts.Caller) (any, error) {
	login, err := a.doLogin(r)
	if err != nil {
		return nil, err
	}
	return a.loginResponse(login), nil
}

func (a *API) doLogin(r *http.Request) (accounts.Login, error) {
	ctx := r.Context()
	body, err := readBody(r)
	if err != nil {
		return accounts.Login{}, err
	}
	var req loginRequest
	if err := mxhttp.DecodeJSON(body, &req); err != nil {
		return accounts.Login{}, err
	}
	if err := a.limit(r, a.live().limits.loginIP, clientIP(r)); err != nil {
		return accounts.Login{}, err
	}
	nd := accounts.NewDevice{DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName, RefreshToken: req.RefreshToken}
	switch req.Type {
	case "m.login.password":
		if !a.conf().PasswordLogin {
			// The spec's answer to a login type the server does not offer.
			return accounts.Login{}, mxhttp.Unknown("Password login is turned off on this server")
		}
		pc, err := accounts.ParsePasswordCredentials(body)
		if err != nil {
			return accounts.Login{}, err
		}
		localpart, err := a.accounts.LoginLocalpart(ctx, pc)
		if err != nil {
			return accounts.Login{}, err
		}
		if err := a.limit(r, a.live().limits.loginUser, localpart); err != nil {
			return accounts.Login{}, err
		}
		// bcrypt runs before, not inside, the transaction.
		u, err := a.accounts.CheckPassword(ctx, localpart, pc.Password)
		if err != nil {
			return accounts.Login{}, err
		}
		nd.UserID = u.UserID
		return a.loginInTx(ctx, nd, nil)
	case "m.login.token":
		if req.Token == "" {
			return accounts.Login{}, mxhttp.MissingParam("token is required for m.login.token")
		}
		return a.loginInTx(ctx, nd, func(tx *sql.Tx) (string, error) {
			userID, err := storage.TakeLoginToken(ctx, tx, req.Token, time.Now().UnixMilli())
			if errors.Is(err, storage.ErrNotFound) {
				return "", mxhttp.Forbidden("Invalid or expired login token")
			}
			return userID, err
		})
	case loginTypeAppService:
		return a.loginAppService(r, body, nd)
	default:
		return accounts.Login{}, mxhttp.Unknown("Bad login type %q", req.Type)
	}
}

// loginInTx makes the device and tokens in one transaction; who, when set,
// finds the user inside it (consuming a login token atomically).
func (a *API) loginInTx(ctx context.Context, nd accounts.NewDevice, who func(tx *sql.Tx) (string, error)) (accounts.Login, error) {
	var login accounts.Login
	err := a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if who != nil {
			userID, err := who(tx)
			if err != nil {
				return err
			}
			nd.UserID = userID
		}
		deactivated, err := storage.UserDeactivated(ctx, tx, nd.UserID)
		if err != nil {
			return err
		}
		if deactivated {
			return mxhttp.UserDeactivated("This account has been deactivated")
		}
		// A locked account cannot get a new access token until it is
		// unlocked (v1.12); the password was checked first.
		if locked, err := storage.UserLocked(ctx, tx, nd.UserID); err != nil {
			return err
		} else if locked {
			return accounts.UserLocked()
		}
		login, err = a.accounts.LoginDevice(ctx, tx, nd, time.Now())
		return err
	})
	return login, err
}

// loginResponse is the body of a successful login or registration.
func (a *API) loginResponse(l accounts.Login) map[string]any {
	out := map[string]any{"user_id": l.UserID, "home_server": a.conf().ServerName}
	if l.AccessToken != "" {
		out["access_token"], out["device_id"] = l.AccessToken, l.DeviceID
	}
	if l.RefreshToken != "" {
		out["refresh_token"], out["expires_in_ms"] = l.RefreshToken, l.ExpiresInMS
	}
	if a.conf().WellKnownClient != "" {
		out["well_known"] = map[string]any{"m.homeserver": map[string]string{"base_url": a.conf().WellKnownClient}}
	}
	return out
}

// POST /refresh
func (a *API) refresh(r *http.Request, _ accounts.Caller) (any, error) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.RefreshToken == "" {
		return nil, mxhttp.MissingParam("refresh_token is required")
	}
	login, err := a.accounts.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"access_token": login.AccessToken, "refresh_token": login.RefreshToken, "expires_in_ms": login.ExpiresInMS,
	}, nil
}

// POST /logout: the device goes with its token (client-server API, Logout).
func (a *API) logout(r *http.Request, c accounts.Caller) (any, error) {
	err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return a.accounts.DeleteDevices(r.Context(), tx, c.UserID, []string{c.DeviceID})
	})
	return writeEmptyOrError(r, err)
}

// POST /logout/all
func (a *API) logoutAll(r *http.Request, c accounts.Caller) (any, error) {
	err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return a.accounts.DeleteOtherDevices(r.Context(), tx, c.UserID, "")
	})
	return writeEmptyOrError(r, err)
}

// GET /account/whoami
func (a *API) whoami(r *http.Request, c accounts.Caller) (any, error) {
	return map[string]any{"user_id": c.UserID, "device_id": c.DeviceID, "is_guest": c.IsGuest}, nil
}

// POST /v1/login/get_token: a short-lived single-use m.login.token token
// for signing in another device, after re-checking the password.
func (a *API) getLoginToken(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	if c.IsGuest {
		return nil, mxhttp.GuestAccess("Guests cannot create login tokens")
	}
	passed, err := a.userInteractiveAuth(r, passwordFlows("POST /login/get_token", c.UserID), req.Auth)
	if err != nil {
		return nil, err
	}
	token := accounts.NewToken("mlt_")
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		if err := passed.consume(r.Context(), tx); err != nil {
			return err
		}
		return storage.InsertLoginToken(r.Context(), tx, token, c.UserID, time.Now().Add(loginTokenLifetime).UnixMilli())
	})
	if err != nil {
		return nil, err
	}
	return map[string]any{"login_token": token, "expires_in_ms": loginTokenLifetime.Milliseconds()}, nil
}

// readBody reads the whole request body with ReadJSON's size errors.
func readBody(r *http.Request) ([]byte, error) {
	var raw json.RawMessage
	if err := mxhttp.ReadJSON(r, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

func writeEmptyOrError(r *http.Request, err error) (any, error) {
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}
