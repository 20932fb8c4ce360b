package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/netguard"
)

// Outbound federation HTTP (server-server API, Resolving server names).
//
// fclient's own transport caches resolutions forever, fetches .well-known
// with an unguarded client and cannot trust extra CAs, so Hearth hands
// fclient this transport instead: it resolves matrix:// URLs by the spec's
// rules, caches a .well-known answer as long as its Cache-Control/Expires
// allow (24 hours without either, at most 48, one hour for a failed
// lookup), and makes every connection, .well-known included, through a
// dialer that refuses internal addresses unless federation_allow_cidrs
// lets them through.

const (
	wellKnownDefaultTTL = 24 * time.Hour
	wellKnownMaxTTL     = 48 * time.Hour
	wellKnownErrorTTL   = time.Hour
	wellKnownMaxBytes   = 50 * 1024
	dialTimeout         = 10 * time.Second
)

// transport is an http.RoundTripper for matrix:// URLs.
type transport struct {
	guard      *netguard.Guard
	dialer     *net.Dialer
	roots      *x509.CertPool
	skipVerify bool
	wellKnown  *http.Client
	lookupSRV  func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
	now        func() time.Time

	mu         sync.Mutex
	cache      map[spec.ServerName]resolution
	transports map[string]*http.Transport // by TLS server name
}

type resolution struct {
	results []fclient.ResolutionResult
	expires time.Time
}

// newTransport makes the transport; resolver nil: the system's.
func newTransport(guard *netguard.Guard, roots *x509.CertPool, skipVerify bool, resolver *net.Resolver) *transport {
	if resolver == nil {
		resolver = net.DefaultResolver
	}
	dialer := guard.Dialer(dialTimeout)
	dialer.Resolver = resolver
	t := &transport{
		guard: guard, dialer: dialer, roots: roots, skipVerify: skipVerify,
		lookupSRV: resolver.LookupSRV, now: time.Now,
		cache: map[spec.ServerName]resolution{}, transports: map[string]*http.Transport{},
	}
	t.wellKnown = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         t.dialer.DialContext,
			TLSClientConfig:     t.tlsConfig(""),
			TLSHandshakeTimeout: 10 * time.Second,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     30 * time.Second,
		},
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 || req.URL.Scheme != "https" {
				return errors.New("too many or non-https redirects")
			}
			return nil
		},
	}
	return t
}

func (t *transport) tlsConfig(serverName string) *tls.Config {
	return &tls.Config{ServerName: serverName, RootCAs: t.roots, InsecureSkipVerify: t.skipVerify, MinVersion: tls.VersionTLS12}
}

// RoundTrip sends r (URL matrix://<server name>/...) to the first address
// of the server's resolution that answers.
func (t *transport) RoundTrip(r *http.Request) (*http.Response, error) {
	server := spec.ServerName(r.URL.Host)
	results, err := t.resolve(r.Context(), server)
	if err != nil {
		return nil, err
	}
	var lastErr error
	for i, res := range results {
		req := r.Clone(r.Context())
		if i > 0 && r.Body != nil {
			if r.GetBody == nil {
				break
			}
			if req.Body, err = r.GetBody(); err != nil {
				return nil, err
			}
		}
		req.URL.Scheme, req.URL.Host, req.Host = "https", res.Destination, string(res.Host)
		resp, err := t.transportFor(res.TLSServerName).RoundTrip(req)
		if err == nil {
			return resp, nil
		}
		lastErr = err
	}
	t.mu.Lock()
	delete(t.cache, server) // resolve afresh next time
	t.mu.Unlock()
	return nil, fmt.Errorf("federation request to %s: %w", server, lastErr)
}

func (t *transport) transportFor(tlsServerName string) *http.Transport {
	t.mu.Lock()
	defer t.mu.Unlock()
	tr, ok := t.transports[tlsServerName]
	if !ok {
		tr = &http.Transport{
			Proxy:                 nil,
			DialContext:           t.dialer.DialContext,
			TLSClientConfig:       t.tlsConfig(tlsServerName),
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 60 * time.Second,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       90 * time.Second,
			ForceAttemptHTTP2:     true,
		}
		t.transports[tlsServerName] = tr
	}
	return tr
}

// resolve applies the server discovery rules, caching what came from
// .well-known for as long as it may be kept.
func (t *transport) resolve(ctx context.Context, server spec.ServerName) ([]fclient.ResolutionResult, error) {
	host, port, ok := spec.ParseAndValidateServerName(server)
	if !ok {
		return nil, fmt.Errorf("invalid server name %q", server)
	}
	if direct := resolveLiteral(server, host, port); direct != nil {
		return direct, nil // steps 1 and 2: IP literal or explicit port
	}
	t.mu.Lock()
	c, ok := t.cache[server]
	t.mu.Unlock()
	if ok && t.now().Before(c.expires) {
		return c.results, nil
	}
	// Step 3: .well-known delegation.
	var results []fclient.ResolutionResult
	delegated, ttl, err := t.fetchWellKnown(ctx, host)
	if err == nil {
		dhost, dport, valid := spec.ParseAndValidateServerName(delegated)
		if !valid {
			err = fmt.Errorf(".well-known of %s names an invalid server %q", server, delegated)
		} else if results = resolveLiteral(delegated, dhost, dport); results == nil {
			results = t.resolveSRV(ctx, delegated, dhost)
		}
	}
	if err != nil {
		ttl = wellKnownErrorTTL
		results = t.resolveSRV(ctx, server, host) // steps 4 to 6
	}
	t.mu.Lock()
	t.cache[server] = resolution{results: results, expires: t.now().Add(ttl)}
	t.mu.Unlock()
	return results, nil
}

// resolveLiteral covers the rules for IP literals and explicit ports; nil
// for a hostname without a port.
func resolveLiteral(server spec.ServerName, host string, port int) []fclient.ResolutionResult {
	bare := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if net.ParseIP(bare) != nil {
		if port < 0 {
			port = 8448
		}
		return []fclient.ResolutionResult{{Destination: net.JoinHostPort(bare, strconv.Itoa(port)), Host: server, TLSServerName: bare}}
	}
	if port >= 0 {
		return []fclient.ResolutionResult{{Destination: net.JoinHostPort(host, strconv.Itoa(port)), Host: server, TLSServerName: host}}
	}
	return nil
}

// resolveSRV looks up _matrix-fed._tcp, then the deprecated _matrix._tcp,
// then falls back to port 8448. The certificate must be for the name.
func (t *transport) resolveSRV(ctx context.Context, server spec.ServerName, host string) []fclient.ResolutionResult {
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, recs, err := t.lookupSRV(ctx, service, "tcp", host)
		if err != nil || len(recs) == 0 {
			continue
		}
		var out []fclient.ResolutionResult
		for _, rec := range recs {
			target := strings.TrimSuffix(rec.Target, ".")
			out = append(out, fclient.ResolutionResult{Destination: net.JoinHostPort(target, strconv.Itoa(int(rec.Port))), Host: server, TLSServerName: host})
		}
		return out
	}
	return []fclient.ResolutionResult{{Destination: net.JoinHostPort(host, "8448"), Host: server, TLSServerName: host}}
}

// fetchWellKnown gets /.well-known/matrix/server and how long it may be cached.
func (t *transport) fetchWellKnown(ctx context.Context, host string) (spec.ServerName, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+host+"/.well-known/matrix/server", nil)
	if err != nil {
		return "", 0, err
	}
	resp, err := t.wellKnown.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf(".well-known: status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, wellKnownMaxBytes+1))
	if err != nil {
		return "", 0, err
	}
	if len(body) > wellKnownMaxBytes {
		return "", 0, errors.New(".well-known response too large")
	}
	var wk struct {
		Server spec.ServerName `json:"m.server"`
	}
	if err := json.Unmarshal(body, &wk); err != nil || wk.Server == "" {
		return "", 0, errors.New(".well-known has no m.server")
	}
	return wk.Server, cacheTTL(resp.Header, t.now()), nil
}

// cacheTTL reads Cache-Control max-age (preferred) or Expires, bounded to
// wellKnownMaxTTL; wellKnownDefaultTTL without either.
func cacheTTL(h http.Header, now time.Time) time.Duration {
	ttl := wellKnownDefaultTTL
	found := false
	for _, d := range strings.Split(h.Get("Cache-Control"), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(d), "=")
		switch strings.ToLower(k) {
		case "max-age":
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
				ttl, found = time.Duration(n)*time.Second, true
			}
		case "no-store", "no-cache":
			ttl, found = 0, true
		}
	}
	if !found {
		if exp, err := http.ParseTime(h.Get("Expires")); err == nil {
			ttl = exp.Sub(now)
		}
	}
	return min(max(ttl, 0), wellKnownMaxTTL)
}

// dnsResolver resolves through the DNS server at addr (federation_dns_server).
func dnsResolver(addr string) *net.Resolver {
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}}
}
