package clientapi

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Account registration (client-server API, Account registration) and the
// registration token validity check (Token-authenticated registration).

type registerRequest struct {
	Type                     string          `json:"type"`
	Username                 string          `json:"username"`
	Password                 string          `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	RefreshToken             bool            `json:"refresh_token"`
	Auth                     json.RawMessage `json:"auth"`
}

// registrationFlows are the UIA flows of the configured registration mode.
// With mail configured an email address may be given (and with
// registration_requires_email must be): it is validated through the
// m.login.email.identity stage and bound to the new account.
func (a *API) registrationFlows() []uiaFlow {
	cfg := a.conf()
	base := []string{stageDummy}
	if cfg.Registration == config.RegistrationToken {
		base = []string{stageRegistrationToken}
	}
	if a.mail == nil {
		return []uiaFlow{{Stages: base}}
	}
	withEmail := []string{stageEmailIdentity}
	if base[0] != stageDummy {
		withEmail = append(slices.Clone(base), stageEmailIdentity)
	}
	if cfg.RegistrationRequiresEmail {
		return []uiaFlow{{Stages: withEmail}}
	}
	return []uiaFlow{{Stages: base}, {Stages: withEmail}}
}

// POST /register
func (a *API) register(r *http.Request, _ accounts.Caller) (any, error) {
	var req registerRequest
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	var login accounts.Login
	var err error
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
		if isAppServiceRegistration(req) {
			login, err = a.registerAppServiceUser(r, req)
		} else {
			login, err = a.registerUser(r, req)
		}
	case "guest":
		login, err = a.registerGuest(r, req)
	default:
		err = mxhttp.InvalidParam("kind must be user or guest, not %q", kind)
	}
	if err != nil {
		return nil, err
	}
	return a.loginResponse(login), nil
}

func (a *API) registerUser(r *http.Request, req registerRequest) (accounts.Login, error) {
	if a.conf().Registration == config.RegistrationClosed {
		return accounts.Login{}, mxhttp.Forbidden("Registration is disabled on this server")
	}
	// The user name is checked before authentication, so a client learns
	// that a name is taken before the user completes any stage.
	if req.Username != "" {
		req.Username = strings.ToLower(req.Username)
		if err := a.checkAvailable(r, req.Username); err != nil {
			return accounts.Login{}, err
		}
	}
	if len(req.Password) > 72 {
		return accounts.Login{}, mxhttp.WeakPassword("Passwords longer than 72 bytes are not supported")
	}
	passed, err := a.userInteractiveAuth(r, uiaRequirement{action: "POST /register", flows: a.registrationFlows(),
		emailPurpose: purposeRegister}, req.Auth)
	if err != nil {
		return accounts.Login{}, err
	}
	if err := a.limit(r, a.live().limits.registerIP, clientIP(r)); err != nil {
		return accounts.Login{}, err
	}
	if req.Username == "" {
		req.Username = strings.ToLower(accounts.NewDeviceID())
	}
	return a.accounts.Register(r.Context(), accounts.NewUser{
		Localpart: req.Username, Password: req.Password,
		DeviceID: req.DeviceID, DeviceDisplayName: req.InitialDeviceDisplayName,
		InhibitLogin: req.InhibitLogin, RefreshToken: req.RefreshToken,
		InTx: func(ctx context.Context, tx *sql.Tx) error {
			if err := a.bindRegistrationEmail(ctx, tx, passed, a.accounts.UserID(req.Username)); err != nil {
				return err
			}
			return passed.consume(ctx, tx)
		},
	})
}

// bindRegistrationEmail binds the address validated in the registration's
// email stage, if it had one, to the new account.
func (a *API) bindRegistrationEmail(ctx context.Context, tx *sql.Tx, passed uiaPassed, userID string) error {
	sess, err := storage.ThreePIDSessionOfUIA(ctx, tx, passed.session)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	err = storage.InsertThreePID(ctx, tx, storage.ThreePID{Medium: sess.Medium, Address: sess.Address, UserID: userID,
		ValidatedTS: sess.ValidatedTS, AddedTS: time.Now().UnixMilli()})
	if errors.Is(err, storage.ErrConflict) {
		return errThreePIDInUse()
	}
	if err != nil {
		return err
	}
	return storage.DeleteThreePIDSession(ctx, tx, sess.SessionID)
}

// registerGuest makes a guest account: no authentication, no password, a
// generated user name (client-server API, Guest access).
func (a *API) registerGuest(r *http.Request, req registerRequest) (accounts.Login, error) {
	if !a.conf().GuestAccess {
		return accounts.Login{}, mxhttp.GuestAccess("Guest access is disabled on this server")
	}
	if err := a.limit(r, a.live().limits.registerIP, clientIP(r)); err != nil {
		return accounts.Login{}, err
	}
	return a.accounts.Register(r.Context(), accounts.NewUser{
		Localpart: "guest-" + strings.ToLower(accounts.NewDeviceID()), Guest: true,
		DeviceID: req.DeviceID, DeviceDisplayName: req.InitialDeviceDisplayName, RefreshToken: req.RefreshToken,
	})
}

// checkAvailable validates a requested localpart and reports it taken
// (M_USER_IN_USE) or reserved for an application service (M_EXCLUSIVE).
func (a *API) checkAvailable(r *http.Request, localpart string) error {
	if err := accounts.ValidateLocalpart(localpart, a.conf().ServerName); err != nil {
		return err
	}
	if localpart == a.conf().ServerNoticesLocalpart {
		return mxhttp.UserInUse("The user name %s is reserved for server notices", localpart)
	}
	if a.exclusiveUserID(a.accounts.UserID(localpart)) {
		return mxhttp.Exclusive("This user name is reserved by an application service")
	}
	taken, err := a.db.UserExists(r.Context(), localpart)
	if err != nil {
		return err
	}
	if taken {
		return mxhttp.UserInUse("The user name %s is already taken", localpart)
	}
	return nil
}

// GET /register/available
func (a *API) registerAvailable(r *http.Request, _ accounts.Caller) (any, error) {
	username := strings.ToLower(r.URL.Query().Get("username"))
	if err := a.limit(r, a.live().limits.loginIP, clientIP(r)); err != nil {
		return nil, err
	}
	if err := a.checkAvailable(r, username); err != nil {
		return nil, err
	}
	return map[string]bool{"available": true}, nil
}

// GET /v1/register/m.login.registration_token/validity
func (a *API) registrationTokenValidity(r *http.Request, _ accounts.Caller) (any, error) {
	if a.conf().Registration == config.RegistrationClosed {
		return nil, mxhttp.Forbidden("Registration is not enabled on this homeserver")
	}
	if err := a.limit(r, a.live().limits.loginIP, clientIP(r)); err != nil {
		return nil, err
	}
	token := r.URL.Query().Get("token")
	if token == "" {
		return nil, mxhttp.MissingParam("token is required")
	}
	t, err := a.db.GetRegistrationToken(r.Context(), token)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	valid := err == nil && t.Valid(time.Now().UnixMilli())
	return map[string]bool{"valid": valid}, nil
}
