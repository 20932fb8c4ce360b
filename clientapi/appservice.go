package clientapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/appservice"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// The client-server side of the Application Service API: registration and
// login of users in a service's namespace with its as_token, exclusive
// namespaces, timestamp massaging and POST /appservice/{id}/ping. Identity
// assertion itself is in accounts.Authenticate.

const loginTypeAppService = "m.login.application_service"

// appServiceByToken is the service whose as_token the request carries:
// 401 M_MISSING_TOKEN without a token, 401 M_UNKNOWN_TOKEN when it is no
// service's.
func (a *API) appServiceByToken(r *http.Request) (*appservice.Registration, error) {
	tok, ok := accounts.AccessToken(r)
	if !ok {
		return nil, mxhttp.MissingToken("m.login.application_service needs the application service's token")
	}
	if a.accounts.AppServices != nil {
		if reg, ok := a.accounts.AppServices.ByToken(tok); ok {
			return reg, nil
		}
	}
	return nil, mxhttp.UnknownToken("The token is not an application service's")
}

// checkAppServiceUser refuses (400 M_EXCLUSIVE) a user outside the
// service's namespaces, or inside another service's exclusive one.
func (a *API) checkAppServiceUser(reg *appservice.Registration, userID string) error {
	if !reg.OwnsUser(userID, a.conf().ServerName) || a.accounts.AppServices.ExclusiveUser(userID, reg) {
		return mxhttp.Exclusive("%s is not in the namespaces of application service %s", userID, reg.ID)
	}
	return nil
}

// registerAppServiceUser is POST /register with type
// m.login.application_service: a user in the service's namespace, made
// without a password, whatever the registration mode.
func (a *API) registerAppServiceUser(r *http.Request, req registerRequest) (accounts.Login, error) {
	reg, err := a.appServiceByToken(r)
	if err != nil {
		return accounts.Login{}, err
	}
	localpart := strings.ToLower(req.Username)
	if err := accounts.ValidateLocalpart(localpart, a.conf().ServerName); err != nil {
		return accounts.Login{}, err
	}
	if err := a.checkAppServiceUser(reg, a.accounts.UserID(localpart)); err != nil {
		return accounts.Login{}, err
	}
	return a.accounts.Register(r.Context(), accounts.NewUser{
		Localpart: localpart, DeviceID: req.DeviceID, DeviceDisplayName: req.InitialDeviceDisplayName,
		InhibitLogin: req.InhibitLogin, RefreshToken: req.RefreshToken,
	})
}

// loginAppService is POST /login with type m.login.application_service: a
// new device of an existing user in the service's namespace.
func (a *API) loginAppService(r *http.Request, body []byte, nd accounts.NewDevice) (accounts.Login, error) {
	reg, err := a.appServiceByToken(r)
	if err != nil {
		return accounts.Login{}, err
	}
	pc, err := accounts.ParsePasswordCredentials(body)
	if err != nil {
		return accounts.Login{}, err
	}
	localpart, err := a.accounts.Localpart(pc)
	if err != nil {
		return accounts.Login{}, err
	}
	userID := a.accounts.UserID(localpart)
	if err := a.checkAppServiceUser(reg, userID); err != nil {
		return accounts.Login{}, err
	}
	exists, err := a.db.UserExists(r.Context(), localpart)
	if err != nil {
		return accounts.Login{}, err
	}
	if !exists {
		return accounts.Login{}, mxhttp.Forbidden("No user %s", userID)
	}
	nd.UserID, nd.Quiet = userID, true // the service's own user: no sign-in alert
	return a.loginInTx(r.Context(), nd, nil)
}

// exclusiveUserID reports whether an application service claims the user
// ID in an exclusive namespace (or as its sender), so that ordinary
// registration of it is refused with M_EXCLUSIVE.
func (a *API) exclusiveUserID(userID string) bool {
	return a.accounts.AppServices != nil && a.accounts.AppServices.ExclusiveUser(userID, nil)
}

// checkAliasNamespace applies the services' alias namespaces to creating
// an alias: a service may create aliases only in its own namespaces, and
// nobody else may create one in a service's exclusive namespace.
func (a *API) checkAliasNamespace(c accounts.Caller, alias string) error {
	if a.accounts.AppServices == nil {
		return nil
	}
	if c.AppService != nil && !c.AppService.OwnsAlias(alias) {
		return mxhttp.Exclusive("%s is not in the alias namespaces of application service %s", alias, c.AppService.ID)
	}
	if a.accounts.AppServices.ExclusiveAlias(alias, c.AppService) {
		return mxhttp.Exclusive("The alias %s is reserved by an application service", alias)
	}
	return nil
}

// massagedTS is the ?ts= an application service may give PUT /send and
// PUT /state as the event's origin_server_ts (Timestamp massaging); zero
// when absent or when the caller is not a service.
func massagedTS(r *http.Request, c accounts.Caller) (time.Time, error) {
	s := r.URL.Query().Get("ts")
	if s == "" || c.AppService == nil {
		return time.Time{}, nil
	}
	ts, err := strconv.ParseInt(s, 10, 64)
	if err != nil || ts < 0 || ts > 1<<53-1 {
		return time.Time{}, mxhttp.InvalidParam("ts must be a timestamp in milliseconds")
	}
	return time.UnixMilli(ts), nil
}

// rateLimited reports whether the caller's requests count against rate
// limits: never for a service's sender, and not for the users it acts as
// when it is registered with rate_limited: false.
func (a *API) rateLimited(c accounts.Caller) bool {
	if c.AppService == nil {
		return true
	}
	return c.UserID != a.accounts.AppServices.SenderID(c.AppService) && c.AppService.IsRateLimited()
}

// POST /_matrix/client/v1/appservice/{appserviceId}/ping
func (a *API) pingAppService(r *http.Request, c accounts.Caller) (any, error) {
	id := pathParam(r, "appserviceId")
	if c.AppService == nil || c.AppService.ID != id {
		return nil, mxhttp.Forbidden("Only application service %s may ping itself", id)
	}
	var body struct {
		TransactionID string `json:"transaction_id"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &body); err != nil {
		return nil, err
	}
	if c.AppService.PushURL() == "" {
		return nil, &mxhttp.Error{Status: http.StatusBadRequest, ErrCode: "M_URL_NOT_SET", Message: "The application service has no URL"}
	}
	took, err := a.appsvc.Ping(r.Context(), c.AppService, body.TransactionID)
	if err != nil {
		code, status, respBody := appservice.PingError(err)
		e := &mxhttp.Error{Status: http.StatusBadGateway, ErrCode: code, Message: "Pinging the application service failed: " + err.Error()}
		switch code {
		case "M_CONNECTION_TIMEOUT":
			e.Status = http.StatusGatewayTimeout
		case "M_BAD_STATUS":
			e = e.With("status", status).With("body", string(respBody))
		}
		return nil, e
	}
	return map[string]int64{"duration_ms": took.Milliseconds()}, nil
}

// isAppServiceRegistration reports whether a /register body asks for
// m.login.application_service, at the top level as the spec shows or in
// the auth dict as some clients send it.
func isAppServiceRegistration(req registerRequest) bool {
	if req.Type == loginTypeAppService {
		return true
	}
	var auth struct {
		Type string `json:"type"`
	}
	return len(req.Auth) > 0 && json.Unmarshal(req.Auth, &auth) == nil && auth.Type == loginTypeAppService
}
