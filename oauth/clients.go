package oauth

import (
	"bytes"
	"crypto/sha256"
	"database/sql"
	"encoding/base32"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/storage"
)

// Grant types and scopes this server knows.
const (
	grantAuthorizationCode = "authorization_code"
	grantRefreshToken      = "refresh_token"
	grantDeviceCode        = "urn:ietf:params:oauth:grant-type:device_code"

	scopeAPI          = "urn:matrix:client:api:*"
	scopeDevicePrefix = "urn:matrix:client:device:"
	// The unstable names of MSC2967, which clients built before v1.15 send.
	unstableScopeAPI          = "urn:matrix:org.matrix.msc2967.client:api:*"
	unstableScopeDevicePrefix = "urn:matrix:org.matrix.msc2967.client:device:"
)

// client is a registered client's metadata (the spec's OAuthClientMetadata,
// RFC 7591 section 2) as stored and returned. Localized human-readable
// values ("client_name#fr") are kept in Localized.
type client struct {
	ClientID                string            `json:"client_id"`
	ClientURI               string            `json:"client_uri"`
	ClientName              string            `json:"client_name,omitempty"`
	LogoURI                 string            `json:"logo_uri,omitempty"`
	TOSURI                  string            `json:"tos_uri,omitempty"`
	PolicyURI               string            `json:"policy_uri,omitempty"`
	RedirectURIs            []string          `json:"redirect_uris,omitempty"`
	ResponseTypes           []string          `json:"response_types"`
	GrantTypes              []string          `json:"grant_types"`
	TokenEndpointAuthMethod string            `json:"token_endpoint_auth_method"`
	ApplicationType         string            `json:"application_type"`
	Localized               map[string]string `json:"-"`
}

// MarshalJSON writes the localized values next to the others.
func (c client) MarshalJSON() ([]byte, error) {
	type plain client
	b, err := json.Marshal(plain(c))
	if err != nil || len(c.Localized) == 0 {
		return b, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	for k, v := range c.Localized {
		m[k] = v
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (c *client) UnmarshalJSON(b []byte) error {
	type plain client
	if err := json.Unmarshal(b, (*plain)(c)); err != nil {
		return err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	for k, v := range m {
		if field, _, ok := strings.Cut(k, "#"); ok && localizable[field] {
			var s string
			if json.Unmarshal(v, &s) == nil {
				if c.Localized == nil {
					c.Localized = map[string]string{}
				}
				c.Localized[k] = s
			}
		}
	}
	return nil
}

// localizable are the human-readable fields (client-server API, Metadata
// localization); the last three are URIs.
var localizable = map[string]bool{"client_name": true, "logo_uri": true, "tos_uri": true, "policy_uri": true}

// name is the client's name for a browser preferring langs (its
// Accept-Language), falling back to the unlocalized name and then the
// client URI's host.
func (c client) localized(field, plain string, langs []string) string {
	for _, l := range langs {
		if v, ok := c.Localized[field+"#"+l]; ok {
			return v
		}
		if base, _, ok := strings.Cut(l, "-"); ok {
			if v, ok := c.Localized[field+"#"+base]; ok {
				return v
			}
		}
	}
	return plain
}

func (c client) allowsGrant(g string) bool { return slices.Contains(c.GrantTypes, g) }

func invalidMetadata(d string) *oauthError {
	return errOAuth(http.StatusBadRequest, "invalid_client_metadata", d)
}

// POST /_hearth/oauth2/register: dynamic client registration (RFC 7591,
// client-server API, Client registration). Identical metadata gives the
// same client_id, as the spec suggests, so registrations do not pile up.
func (a *API) registerClient(r *http.Request) (any, error) {
	if !allow(a.clientReg, clientIP(r)) {
		return nil, errOAuth(http.StatusTooManyRequests, "invalid_request", "Too many client registrations; try again later")
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, invalidRequest("The body could not be read")
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, invalidMetadata("The body must be a JSON object")
	}
	c, err := validateClient(raw)
	if err != nil {
		return nil, err
	}
	canonical, err := json.Marshal(c) // map keys sorted: the same metadata, the same bytes
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(canonical)
	c.ClientID = strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:16]))
	stored, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	if _, err := a.db.OAuthClient(r.Context(), c.ClientID); errors.Is(err, storage.ErrNotFound) {
		err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
			return storage.InsertOAuthClient(r.Context(), tx, c.ClientID, string(stored), time.Now().UnixMilli())
		})
		if err != nil {
			// A concurrent registration of the same metadata wins the race.
			if _, again := a.db.OAuthClient(r.Context(), c.ClientID); again != nil {
				return nil, err
			}
		}
	} else if err != nil {
		return nil, err
	}
	return created{json.RawMessage(stored)}, nil
}

// loadClient returns a registered client; ok false for an unknown one.
func (a *API) loadClient(r *http.Request, clientID string) (client, bool, error) {
	if clientID == "" {
		return client{}, false, nil
	}
	md, err := a.db.OAuthClient(r.Context(), clientID)
	if errors.Is(err, storage.ErrNotFound) {
		return client{}, false, nil
	}
	if err != nil {
		return client{}, false, err
	}
	var c client
	if err := json.Unmarshal([]byte(md), &c); err != nil {
		return client{}, false, err
	}
	return c, true, nil
}

// validateClient applies the spec's rules (OAuthClientMetadata, Redirect
// URI validation) and RFC 7591's defaults. Values the server does not
// understand are dropped, as RFC 7591 section 2 asks.
func validateClient(raw map[string]json.RawMessage) (client, error) {
	var c client
	str := func(name string) (string, error) {
		v, ok := raw[name]
		if !ok || bytes.Equal(v, []byte("null")) {
			return "", nil
		}
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return "", invalidMetadata(name + " must be a string")
		}
		return s, nil
	}
	list := func(name string) ([]string, error) {
		v, ok := raw[name]
		if !ok || bytes.Equal(v, []byte("null")) {
			return nil, nil
		}
		var l []string
		if err := json.Unmarshal(v, &l); err != nil {
			return nil, invalidMetadata(name + " must be an array of strings")
		}
		return l, nil
	}
	var err error
	if c.ClientURI, err = str("client_uri"); err != nil {
		return c, err
	}
	base, err := url.Parse(c.ClientURI)
	if c.ClientURI == "" || err != nil || base.Scheme != "https" || base.Host == "" || base.User != nil || base.Fragment != "" {
		return c, invalidMetadata("client_uri is required and must be an https URL without user or password")
	}
	baseHost := strings.ToLower(base.Hostname())
	if c.ApplicationType, err = str("application_type"); err != nil {
		return c, err
	}
	switch c.ApplicationType {
	case "":
		c.ApplicationType = "web"
	case "web", "native":
	default:
		return c, invalidMetadata("application_type must be web or native")
	}
	if c.TokenEndpointAuthMethod, err = str("token_endpoint_auth_method"); err != nil {
		return c, err
	}
	switch c.TokenEndpointAuthMethod {
	case "":
		c.TokenEndpointAuthMethod = "none"
	case "none":
	default:
		return c, invalidMetadata("Only public clients (token_endpoint_auth_method none) can register")
	}
	// Human-readable values, localized or not.
	for key := range raw {
		field, tag, localized := strings.Cut(key, "#")
		if !localizable[field] {
			continue
		}
		v, err := str(key)
		if err != nil {
			return c, err
		}
		if v == "" {
			continue
		}
		if field != "client_name" && !sameSite(v, baseHost, false) {
			return c, invalidMetadata(key + " must be an https URL on the host of client_uri or a subdomain of it")
		}
		if len(v) > 2048 || (localized && (tag == "" || len(tag) > 35)) {
			return c, invalidMetadata(key + " is too long or badly tagged")
		}
		if localized {
			if c.Localized == nil {
				c.Localized = map[string]string{}
			}
			c.Localized[key] = v
			continue
		}
		switch field {
		case "client_name":
			c.ClientName = v
		case "logo_uri":
			c.LogoURI = v
		case "tos_uri":
			c.TOSURI = v
		case "policy_uri":
			c.PolicyURI = v
		}
	}
	if c.RedirectURIs, err = list("redirect_uris"); err != nil {
		return c, err
	}
	for _, u := range c.RedirectURIs {
		if !validRedirectURI(u, baseHost, c.ApplicationType) {
			return c, errOAuth(http.StatusBadRequest, "invalid_redirect_uri", "Redirect URI "+u+" is not allowed for a "+c.ApplicationType+" client with client_uri "+c.ClientURI)
		}
	}
	rts, err := list("response_types")
	if err != nil {
		return c, err
	}
	if rts == nil {
		rts = []string{"code"}
	}
	c.ResponseTypes = keep(rts, "code")
	gts, err := list("grant_types")
	if err != nil {
		return c, err
	}
	if gts == nil {
		gts = []string{grantAuthorizationCode}
	}
	c.GrantTypes = keep(gts, grantAuthorizationCode, grantRefreshToken, grantDeviceCode)
	if c.allowsGrant(grantAuthorizationCode) {
		if len(c.RedirectURIs) == 0 {
			return c, errOAuth(http.StatusBadRequest, "invalid_redirect_uri", "The authorization_code grant needs at least one redirect URI")
		}
		if !slices.Contains(c.ResponseTypes, "code") {
			return c, invalidMetadata("The authorization_code grant needs the code response type")
		}
	}
	if len(c.GrantTypes) == 0 {
		return c, invalidMetadata("None of the grant types is supported")
	}
	return c, nil
}

// keep returns the values of l that are in known, once each, in l's order.
func keep(l []string, known ...string) []string {
	out := []string{}
	for _, v := range l {
		if slices.Contains(known, v) && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// sameSite says whether u is an https URL without user or password whose
// host is host or a subdomain of it (the client_uri rule); fragments are
// refused when noFragment.
func sameSite(u, host string, noFragment bool) bool {
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "https" || p.User != nil || p.Host == "" || p.Opaque != "" {
		return false
	}
	if noFragment && (p.Fragment != "" || strings.Contains(u, "#")) {
		return false
	}
	h := strings.ToLower(p.Hostname())
	return h == host || strings.HasSuffix(h, "."+host)
}

// validRedirectURI applies the spec's Redirect URI validation (RFC 8252
// section 7 for native clients).
func validRedirectURI(u, host, appType string) bool {
	if strings.Contains(u, "#") {
		return false
	}
	if sameSite(u, host, true) {
		return true // web, and claimed https for native
	}
	if appType != "native" {
		return false
	}
	p, err := url.Parse(u)
	if err != nil {
		return false
	}
	if p.Scheme == "http" {
		return isLoopback(p.Host) && p.User == nil
	}
	// Private-use scheme: the client host in reverse-DNS notation, and no
	// authority ("com.example.app:/cb" or "com.example:cb", never "://").
	labels := strings.Split(host, ".")
	slices.Reverse(labels)
	rev := strings.Join(labels, ".")
	scheme := strings.ToLower(p.Scheme)
	if scheme != rev && !strings.HasPrefix(scheme, rev+".") {
		return false
	}
	rest := u[len(p.Scheme)+1:]
	return !strings.HasPrefix(rest, "//")
}

// isLoopback: localhost, 127.0.0.1 or [::1] without a port.
func isLoopback(hostport string) bool {
	switch hostport {
	case "localhost", "127.0.0.1", "[::1]":
		return true
	}
	return false
}

// matchRedirectURI says whether an authorization request's redirect_uri
// is one the client registered: exactly, except that a native client's
// loopback URI matches on any port (RFC 8252 section 7.3).
func matchRedirectURI(c client, u string) bool {
	if slices.Contains(c.RedirectURIs, u) {
		return true
	}
	if c.ApplicationType != "native" {
		return false
	}
	p, err := url.Parse(u)
	if err != nil || p.Scheme != "http" || p.Port() == "" {
		return false
	}
	host := p.Hostname()
	if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	p.Host = host
	return slices.Contains(c.RedirectURIs, p.String())
}

// parseScope checks a requested scope (client-server API, Scope): the API
// scope and exactly one device scope, whose device ID uses only RFC 3986
// unreserved characters. It returns the device ID.
func parseScope(scope string) (string, *oauthError) {
	bad := func(d string) (string, *oauthError) {
		return "", errOAuth(http.StatusBadRequest, "invalid_scope", d)
	}
	var deviceID string
	devices, api := 0, false
	for _, tok := range strings.Fields(scope) {
		switch {
		case tok == scopeAPI || tok == unstableScopeAPI:
			api = true
		case strings.HasPrefix(tok, scopeDevicePrefix) || strings.HasPrefix(tok, unstableScopeDevicePrefix):
			devices++
			deviceID = strings.TrimPrefix(strings.TrimPrefix(tok, scopeDevicePrefix), unstableScopeDevicePrefix)
		default:
			return bad("Unknown scope token " + tok)
		}
	}
	if !api {
		return bad("The scope must include " + scopeAPI)
	}
	if devices != 1 {
		return bad("The scope must include exactly one " + scopeDevicePrefix + "<device_id>")
	}
	if deviceID == "" || len(deviceID) > 255 {
		return bad("The device ID must be 1 to 255 characters")
	}
	for _, ch := range []byte(deviceID) {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte("-._~", ch) >= 0) {
			return bad("The device ID may use only A-Z, a-z, 0-9 and -._~")
		}
	}
	return deviceID, nil
}
