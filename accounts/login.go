package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Identifier is the spec's identifier object (client-server API, Identifier
// types) together with the deprecated top-level `user` field that login and
// m.login.password auth dicts may carry instead.
type Identifier struct {
	Type    string `json:"type"`
	User    string `json:"user"`
	Medium  string `json:"medium"`  // m.id.thirdparty
	Address string `json:"address"` // m.id.thirdparty
}

// PasswordCredentials are the fields of an m.login.password attempt.
type PasswordCredentials struct {
	Identifier *Identifier `json:"identifier"`
	User       string      `json:"user"` // deprecated spelling of identifier.user
	Medium     string      `json:"medium"`
	Address    string      `json:"address"`
	Password   string      `json:"password"`
}

// ParsePasswordCredentials decodes an m.login.password body or auth dict.
func ParsePasswordCredentials(raw json.RawMessage) (PasswordCredentials, error) {
	var pc PasswordCredentials
	if err := json.Unmarshal(raw, &pc); err != nil {
		return pc, mxhttp.BadJSON("Malformed m.login.password credentials: %v", err)
	}
	return pc, nil
}

// Localpart resolves the credentials to one of our localparts: the
// identifier (m.id.user only) or the legacy `user`, given as a localpart or
// a full user ID, with the localpart folded to lower case as at
// registration. Third-party identifiers are not supported.
func (a *Accounts) Localpart(pc PasswordCredentials) (string, error) {
	user := pc.User
	if pc.Identifier != nil {
		switch pc.Identifier.Type {
		case "m.id.user":
			user = pc.Identifier.User
		case "m.id.thirdparty", "m.id.phone":
			return "", mxhttp.Forbidden("Third-party identifiers are not supported on this server")
		default:
			return "", mxhttp.Unknown("Unknown identifier type %q", pc.Identifier.Type)
		}
	} else if pc.Medium != "" || pc.Address != "" {
		return "", mxhttp.Forbidden("Third-party identifiers are not supported on this server")
	}
	if user == "" {
		return "", mxhttp.MissingParam("A user identifier is required")
	}
	if strings.HasPrefix(user, "@") {
		local, server, ok := strings.Cut(user[1:], ":")
		if !ok || server != a.ServerName {
			return "", mxhttp.Forbidden("Invalid username or password")
		}
		user = local
	}
	return strings.ToLower(user), nil
}

// LoginLocalpart is Localpart that also accepts an email address
// (m.id.thirdparty with medium email, or the legacy medium and address
// fields) and finds the account it is bound to. An address bound to no
// account gives a localpart no account has, so CheckPassword spends the
// same bcrypt work and answers as for a wrong password: a login attempt
// does not tell whether an address is known.
func (a *Accounts) LoginLocalpart(ctx context.Context, pc PasswordCredentials) (string, error) {
	medium, address := pc.Medium, pc.Address
	if pc.Identifier != nil {
		if pc.Identifier.Type != "m.id.thirdparty" {
			return a.Localpart(pc)
		}
		medium, address = pc.Identifier.Medium, pc.Identifier.Address
	} else if medium == "" && address == "" {
		return a.Localpart(pc)
	}
	if medium != "email" {
		return "", mxhttp.Forbidden("Only email addresses can be used to log in on this server")
	}
	if address == "" {
		return "", mxhttp.MissingParam("address is required with medium email")
	}
	userID, err := storage.UserOfThreePID(ctx, a.DB.Read(), "email", NormalizeEmail(address))
	if errors.Is(err, storage.ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	local, _, _ := strings.Cut(strings.TrimPrefix(userID, "@"), ":")
	return local, nil
}

// NormalizeEmail is the form email addresses are stored and looked up in:
// trimmed and lower case (as Synapse does; mail providers treat the local
// part case-insensitively in practice).
func NormalizeEmail(address string) string { return strings.ToLower(strings.TrimSpace(address)) }

// CheckPassword returns the user whose localpart and password match, or
// 403 M_FORBIDDEN. An unknown user costs the same bcrypt work as a wrong
// password, so timing does not reveal which accounts exist.
func (a *Accounts) CheckPassword(ctx context.Context, localpart, password string) (storage.User, error) {
	u, err := a.DB.GetUserByLocalpart(ctx, localpart)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return u, err
	}
	ok, err := a.Passwords.Check(ctx, u.PasswordHash, password)
	if err != nil {
		return u, err
	}
	if !ok {
		return storage.User{}, mxhttp.Forbidden("Invalid username or password")
	}
	return u, nil
}

// UserID is the full ID of a localpart on this server.
func (a *Accounts) UserID(localpart string) string { return "@" + localpart + ":" + a.ServerName }
