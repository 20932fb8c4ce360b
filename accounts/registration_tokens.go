package accounts

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Registration tokens (client-server API, Token-authenticated registration)
// with the rules of Synapse's admin API, shared by
// /_synapse/admin/v1/registration_tokens and `hearth registration-token`.

// tokenAlphabet is the characters Synapse allows and generates.
const tokenAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"

// NewRegistrationToken describes a token to create. With an empty Token one
// of Length characters (default 16) is generated.
type NewRegistrationToken struct {
	Token       string
	Length      int
	UsesAllowed *int64
	ExpiryTime  *int64 // ms since the epoch
}

// CreateRegistrationToken validates and stores a new token.
func (a *Accounts) CreateRegistrationToken(ctx context.Context, nt NewRegistrationToken) (storage.RegistrationToken, error) {
	if err := validTokenLimits(nt.UsesAllowed, nt.ExpiryTime); err != nil {
		return storage.RegistrationToken{}, err
	}
	generate := nt.Token == ""
	if generate {
		if nt.Length == 0 {
			nt.Length = 16
		}
		if nt.Length < 1 || nt.Length > 64 {
			return storage.RegistrationToken{}, mxhttp.InvalidParam("length must be an integer between 1 and 64")
		}
	} else if err := ValidRegistrationToken(nt.Token); err != nil {
		return storage.RegistrationToken{}, err
	}
	for attempt := 0; ; attempt++ {
		t := storage.RegistrationToken{Token: nt.Token, UsesAllowed: nt.UsesAllowed, ExpiryTime: nt.ExpiryTime}
		if generate {
			t.Token = randomToken(nt.Length)
		}
		err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error { return storage.InsertRegistrationToken(ctx, tx, t) })
		switch {
		case err == nil:
			return t, nil
		case errors.Is(err, storage.ErrConflict) && generate && attempt < 3:
			continue
		case errors.Is(err, storage.ErrConflict):
			return t, mxhttp.InvalidParam("Token already exists")
		default:
			return t, fmt.Errorf("creating registration token: %w", err)
		}
	}
}

// UpdateRegistrationToken changes the limits of a token. A nil argument
// leaves that field unchanged; a pointer to nil removes the limit.
func (a *Accounts) UpdateRegistrationToken(ctx context.Context, token string, usesAllowed, expiryTime **int64) (storage.RegistrationToken, error) {
	var u, e *int64
	if usesAllowed != nil {
		u = *usesAllowed
	}
	if expiryTime != nil {
		e = *expiryTime
	}
	if err := validTokenLimits(u, e); err != nil {
		return storage.RegistrationToken{}, err
	}
	err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
		return storage.UpdateRegistrationToken(ctx, tx, token, usesAllowed, expiryTime)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return storage.RegistrationToken{}, mxhttp.NotFound("No such registration token")
	}
	if err != nil {
		return storage.RegistrationToken{}, err
	}
	return a.DB.GetRegistrationToken(ctx, token)
}

// DeleteRegistrationToken revokes a token; sessions holding it can no longer
// complete a registration that counts against it.
func (a *Accounts) DeleteRegistrationToken(ctx context.Context, token string) error {
	err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error { return storage.DeleteRegistrationToken(ctx, tx, token) })
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("No such registration token")
	}
	return err
}

// ValidRegistrationToken checks a chosen token: 1 to 64 characters of
// [A-Za-z0-9._~-] (the spec's opaque identifier grammar).
func ValidRegistrationToken(token string) error {
	if len(token) < 1 || len(token) > 64 {
		return mxhttp.InvalidParam("token must be 1 to 64 characters long")
	}
	for i := 0; i < len(token); i++ {
		if !containsByte(tokenAlphabet, token[i]) {
			return mxhttp.InvalidParam("token may contain only A-Z, a-z, 0-9 and ._~-")
		}
	}
	return nil
}

func validTokenLimits(usesAllowed, expiryTime *int64) error {
	if usesAllowed != nil && *usesAllowed < 0 {
		return mxhttp.InvalidParam("uses_allowed must be a non-negative integer or null")
	}
	if expiryTime != nil && *expiryTime < time.Now().UnixMilli() {
		return mxhttp.InvalidParam("expiry_time must not be in the past")
	}
	return nil
}

func containsByte(s string, c byte) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return true
		}
	}
	return false
}

// randomToken returns n letters and digits (as Synapse generates), drawn
// without modulo bias.
func randomToken(n int) string {
	out := make([]byte, 0, n)
	var buf [64]byte
	for len(out) < n {
		if _, err := rand.Read(buf[:]); err != nil {
			panic("crypto/rand failed: " + err.Error())
		}
		for _, c := range buf {
			if c < 248 && len(out) < n { // 248 = 4 * 62
				out = append(out, tokenAlphabet[c%62])
			}
		}
	}
	return string(out)
}
