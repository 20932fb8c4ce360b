// Package appservice implements the Application Service API: the
// registration files of bridges and other application services, the
// client-server extensions they use (their as_token as an access token,
// identity assertion, registration in their namespaces) and the durable,
// ordered push of room events to them (PUT /_matrix/app/v1/transactions).
package appservice

import (
	"crypto/sha256"
	"fmt"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Namespace is one entry of a registration's users, aliases or rooms
// namespaces.
type Namespace struct {
	Exclusive bool   `yaml:"exclusive"`
	Regex     string `yaml:"regex"`
	re        *regexp.Regexp
}

// Registration is one application service registration file (Application
// Service API, Registration). Keys the spec does not define (unstable
// MSC flags bridges add) are ignored.
type Registration struct {
	ID              string  `yaml:"id"`
	URL             *string `yaml:"url"` // nil or empty: events are not pushed
	ASToken         string  `yaml:"as_token"`
	HSToken         string  `yaml:"hs_token"`
	SenderLocalpart string  `yaml:"sender_localpart"`
	Namespaces      struct {
		Users   []Namespace `yaml:"users"`
		Aliases []Namespace `yaml:"aliases"`
		Rooms   []Namespace `yaml:"rooms"`
	} `yaml:"namespaces"`
	RateLimited *bool `yaml:"rate_limited"` // default true
	// ReceiveEphemeral: push typing, receipts and presence too (v1.13).
	ReceiveEphemeral bool     `yaml:"receive_ephemeral"`
	Protocols        []string `yaml:"protocols"`

	// File is the path the registration was read from, for messages.
	File string `yaml:"-"`
}

// PushURL is where transactions go, "" when the service takes none.
func (reg *Registration) PushURL() string {
	if reg.URL == nil {
		return ""
	}
	return strings.TrimRight(*reg.URL, "/")
}

// IsRateLimited reports whether the service's requests are rate limited
// (rate_limited, true unless the registration says false).
func (reg *Registration) IsRateLimited() bool { return reg.RateLimited == nil || *reg.RateLimited }

// matchAny reports whether s matches one of ns; with exclusiveOnly only
// exclusive namespaces count.
func matchAny(ns []Namespace, s string, exclusiveOnly bool) bool {
	for _, n := range ns {
		if (!exclusiveOnly || n.Exclusive) && n.re.MatchString(s) {
			return true
		}
	}
	return false
}

// OwnsUser reports whether the user ID is in the service's users
// namespaces or is its sender.
func (reg *Registration) OwnsUser(userID, serverName string) bool {
	return userID == "@"+reg.SenderLocalpart+":"+serverName || matchAny(reg.Namespaces.Users, userID, false)
}

// OwnsAlias reports whether the alias is in the service's aliases namespaces.
func (reg *Registration) OwnsAlias(alias string) bool {
	return matchAny(reg.Namespaces.Aliases, alias, false)
}

// Load reads and validates registration files. Errors name the file and
// the field; two registrations sharing an id, as_token or hs_token, or
// one whose as_token equals its hs_token, are refused.
func Load(paths []string, serverName string) ([]*Registration, error) {
	var regs []*Registration
	ids, tokens := map[string]string{}, map[string]string{}
	for _, path := range paths {
		reg, err := loadFile(path, serverName)
		if err != nil {
			return nil, err
		}
		if other, ok := ids[reg.ID]; ok {
			return nil, fmt.Errorf("appservice %s: id: %q is also the id of %s", path, reg.ID, other)
		}
		ids[reg.ID] = path
		for field, tok := range map[string]string{"as_token": reg.ASToken, "hs_token": reg.HSToken} {
			if other, ok := tokens[tok]; ok {
				return nil, fmt.Errorf("appservice %s: %s: the token is already used by %s", path, field, other)
			}
		}
		if reg.ASToken == reg.HSToken {
			return nil, fmt.Errorf("appservice %s: hs_token: must differ from as_token", path)
		}
		tokens[reg.ASToken], tokens[reg.HSToken] = path, path
		regs = append(regs, reg)
	}
	return regs, nil
}

func loadFile(path, serverName string) (*Registration, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("appservice: %w", err)
	}
	reg := &Registration{File: path}
	if err := yaml.Unmarshal(data, reg); err != nil {
		return nil, fmt.Errorf("appservice %s: %w", path, err)
	}
	bad := func(field, format string, a ...any) error {
		return fmt.Errorf("appservice %s: %s: %s", path, field, fmt.Sprintf(format, a...))
	}
	if reg.ID == "" {
		return nil, bad("id", "is required")
	}
	if reg.ASToken == "" {
		return nil, bad("as_token", "is required")
	}
	if reg.HSToken == "" {
		return nil, bad("hs_token", "is required")
	}
	if reg.SenderLocalpart == "" {
		return nil, bad("sender_localpart", "is required")
	}
	if strings.Trim(reg.SenderLocalpart, "abcdefghijklmnopqrstuvwxyz0123456789._=-/+") != "" {
		return nil, bad("sender_localpart", "%q has characters a user name may not contain (a-z, 0-9, ._=-/+)", reg.SenderLocalpart)
	}
	if u := reg.PushURL(); u != "" && !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		return nil, bad("url", "%q must be an http:// or https:// URL, or null", u)
	}
	for _, group := range []struct {
		name string
		ns   []Namespace
	}{{"users", reg.Namespaces.Users}, {"aliases", reg.Namespaces.Aliases}, {"rooms", reg.Namespaces.Rooms}} {
		for i := range group.ns {
			n := &group.ns[i]
			if n.Regex == "" {
				return nil, bad(fmt.Sprintf("namespaces.%s[%d].regex", group.name, i), "is required")
			}
			// Anchored at the start as other homeservers match (a prefix
			// regex such as "@_irc_" works), free at the end.
			if n.re, err = regexp.Compile("^(?:" + n.Regex + ")"); err != nil {
				return nil, bad(fmt.Sprintf("namespaces.%s[%d].regex", group.name, i), "%v", err)
			}
		}
	}
	return reg, nil
}

// Registry is the configured application services, found by token.
type Registry struct {
	serverName string
	list       []*Registration
	byToken    map[[32]byte]*Registration // SHA-256 of as_token
}

// NewRegistry indexes regs; nil or empty means no application services.
func NewRegistry(regs []*Registration, serverName string) *Registry {
	r := &Registry{serverName: serverName, list: regs, byToken: map[[32]byte]*Registration{}}
	for _, reg := range regs {
		r.byToken[sha256.Sum256([]byte(reg.ASToken))] = reg
	}
	return r
}

// All lists the registrations.
func (r *Registry) All() []*Registration { return r.list }

// ByToken returns the service whose as_token is tok. The map is keyed by
// the token's SHA-256, so the lookup time tells nothing about how much
// of a guess matched.
func (r *Registry) ByToken(tok string) (*Registration, bool) {
	reg, ok := r.byToken[sha256.Sum256([]byte(tok))]
	return reg, ok
}

// ByID returns the service with the given id.
func (r *Registry) ByID(id string) (*Registration, bool) {
	for _, reg := range r.list {
		if reg.ID == id {
			return reg, true
		}
	}
	return nil, false
}

// SenderID is the service's own user ID.
func (r *Registry) SenderID(reg *Registration) string {
	return "@" + reg.SenderLocalpart + ":" + r.serverName
}

// ExclusiveUser reports whether some service claims the user ID in an
// exclusive namespace (or as its sender), other than except.
func (r *Registry) ExclusiveUser(userID string, except *Registration) bool {
	for _, reg := range r.list {
		if reg != except && (userID == r.SenderID(reg) || matchAny(reg.Namespaces.Users, userID, true)) {
			return true
		}
	}
	return false
}

// ExclusiveAlias reports whether some service other than except claims
// the alias in an exclusive namespace.
func (r *Registry) ExclusiveAlias(alias string, except *Registration) bool {
	for _, reg := range r.list {
		if reg != except && matchAny(reg.Namespaces.Aliases, alias, true) {
			return true
		}
	}
	return false
}
