// Package accounts creates users, devices and access tokens. The client
// API's /register, the Synapse-compatible admin registration and the
// `hearth register-user` command all register through it.
package accounts

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/appservice"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Accounts is the set of user accounts of this server.
type Accounts struct {
	DB         *storage.DB
	ServerName string
	Passwords  *Passwords
	// RefreshableTokenLifetime is how long an access token issued with a
	// refresh token lives.
	RefreshableTokenLifetime time.Duration
	// MaxDevicesPerUser refuses new logins beyond this many devices; 0 means
	// no limit.
	MaxDevicesPerUser int
	// LimitInfoURI is the info_uri of M_USER_LIMIT_EXCEEDED (v1.18).
	LimitInfoURI string
	// TokensRevoked, when set, is told (after commit) of every user some of
	// whose access tokens were revoked, so that other processes sharing
	// the database drop their cached tokens too (ForgetTokens). Set it
	// before serving.
	TokensRevoked func(userID string)
	// AppServices are the registered application services, whose
	// as_tokens authenticate too; nil: none.
	AppServices *appservice.Registry

	lastSeenState
	tokens           tokenCache
	deviceHooks      []DeviceDeletedHook
	addedHooks       []DeviceAddedHook
	signInHooks      []SignInHook
	deactivatedHooks []DeactivatedHook
}

// NewUser describes an account to create.
type NewUser struct {
	Localpart string
	Password  string // empty: no password login
	Admin     bool
	Guest     bool
	UserType  string
	// Device fields; with InhibitLogin no device or token is made.
	DeviceID          string
	DeviceDisplayName string
	InhibitLogin      bool
	RefreshToken      bool   // the client supports refresh tokens
	DisplayName       string // initial profile display name; default the localpart
	// InTx, when set, runs inside the registration's transaction: a failure
	// rolls the registration back. /register consumes its UIA session here,
	// so a registration token is used exactly once per account made.
	InTx func(ctx context.Context, tx *sql.Tx) error
}

// Login is what a successful registration or login hands the client.
type Login struct {
	UserID      string `json:"user_id"`
	DeviceID    string `json:"device_id,omitempty"`
	AccessToken string `json:"access_token,omitempty"`
	// With refresh tokens: the access token's lifetime and the refresh token.
	ExpiresInMS  int64  `json:"expires_in_ms,omitempty"`
	RefreshToken string `json:"refresh_token,omitempty"`
}

// Register validates and creates a user, and unless InhibitLogin a device
// with an access token, all in one transaction. The password is hashed
// before the transaction starts, so no database lock is held during it.
func (a *Accounts) Register(ctx context.Context, nu NewUser) (Login, error) {
	nu.Localpart = strings.ToLower(nu.Localpart) // the spec folds case on registration
	if err := ValidateLocalpart(nu.Localpart, a.ServerName); err != nil {
		return Login{}, err
	}
	var hash string
	if nu.Password != "" {
		if len(nu.Password) > 72 {
			return Login{}, mxhttp.WeakPassword("Passwords longer than 72 bytes are not supported")
		}
		var err error
		if hash, err = a.Passwords.Hash(ctx, nu.Password); err != nil {
			return Login{}, err
		}
	}
	userID := "@" + nu.Localpart + ":" + a.ServerName
	displayName := nu.DisplayName
	if displayName == "" {
		displayName = nu.Localpart
	}
	now := time.Now()
	var login Login
	err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
		err := storage.InsertUser(ctx, tx, storage.User{
			UserID: userID, Localpart: nu.Localpart, PasswordHash: hash,
			IsAdmin: nu.Admin, IsGuest: nu.Guest, UserType: nu.UserType, CreatedTS: now.UnixMilli(),
		}, displayName)
		if err != nil {
			return err
		}
		if nu.InTx != nil {
			if err := nu.InTx(ctx, tx); err != nil {
				return err
			}
		}
		if nu.InhibitLogin {
			login = Login{UserID: userID}
			return nil
		}
		login, err = a.LoginDevice(ctx, tx, NewDevice{UserID: userID, DeviceID: nu.DeviceID, DisplayName: nu.DeviceDisplayName, RefreshToken: nu.RefreshToken, Quiet: true}, now)
		return err
	})
	if errors.Is(err, storage.ErrConflict) {
		return Login{}, mxhttp.UserInUse("The user ID %s is already taken", userID)
	}
	if err != nil {
		return Login{}, fmt.Errorf("registering %s: %w", userID, err)
	}
	return login, nil
}

// NewToken returns prefix + 256 random bits, URL-safe.
func NewToken(prefix string) string {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error()) // never happens on Linux
	}
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// NewDeviceID returns a random device ID of ten upper-case letters, the
// shape other servers use, easy to read out when verifying.
func NewDeviceID() string {
	var b [10]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("crypto/rand failed: " + err.Error())
	}
	for i := range b {
		b[i] = 'A' + b[i]%26
	}
	return string(b[:])
}

// ValidateLocalpart applies the spec's user ID grammar to a new user
// (appendices, User Identifiers): only a-z, 0-9 and ._=-/+ are allowed for
// new users (the historical characters are refused), and the full ID must
// be at most 255 bytes.
func ValidateLocalpart(localpart, serverName string) error {
	if localpart == "" {
		return mxhttp.InvalidUsername("The user name must not be empty")
	}
	for _, c := range []byte(localpart) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0) {
			return mxhttp.InvalidUsername("User names may contain only a-z, 0-9 and ._=-/+ (found %q)", c)
		}
	}
	if len("@"+localpart+":"+serverName) > 255 {
		return mxhttp.InvalidUsername("The user ID would be longer than 255 bytes")
	}
	return nil
}

// ResetPassword sets a user's password without the old one (an operator's
// recovery: hearth reset-password, the admin API) and, when logoutDevices
// is set, signs every device out. Deactivated accounts stay deactivated.
func (a *Accounts) ResetPassword(ctx context.Context, userID, password string, logoutDevices bool) error {
	if password == "" || len(password) > 72 {
		return mxhttp.WeakPassword("A password must be 1 to 72 bytes")
	}
	u, err := a.DB.GetUser(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("No user %s", userID)
	}
	if err != nil {
		return err
	}
	if u.Deactivated {
		return mxhttp.UserDeactivated("%s is deactivated", userID)
	}
	hash, err := a.Passwords.Hash(ctx, password) // outside the transaction
	if err != nil {
		return err
	}
	return a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
		if err := storage.SetPasswordHash(ctx, tx, userID, hash); err != nil {
			return err
		}
		if logoutDevices {
			return a.DeleteOtherDevices(ctx, tx, userID, "")
		}
		return nil
	})
}

// AuthenticateAdmin is the caller of a valid access token of a server
// admin, else 401 or 403 M_FORBIDDEN: the access of admin endpoints.
func (a *Accounts) AuthenticateAdmin(r *http.Request) (Caller, error) {
	c, err := a.Authenticate(r)
	if err != nil {
		return c, err
	}
	u, err := a.DB.GetUser(r.Context(), c.UserID)
	if err != nil {
		return c, err
	}
	if !u.IsAdmin {
		return c, mxhttp.Forbidden("You are not a server admin")
	}
	return c, nil
}
