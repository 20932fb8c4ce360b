package clientapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Login, refresh, logout and whoami (client-server API, Client
// Authentication: Login, Refreshing access tokens, Current account
// information) and POST /v1/login/get_token.

// loginTokenLifetime is how long an m.login.token token from get_token lives.
const loginTokenLifetime = 2 * time.Minute

func (a *API) sessionRoutes(r chi.Router, v3 func(string, string, http.HandlerFunc)) {
	v3("GET", "/login", a.loginFlows)
	v3("POST", "/login", a.login)
	r.Post("/_matrix/client/v3/refresh", a.refresh)
	r.Post("/_matrix/client/v1/refresh", a.refresh)
	v3("POST", "/logout", a.authed(a.logout))
	v3("POST", "/logout/all", a.authed(a.logoutAll))
	v3("GET", "/account/whoami", a.authed(a.whoami))
	r.Post("/_matrix/client/v1/login/get_token", a.authed(a.getLoginToken))
}

// GET /login
func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) {
	flows := []map[string]any{
		{"type": "m.login.password"},
		{"type": "m.login.token", "get_login_token": true},
	}
	if a.accounts.AppServices != nil && len(a.accounts.AppServices.All()) > 0 {
		flows = append(flows, map[string]any{"type": loginTypeAppService})
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"flows": flows})
}

type loginRequest struct {
	Type                     string `json:"type"`
	Token                    string `json:"token"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	RefreshToken             bool   `json:"refresh_token"`
}

// POST /login
func (a *API) login(w http.ResponseWriter, r *http.Request) {
	login, err := a.doLogin(r)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, a.loginResponse(login))
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
	if err := a.limit(r, a.limits.loginIP, clientIP(r)); err != nil {
		return accounts.Login{}, err
	}
	nd := accounts.NewDevice{DeviceID: req.DeviceID, DisplayName: req.InitialDeviceDisplayName, RefreshToken: req.RefreshToken}
	switch req.Type {
	case "m.login.password":
		pc, err := accounts.ParsePasswordCredentials(body)
		if err != nil {
			return accounts.Login{}, err
		}
		localpart, err := a.accounts.Localpart(pc)
		if err != nil {
			return accounts.Login{}, err
		}
		if err := a.limit(r, a.limits.loginUser, localpart); err != nil {
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
		login, err = a.accounts.LoginDevice(ctx, tx, nd, time.Now())
		return err
	})
	return login, err
}

// loginResponse is the body of a successful login or registration.
func (a *API) loginResponse(l accounts.Login) map[string]any {
	out := map[string]any{"user_id": l.UserID, "home_server": a.cfg.ServerName}
	if l.AccessToken != "" {
		out["access_token"], out["device_id"] = l.AccessToken, l.DeviceID
	}
	if l.RefreshToken != "" {
		out["refresh_token"], out["expires_in_ms"] = l.RefreshToken, l.ExpiresInMS
	}
	if a.cfg.WellKnownClient != "" {
		out["well_known"] = map[string]any{"m.homeserver": map[string]string{"base_url": a.cfg.WellKnownClient}}
	}
	return out
}

// POST /refresh
func (a *API) refresh(w http.ResponseWriter, r *http.Request) {
	var req struct {
		RefreshToken string `json:"refresh_token"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if req.RefreshToken == "" {
		mxhttp.WriteError(w, r, mxhttp.MissingParam("refresh_token is required"))
		return
	}
	login, err := a.accounts.Refresh(r.Context(), req.RefreshToken)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{
		"access_token": login.AccessToken, "refresh_token": login.RefreshToken, "expires_in_ms": login.ExpiresInMS,
	})
}

// POST /logout: the device goes with its token (client-server API, Logout).
func (a *API) logout(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return a.accounts.DeleteDevices(r.Context(), tx, c.UserID, []string{c.DeviceID})
	})
	writeEmptyOrError(w, r, err)
}

// POST /logout/all
func (a *API) logoutAll(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return a.accounts.DeleteOtherDevices(r.Context(), tx, c.UserID, "")
	})
	writeEmptyOrError(w, r, err)
}

// GET /account/whoami
func (a *API) whoami(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"user_id": c.UserID, "device_id": c.DeviceID, "is_guest": c.IsGuest})
}

// POST /v1/login/get_token: a short-lived single-use m.login.token token
// for signing in another device, after re-checking the password.
func (a *API) getLoginToken(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if c.IsGuest {
		mxhttp.WriteError(w, r, mxhttp.GuestAccess("Guests cannot create login tokens"))
		return
	}
	passed, err := a.userInteractiveAuth(r, passwordFlows("POST /login/get_token", c.UserID), req.Auth)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	token := accounts.NewToken("mlt_")
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		if err := passed.consume(r.Context(), tx); err != nil {
			return err
		}
		return storage.InsertLoginToken(r.Context(), tx, token, c.UserID, time.Now().Add(loginTokenLifetime).UnixMilli())
	})
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"login_token": token, "expires_in_ms": loginTokenLifetime.Milliseconds()})
}

// readBody reads the whole request body with ReadJSON's size errors.
func readBody(r *http.Request) ([]byte, error) {
	var raw json.RawMessage
	if err := mxhttp.ReadJSON(r, &raw); err != nil {
		return nil, err
	}
	return raw, nil
}

func writeEmptyOrError(w http.ResponseWriter, r *http.Request, err error) {
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}
