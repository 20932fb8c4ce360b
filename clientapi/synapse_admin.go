package clientapi

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"net/http"
	"sync"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// Shared-secret registration, compatible with Synapse's
// POST /_synapse/admin/v1/register: tooling (register_new_matrix_user) and
// Complement create users with it. It is served only while
// registration_shared_secret is set.

const nonceLifetime = 60 * time.Second

// nonceStore hands out single-use nonces that expire. Nonces live in memory:
// a client must POST to the process that gave it the nonce.
type nonceStore struct {
	mu     sync.Mutex
	issued map[string]time.Time
}

func newNonceStore() *nonceStore { return &nonceStore{issued: map[string]time.Time{}} }

func (s *nonceStore) issue() string {
	n := accounts.NewToken("")
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	for k, t := range s.issued { // keep the map bounded by dropping expired nonces
		if now.Sub(t) > nonceLifetime {
			delete(s.issued, k)
		}
	}
	s.issued[n] = now
	return n
}

// take consumes a nonce, reporting whether it was issued and is still fresh.
func (s *nonceStore) take(n string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, ok := s.issued[n]
	delete(s.issued, n)
	return ok && time.Since(t) <= nonceLifetime
}

// withSharedSecret answers 404 M_UNRECOGNIZED, as for an unknown
// endpoint, while no registration shared secret is configured.
func (a *API) withSharedSecret(h func(*http.Request, accounts.Caller) (any, error)) func(*http.Request, accounts.Caller) (any, error) {
	return func(r *http.Request, c accounts.Caller) (any, error) {
		if a.conf().RegistrationSharedSecret == "" {
			return nil, mxhttp.Unrecognized("Unrecognized request: %s %s", r.Method, r.URL.Path)
		}
		return h(r, c)
	}
}

func (a *API) adminRegisterNonce(r *http.Request, _ accounts.Caller) (any, error) {
	return map[string]string{"nonce": a.adminNonces.issue()}, nil
}

type adminRegisterRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	DisplayName string `json:"displayname"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	UserType    string `json:"user_type"`
	MAC         string `json:"mac"`
}

func (a *API) adminRegister(r *http.Request, _ accounts.Caller) (any, error) {
	var req adminRegisterRequest
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	switch {
	case req.Nonce == "":
		return nil, mxhttp.MissingParam("nonce is required")
	case req.Username == "":
		return nil, mxhttp.MissingParam("username is required")
	case req.Password == "":
		return nil, mxhttp.MissingParam("password is required")
	case req.MAC == "":
		return nil, mxhttp.MissingParam("mac is required")
	}
	secret := a.conf().RegistrationSharedSecret
	if secret == "" { // reloaded away since withSharedSecret looked
		return nil, mxhttp.Unrecognized("Unrecognized request: %s %s", r.Method, r.URL.Path)
	}
	if !a.adminNonces.take(req.Nonce) {
		return nil, mxhttp.Unknown("Unrecognised or expired nonce; GET a new one")
	}
	if !hmac.Equal([]byte(adminRegisterMAC(secret, req)), []byte(req.MAC)) {
		return nil, mxhttp.Forbidden("HMAC incorrect")
	}
	login, err := a.accounts.Register(r.Context(), accounts.NewUser{
		Localpart: req.Username, Password: req.Password, Admin: req.Admin,
		UserType: req.UserType, DisplayName: req.DisplayName,
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{
		"user_id": login.UserID, "access_token": login.AccessToken,
		"device_id": login.DeviceID, "home_server": a.conf().ServerName,
	}, nil
}

// adminRegisterMAC is Synapse's MAC: hex HMAC-SHA1 over
// nonce NUL username NUL password NUL admin|notadmin [NUL user_type].
func adminRegisterMAC(secret string, req adminRegisterRequest) string {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(req.Nonce + "\x00" + req.Username + "\x00" + req.Password + "\x00"))
	if req.Admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if req.UserType != "" {
		m.Write([]byte("\x00" + req.UserType))
	}
	return hex.EncodeToString(m.Sum(nil))
}
