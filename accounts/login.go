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
	Type string `json:"type"`
	User string `json:"user"`
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
