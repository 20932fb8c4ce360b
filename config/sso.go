package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"

	"go.yaml.in/yaml/v3"
)

// SSO linking policies: what an upstream identity with no link yet may be
// linked to (docs/sign-in.md, Company SSO).
const (
	// SSOLinkNever links nothing: an unknown identity gets a new account
	// (if registration allows) or is refused. The default.
	SSOLinkNever = "never"
	// SSOLinkEmail links to the account holding the identity's email as a
	// validated address, when the provider says email_verified.
	SSOLinkEmail = "email"
	// SSOLinkLocalpart links to the account of the mapped localpart: the
	// provider is trusted to own every name on this server.
	SSOLinkLocalpart = "localpart"
)

// SSO registration policies: whether an identity with no account gets one.
const (
	// SSORegisterAuto follows registration: open makes accounts, token
	// and closed do not (there is no token to give). The default.
	SSORegisterAuto = "auto"
	// SSORegisterAlways makes accounts even when registration is closed:
	// the provider's users are the server's users.
	SSORegisterAlways = "always"
	// SSORegisterNever never makes accounts through this provider.
	SSORegisterNever = "never"
)

// SSOProvider is an upstream OpenID Connect provider users may sign in
// with (company SSO), shown on the sign-in page and offered to classic
// clients as an m.login.sso identity provider.
type SSOProvider struct {
	// ID is the identity provider's id in m.login.sso and in the paths
	// (opaque identifier grammar); Name is shown on the button; Brand and
	// Icon (an mxc:// URI) are optional hints for clients.
	ID    string `yaml:"id" json:"id"`
	Name  string `yaml:"name" json:"name"`
	Brand string `yaml:"brand,omitempty" json:"brand,omitempty"`
	Icon  string `yaml:"icon,omitempty" json:"icon,omitempty"`
	// Issuer is the provider's issuer URL; its discovery document is at
	// Issuer + "/.well-known/openid-configuration".
	Issuer   string `yaml:"issuer" json:"issuer"`
	ClientID string `yaml:"client_id" json:"client_id"`
	// The client secret: given inline, read from a file, or read from
	// the environment variable named here (exactly one of the three).
	ClientSecret     string `yaml:"client_secret,omitempty" json:"client_secret,omitempty"`
	ClientSecretFile string `yaml:"client_secret_file,omitempty" json:"client_secret_file,omitempty"`
	ClientSecretEnv  string `yaml:"client_secret_env,omitempty" json:"client_secret_env,omitempty"`
	// Scopes asked for; default openid, profile, email.
	Scopes []string `yaml:"scopes,omitempty" json:"scopes,omitempty"`
	// Claims mapped to the new account: the localpart (default
	// preferred_username), display name (default name) and email
	// (default email).
	LocalpartClaim   string `yaml:"localpart_claim,omitempty" json:"localpart_claim,omitempty"`
	DisplayNameClaim string `yaml:"display_name_claim,omitempty" json:"display_name_claim,omitempty"`
	EmailClaim       string `yaml:"email_claim,omitempty" json:"email_claim,omitempty"`
	// LinkExisting is never (default), email or localpart.
	LinkExisting string `yaml:"link_existing,omitempty" json:"link_existing,omitempty"`
	// Register is auto (default), always or never.
	Register string `yaml:"register,omitempty" json:"register,omitempty"`
}

// SSOProviders are the configured providers. From the environment or a
// flag they are given as a JSON (or YAML flow) list.
type SSOProviders []SSOProvider

// UnmarshalText reads the list from an environment variable or a flag.
func (p *SSOProviders) UnmarshalText(b []byte) error {
	var out []SSOProvider
	if err := yaml.Unmarshal(b, &out); err != nil {
		return fmt.Errorf("not a list of providers: %v", err)
	}
	*p = out
	return nil
}

// Provider returns the provider with the given id.
func (p SSOProviders) Provider(id string) (SSOProvider, bool) {
	for _, sp := range p {
		if sp.ID == id {
			return sp, true
		}
	}
	return SSOProvider{}, false
}

// WithDefaults fills in the defaults of the optional fields.
func (sp SSOProvider) WithDefaults() SSOProvider {
	if len(sp.Scopes) == 0 {
		sp.Scopes = []string{"openid", "profile", "email"}
	}
	if sp.LocalpartClaim == "" {
		sp.LocalpartClaim = "preferred_username"
	}
	if sp.DisplayNameClaim == "" {
		sp.DisplayNameClaim = "name"
	}
	if sp.EmailClaim == "" {
		sp.EmailClaim = "email"
	}
	if sp.LinkExisting == "" {
		sp.LinkExisting = SSOLinkNever
	}
	if sp.Register == "" {
		sp.Register = SSORegisterAuto
	}
	return sp
}

// Secret is the client secret, from wherever it is configured.
func (sp SSOProvider) Secret() (string, error) {
	switch {
	case sp.ClientSecretFile != "":
		b, err := os.ReadFile(sp.ClientSecretFile)
		if err != nil {
			return "", fmt.Errorf("config: sso_providers %s: client_secret_file: %w", sp.ID, err)
		}
		s := strings.TrimSpace(string(b))
		if s == "" {
			return "", fmt.Errorf("config: sso_providers %s: client_secret_file %s is empty", sp.ID, sp.ClientSecretFile)
		}
		return s, nil
	case sp.ClientSecretEnv != "":
		s := strings.TrimSpace(os.Getenv(sp.ClientSecretEnv))
		if s == "" {
			return "", fmt.Errorf("config: sso_providers %s: the environment variable %s is empty or unset", sp.ID, sp.ClientSecretEnv)
		}
		return s, nil
	}
	return sp.ClientSecret, nil
}

// validateSSO checks every provider: a unique id of the opaque identifier
// grammar, an https issuer (http only on a loopback address, for tests),
// at most one way of giving the secret, and known policies.
func (c *Config) validateSSO() error {
	seen := map[string]bool{}
	for i, sp := range c.SSOProviders {
		bad := func(format string, a ...any) error {
			return fmt.Errorf("config: sso_providers[%d] (%s): %s", i, sp.ID, fmt.Sprintf(format, a...))
		}
		if sp.ID == "" || len(sp.ID) > 255 || strings.Trim(sp.ID, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~") != "" {
			return bad("id must be 1 to 255 of the characters A-Z a-z 0-9 - . _ ~")
		}
		if seen[sp.ID] {
			return bad("id is used twice")
		}
		seen[sp.ID] = true
		if sp.Name == "" {
			return bad("name must be set")
		}
		u, err := url.Parse(sp.Issuer)
		if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || (u.Scheme != "https" && !(u.Scheme == "http" && loopbackHost(u.Hostname()))) {
			return bad("issuer %q is not an https URL (http only on a loopback address)", sp.Issuer)
		}
		if sp.ClientID == "" {
			return bad("client_id must be set")
		}
		n := 0
		for _, s := range []string{sp.ClientSecret, sp.ClientSecretFile, sp.ClientSecretEnv} {
			if s != "" {
				n++
			}
		}
		if n > 1 {
			return bad("give at most one of client_secret, client_secret_file and client_secret_env")
		}
		switch sp.LinkExisting {
		case "", SSOLinkNever, SSOLinkEmail, SSOLinkLocalpart:
		default:
			return bad("link_existing %q is not one of never, email, localpart", sp.LinkExisting)
		}
		switch sp.Register {
		case "", SSORegisterAuto, SSORegisterAlways, SSORegisterNever:
		default:
			return bad("register %q is not one of auto, always, never", sp.Register)
		}
		if sp.Icon != "" && !strings.HasPrefix(sp.Icon, "mxc://") {
			return bad("icon %q is not an mxc:// URI", sp.Icon)
		}
		if _, err := sp.Secret(); err != nil {
			return err
		}
	}
	return nil
}

func loopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
