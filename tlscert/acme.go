package tlscert

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACME are certificates from an ACME CA, through x/crypto's autocert
// (issue, cache in the data directory, renew when a third of their
// lifetime is left: 30 days of a 90-day certificate), answering
// the TLS-ALPN-01 challenge on every TLS listener and, when HTTPHandler
// serves port 80, HTTP-01.
type ACME struct {
	m   *autocert.Manager
	log *slog.Logger
}

// ACMEOptions configure NewACME.
type ACMEOptions struct {
	Domains      []string
	Email        string
	DirectoryURL string   // empty: Let's Encrypt
	CACerts      []string // PEM files trusted for the directory; empty: the system's
	CacheDir     string   // where account key and certificates are kept
}

// NewACME sets up certificates for the given domains.
func NewACME(o ACMEOptions, log *slog.Logger) (*ACME, error) {
	if len(o.Domains) == 0 {
		return nil, fmt.Errorf("acme: no domain to get a certificate for (set acme_domains or server_name)")
	}
	client := &acme.Client{DirectoryURL: o.DirectoryURL}
	if o.DirectoryURL == "" {
		client.DirectoryURL = autocert.DefaultACMEDirectory
	}
	base := http.DefaultTransport.(*http.Transport).Clone()
	if len(o.CACerts) > 0 {
		pool := x509.NewCertPool()
		for _, f := range o.CACerts {
			pem, err := os.ReadFile(f)
			if err != nil {
				return nil, fmt.Errorf("acme_ca_certs: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("acme_ca_certs: %s holds no PEM certificate", f)
			}
		}
		base.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	client.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: caTransport{base: base, directory: client.DirectoryURL, log: log}}
	if err := os.MkdirAll(o.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("acme cache: %w", err)
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(o.CacheDir),
		HostPolicy: autocert.HostWhitelist(o.Domains...),
		Email:      o.Email,
		Client:     client,
		// RenewBefore 0: autocert renews when a third of the lifetime is
		// left (at most 30 days), which also suits short-lived
		// certificates; a fixed 30 days would renew those without end.
	}
	return &ACME{m: m, log: log}, nil
}

// ACMEDomains are the names to get certificates for: the configured ones,
// else the server name without a port.
func ACMEDomains(configured []string, serverName string) []string {
	if len(configured) > 0 {
		return configured
	}
	host := serverName
	if h, _, err := net.SplitHostPort(serverName); err == nil {
		host = h
	}
	return []string{host}
}

// CacheDir is where ACME keeps its account key and certificates.
func CacheDir(dataDir string) string { return filepath.Join(dataDir, "acme") }

// TLSConfig is the TLS configuration of a listener using these
// certificates. A failure to get or renew one is logged with what to fix;
// a certificate still valid keeps being served meanwhile (autocert renews
// ahead of expiry and keeps the cached one until a new one is issued).
func (a *ACME) TLSConfig() *tls.Config {
	cfg := a.m.TLSConfig()
	cfg.MinVersion = tls.VersionTLS12
	get := cfg.GetCertificate
	cfg.GetCertificate = func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		c, err := get(hello)
		if err != nil && hello.ServerName != "" {
			a.log.Error("ACME: no certificate for a TLS connection; check that DNS points the name at this server, that the CA can reach port 443 (TLS-ALPN-01) or acme_http_listen on port 80 (HTTP-01), and acme_directory_url",
				"name", hello.ServerName, "err", err)
		}
		return c, err
	}
	return cfg
}

// HTTPHandler answers HTTP-01 challenges and redirects other requests to
// HTTPS. The challenge's host is checked without its port: the CA asks on
// port 80, but a forwarding proxy or another port keeps it in Host.
func (a *ACME) HTTPHandler() http.Handler {
	h := a.m.HTTPHandler(nil)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, err := net.SplitHostPort(r.Host); err == nil {
			r.Host = host
		}
		h.ServeHTTP(w, r)
	})
}

// Obtain gets (or loads from the cache) the certificate of name now, so
// the first start shows an ACME problem at once rather than at the first
// connection.
func (a *ACME) Obtain(ctx context.Context, name string) (*tls.Certificate, error) {
	done := make(chan struct{})
	var c *tls.Certificate
	var err error
	go func() {
		defer close(done)
		c, err = a.m.GetCertificate(&tls.ClientHelloInfo{ServerName: name, SupportedProtos: []string{"h2", "http/1.1"},
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}, SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256}})
	}()
	select {
	case <-done:
		return c, err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// caTransport logs what goes wrong talking to the CA. autocert retries a
// failed renewal by itself (every 30 to 60 minutes) and keeps serving the
// certificate it has until it expires, but says nothing: the log is where
// the operator learns what to fix.
type caTransport struct {
	base      http.RoundTripper
	directory string
	log       *slog.Logger
}

func (t caTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		t.log.Error("ACME: cannot reach the CA; certificates already issued stay in use until they expire, and renewal is retried. "+
			"Check acme_directory_url, acme_ca_certs and that this host reaches the CA", "directory", t.directory, "err", err)
		return nil, err
	}
	if resp.StatusCode < 400 {
		return resp, nil
	}
	// An ACME problem document (RFC 8555, section 6.7) says what is wrong.
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(b), resp.Body), resp.Body}
	var problem struct{ Type, Detail string }
	_ = json.Unmarshal(b, &problem)
	if strings.HasSuffix(problem.Type, ":badNonce") {
		return resp, nil // a normal retry of the protocol
	}
	t.log.Error("ACME: the CA refused a request; certificates already issued stay in use until they expire, and renewal is retried. "+
		"Check the detail, acme_email, acme_domains (DNS must point them at this server) and that the CA can reach port 443 or acme_http_listen",
		"directory", t.directory, "status", resp.StatusCode, "type", problem.Type, "detail", problem.Detail)
	return resp, nil
}
