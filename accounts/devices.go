package accounts

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// NewDevice describes a login: a new device, or new tokens for an existing
// device of the user when DeviceID names one.
type NewDevice struct {
	UserID       string
	DeviceID     string // empty: generate one
	DisplayName  string // used only when the device is new
	RefreshToken bool   // issue a refresh token and an expiring access token
	// Client names the application signing in when the caller knows it
	// (an OAuth client's client_name), for the sign-in alert.
	Client string
	// Quiet: no sign-in alert (the first device of a new account, an
	// application service logging in a user of its own).
	Quiet bool
}

// SignIn is a login that gave a device new tokens while the user had
// other devices: the sign-in alert's subject.
type SignIn struct {
	UserID, DeviceID string
	DisplayName      string // as given at login; empty: none given
	Client           string // see NewDevice.Client
	Reused           bool   // an existing device ID signed in again
	At               time.Time
}

// SignInHook runs after the login's transaction commits, on the request's
// goroutine with its context, which it may read but must not block on:
// the login is answered after it.
type SignInHook func(ctx context.Context, s SignIn)

// OnSignIn registers a hook; call it while wiring the server.
func (a *Accounts) OnSignIn(h SignInHook) { a.signInHooks = append(a.signInHooks, h) }

// LoginDevice creates or reuses a device and issues its tokens inside tx.
// Reusing a device ID revokes that device's previous access and refresh
// tokens (client-server API, Relationship between access tokens and
// devices); no other device of the user is touched.
func (a *Accounts) LoginDevice(ctx context.Context, tx *sql.Tx, nd NewDevice, now time.Time) (Login, error) {
	login := Login{UserID: nd.UserID, DeviceID: nd.DeviceID, AccessToken: NewToken("mat_")}
	if login.DeviceID == "" {
		login.DeviceID = NewDeviceID()
	}
	exists, err := storage.DeviceExists(ctx, tx, nd.UserID, login.DeviceID)
	if err != nil {
		return Login{}, err
	}
	if exists {
		a.forgetTokensOnCommit(tx, nd.UserID)
		if err := storage.DeleteDeviceTokens(ctx, tx, nd.UserID, login.DeviceID); err != nil {
			return Login{}, err
		}
	} else if err := a.AddDevice(ctx, tx, nd.UserID, login.DeviceID, nd.DisplayName, now); err != nil {
		return Login{}, err
	}
	if err := a.issueTokens(ctx, tx, &login, nd.RefreshToken, nil, now); err != nil {
		return Login{}, err
	}
	if !nd.Quiet && len(a.signInHooks) > 0 {
		// Only a user with another device has someone to tell; so the
		// first device of an account never raises an alert.
		others, err := storage.HasOtherDevice(ctx, tx, nd.UserID, login.DeviceID)
		if err != nil {
			return Login{}, err
		}
		if others {
			s := SignIn{UserID: nd.UserID, DeviceID: login.DeviceID, DisplayName: nd.DisplayName, Client: nd.Client, Reused: exists, At: now}
			a.DB.AfterCommit(tx, func() {
				for _, h := range a.signInHooks {
					h(ctx, s)
				}
			})
		}
	}
	return login, nil
}

// AddDevice creates a device that has no access token yet, inside tx,
// within the per-user device limit, and runs the device-added hooks.
// LoginDevice uses it; so does a dehydrated device (MSC3814), which never
// gets a token.
func (a *Accounts) AddDevice(ctx context.Context, tx *sql.Tx, userID, deviceID, displayName string, now time.Time) error {
	if a.MaxDevicesPerUser > 0 {
		ids, err := storage.DeviceIDs(ctx, tx, userID)
		if err != nil {
			return err
		}
		if len(ids) >= a.MaxDevicesPerUser {
			return mxhttp.UserLimit(a.LimitInfoURI, "This account already has the maximum of %d devices; log out or delete one first", a.MaxDevicesPerUser)
		}
	}
	var name *string
	if displayName != "" {
		name = &displayName
	}
	if err := storage.UpsertDevice(ctx, tx, storage.Device{UserID: userID, DeviceID: deviceID, DisplayName: name, CreatedTS: now.UnixMilli()}); err != nil {
		return err
	}
	for _, h := range a.addedHooks {
		if err := h(ctx, tx, userID, deviceID); err != nil {
			return err
		}
	}
	return nil
}

// issueTokens stores login.AccessToken and, when refresh is set, a new
// refresh token with an access token that expires. prevRefresh is the
// refresh token being exchanged, if any.
func (a *Accounts) issueTokens(ctx context.Context, tx *sql.Tx, login *Login, refresh bool, prevRefresh []byte, now time.Time) error {
	at := storage.AccessToken{Token: login.AccessToken, UserID: login.UserID, DeviceID: login.DeviceID, CreatedTS: now.UnixMilli(), PrevRefreshHash: prevRefresh}
	if refresh {
		lifetime := a.RefreshableTokenLifetime
		if lifetime <= 0 {
			lifetime = 5 * time.Minute
		}
		login.RefreshToken = NewToken("mar_")
		login.ExpiresInMS = lifetime.Milliseconds()
		at.RefreshToken = login.RefreshToken
		at.ExpiresTS = now.Add(lifetime).UnixMilli()
		if err := storage.InsertRefreshToken(ctx, tx, login.RefreshToken, login.UserID, login.DeviceID, prevRefresh, now.UnixMilli()); err != nil {
			return err
		}
	}
	return storage.InsertAccessToken(ctx, tx, at)
}

// Refresh exchanges a refresh token for a new access token and refresh
// token on the same device. The old refresh token keeps working until the
// new access or refresh token is first used (client-server API, Refreshing
// access tokens), so a client that lost the response can retry.
func (a *Accounts) Refresh(ctx context.Context, refreshToken string) (Login, error) {
	var login Login
	err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
		owner, err := storage.LookupRefreshToken(ctx, tx, refreshToken)
		if errors.Is(err, storage.ErrNotFound) {
			return mxhttp.UnknownToken("Unknown refresh token").With("soft_logout", false)
		}
		if err != nil {
			return err
		}
		// A locked account cannot get a new access token (v1.12).
		if locked, err := storage.UserLocked(ctx, tx, owner.UserID); err != nil {
			return err
		} else if locked {
			return UserLocked()
		}
		// Using this refresh token is a first use of its generation: the
		// generation before it dies now.
		if len(owner.PrevHash) > 0 {
			a.forgetTokensOnCommit(tx, owner.UserID)
			if err := storage.RevokeRefreshGeneration(ctx, tx, owner.PrevHash); err != nil {
				return err
			}
		}
		login = Login{UserID: owner.UserID, DeviceID: owner.DeviceID, AccessToken: NewToken("mat_")}
		return a.issueTokens(ctx, tx, &login, true, storage.TokenHash(refreshToken), time.Now())
	})
	if err != nil {
		return Login{}, fmt.Errorf("refreshing: %w", err)
	}
	return login, nil
}

// DeviceDeletedHook runs inside the transaction that deletes a user's
// devices. Modules that keep per-device state (end-to-end keys, to-device
// inboxes, device-list updates) register one with OnDevicesDeleted so a
// deleted device leaves nothing behind and nothing half-deleted.
type DeviceDeletedHook func(ctx context.Context, tx *sql.Tx, userID string, deviceIDs []string) error

// DeviceAddedHook runs inside the transaction that creates a device (a
// new login), so the user's other devices learn of it.
type DeviceAddedHook func(ctx context.Context, tx *sql.Tx, userID, deviceID string) error

// OnDeviceAdded registers a hook; call it while wiring the server.
func (a *Accounts) OnDeviceAdded(h DeviceAddedHook) { a.addedHooks = append(a.addedHooks, h) }

// OnDevicesDeleted registers a hook; call it while wiring the server, before
// requests are served.
func (a *Accounts) OnDevicesDeleted(h DeviceDeletedHook) { a.deviceHooks = append(a.deviceHooks, h) }

// DeleteDevices deletes devices of one user with their tokens inside tx,
// then runs the registered hooks. Devices the user does not have are
// ignored.
func (a *Accounts) DeleteDevices(ctx context.Context, tx *sql.Tx, userID string, deviceIDs []string) error {
	a.forgetTokensOnCommit(tx, userID)
	for _, id := range deviceIDs {
		if err := storage.DeleteDeviceTokens(ctx, tx, userID, id); err != nil {
			return err
		}
		if err := storage.DeleteDeviceRow(ctx, tx, userID, id); err != nil {
			return err
		}
	}
	for _, h := range a.deviceHooks {
		if err := h(ctx, tx, userID, deviceIDs); err != nil {
			return fmt.Errorf("device deletion hook: %w", err)
		}
	}
	return nil
}

// DeleteOtherDevices deletes every device of the user except keep (which
// may be empty to delete all).
func (a *Accounts) DeleteOtherDevices(ctx context.Context, tx *sql.Tx, userID, keep string) error {
	ids, err := storage.DeviceIDs(ctx, tx, userID)
	if err != nil {
		return err
	}
	del := ids[:0]
	for _, id := range ids {
		if id != keep {
			del = append(del, id)
		}
	}
	if len(del) == 0 {
		return nil
	}
	return a.DeleteDevices(ctx, tx, userID, del)
}
