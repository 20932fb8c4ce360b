package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// pebbleTools finds Pebble (Let's Encrypt's ACME test server) and its
// mock DNS server, which .ci/run builds from the Go module proxy into
// PEBBLE_DIR (see there).
func pebbleTools(t *testing.T) (pebble, challtestsrv, certs string) {
	t.Helper()
	dir := os.Getenv("PEBBLE_DIR")
	pebble, challtestsrv = filepath.Join(dir, "pebble"), filepath.Join(dir, "pebble-challtestsrv")
	certs = os.Getenv("PEBBLE_CERTS")
	for _, f := range []string{pebble, challtestsrv, filepath.Join(certs, "pebble.minica.pem")} {
		if _, err := os.Stat(f); dir == "" || certs == "" || err != nil {
			if os.Getenv("CI") != "" {
				t.Fatalf("Pebble is not installed (PEBBLE_DIR=%q, PEBBLE_CERTS=%q): .ci/run builds it", dir, certs)
			}
			t.Skip("Pebble is not installed: set PEBBLE_DIR and PEBBLE_CERTS as .ci/run does")
		}
	}
	return pebble, challtestsrv, certs
}

// startPebble runs the mock DNS server (every name is 127.0.0.1) and Pebble
// validating challenges on httpPort (HTTP-01) and tlsPort (TLS-ALPN-01),
// and returns the directory URL and the pool of Pebble's issuing roots.
func startPebble(t *testing.T, httpPort, tlsPort string) (string, *x509.CertPool) {
	p := runPebble(t, httpPort, tlsPort, 0)
	return p.dirURL, p.roots
}

// pebbleRun is a running Pebble and its mock DNS server.
type pebbleRun struct {
	dirURL string
	roots  *x509.CertPool
	root   []byte // PEM of Pebble's root
	dns    string // the mock DNS server's address (UDP and TCP)
	mgmt   string // its management API
	// stop ends Pebble (not the DNS server).
	stop func()
}

// addA makes the mock DNS server answer host with addr.
func (p *pebbleRun) addA(t *testing.T, host, addr string) {
	t.Helper()
	b, _ := json.Marshal(map[string]any{"host": host, "addresses": []string{addr}})
	resp, err := http.Post("http://"+p.mgmt+"/add-a", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("challtestsrv add-a: %d", resp.StatusCode)
	}
}

// runPebble is startPebble; validity, when not 0, is the lifetime in
// seconds of the certificates Pebble issues.
func runPebble(t *testing.T, httpPort, tlsPort string, validity int) *pebbleRun {
	pebble, challtestsrv, certs := pebbleTools(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	logs := &syncBuffer{}
	dns, mgmt := freeAddr(t), freeAddr(t)
	dnsUDP := dns // same port number for UDP; challtestsrv listens on both
	c := exec.CommandContext(ctx, challtestsrv, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dnsserver", dnsUDP,
		"-http01", "", "-https01", "", "-tlsalpn01", "", "-doh", "", "-management", mgmt)
	c.Stdout, c.Stderr = logs, logs
	if err := c.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = c.Wait() })
	dir, pmgmt := freeAddr(t), freeAddr(t)
	pcfg := map[string]any{
		"listenAddress": dir, "managementListenAddress": pmgmt,
		"certificate": filepath.Join(certs, "localhost", "cert.pem"), "privateKey": filepath.Join(certs, "localhost", "key.pem"),
		"httpPort": atoi(t, httpPort), "tlsPort": atoi(t, tlsPort), "ocspResponderURL": "", "externalAccountBindingRequired": false,
	}
	if validity > 0 {
		pcfg["profiles"] = map[string]any{"default": map[string]any{"description": "short-lived", "validityPeriod": validity}}
	}
	cfg := map[string]any{"pebble": pcfg}
	cfgPath := filepath.Join(t.TempDir(), "pebble.json")
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(cfgPath, b, 0o600); err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(ctx)
	p := exec.CommandContext(pctx, pebble, "-config", cfgPath, "-dnsserver", dnsUDP)
	p.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	p.Stdout, p.Stderr = logs, logs
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	stop := func() { once.Do(func() { pcancel(); _ = p.Wait() }) }
	t.Cleanup(func() {
		cancel()
		stop()
		if t.Failed() {
			t.Logf("pebble and challtestsrv logs:\n%s", logs.String())
		}
	})
	minica, err := os.ReadFile(filepath.Join(certs, "pebble.minica.pem"))
	if err != nil {
		t.Fatal(err)
	}
	mgmtPool := x509.NewCertPool()
	mgmtPool.AppendCertsFromPEM(minica)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: mgmtPool}}}
	// Pebble makes a new root at each start: fetch it once it listens.
	var root []byte
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := client.Get("https://" + strings.Replace(pmgmt, "127.0.0.1", "localhost", 1) + "/roots/0")
		if err == nil {
			root, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("Pebble did not start: %v\n%s", err, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(root) {
		t.Fatalf("Pebble's root is not PEM: %s", root)
	}
	return &pebbleRun{dirURL: "https://" + strings.Replace(dir, "127.0.0.1", "localhost", 1) + "/dir", roots: roots, root: root,
		dns: dns, mgmt: mgmt, stop: stop}
}

func atoi(t *testing.T, port string) int {
	var n int
	if _, err := fmt.Sscan(port, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// certificateOf connects to addr as name and returns the chain it serves
// once it verifies against roots.
func waitForCertificate(t *testing.T, addr, name string, roots *x509.CertPool, done <-chan error, logs *syncBuffer) *x509.Certificate {
	t.Helper()
	var last error
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		select {
		case err := <-done:
			t.Fatalf("server exited: %v\n%s", err, logs.String())
		default:
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{ServerName: name, RootCAs: roots})
		if err != nil {
			last = err
			continue
		}
		cert := conn.ConnectionState().PeerCertificates[0]
		conn.Close()
		return cert
	}
	t.Fatalf("no certificate for %s from Pebble on %s: %v\n%s", name, addr, last, logs.String())
	return nil
}

// With tls: acme, Hearth gets its certificate from a real ACME server
// (Pebble), answering TLS-ALPN-01 on its TLS listener, serves it on the
// federation and (HTTPS) client listeners, keeps it in the data directory
// and reuses it after a restart; with the TLS port out of the CA's reach
// it falls back to HTTP-01 on acme_http_listen.
func TestACMECertificatesFromPebble(t *testing.T) {
	for _, challenge := range []string{"tls-alpn-01", "http-01"} {
		t.Run(challenge, func(t *testing.T) {
			fed, httpChal, client := freeAddr(t), freeAddr(t), freeAddr(t)
			_, fedPort, _ := net.SplitHostPort(fed)
			_, httpPort, _ := net.SplitHostPort(httpChal)
			tlsPort := fedPort
			if challenge == "http-01" {
				_, tlsPort, _ = net.SplitHostPort(freeAddr(t)) // nobody answers TLS-ALPN-01 there
			}
			dirURL, roots := startPebble(t, httpPort, tlsPort)
			_, _, certs := pebbleTools(t)
			data := filepath.Join(t.TempDir(), "data")
			args := []string{"serve", "--data-dir", data, "--server-name", "hs1.test", "--listen", client, "--federation-listen", fed,
				"--tls", "acme", "--acme-directory-url", dirURL, "--acme-ca-certs", filepath.Join(certs, "pebble.minica.pem"),
				"--acme-http-listen", httpChal, "--acme-email", "admin@hs1.test"}
			start := func() (func() error, <-chan error, *syncBuffer) {
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				logs := &syncBuffer{}
				go func() { done <- run(ctx, args, io.Discard, logs) }()
				return func() error { cancel(); return <-done }, done, logs
			}
			stop, done, logs := start()
			cert := waitForCertificate(t, fed, "hs1.test", roots, done, logs)
			if err := cert.VerifyHostname("hs1.test"); err != nil {
				t.Fatal(err)
			}
			// The client listener serves HTTPS with the same certificate.
			c := waitForCertificate(t, client, "hs1.test", roots, done, logs)
			if !c.Equal(cert) {
				t.Fatal("the client listener serves another certificate than the federation one")
			}
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: "hs1.test"}}}
			resp, err := hc.Get("https://" + client + "/_matrix/client/versions")
			if err != nil {
				t.Fatalf("HTTPS client API: %v", err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("HTTPS /versions: %d", resp.StatusCode)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if entries, _ := os.ReadDir(filepath.Join(data, "acme")); len(entries) < 2 {
				t.Fatalf("the data directory keeps no ACME account and certificate: %v", entries)
			}
			// A restart serves the stored certificate (no new issuance
			// needed): stop Pebble's reach by pointing at a dead directory.
			args = append(args, "--acme-directory-url", "https://localhost:1/dir")
			stop, done, logs = start()
			again := waitForCertificate(t, fed, "hs1.test", roots, done, logs)
			if !again.Equal(cert) {
				t.Fatal("after a restart the server got a new certificate instead of its stored one")
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// syncBuffer is a log buffer several processes' output goroutines and the
// server under test write to at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Certificates are renewed ahead of expiry; when renewal fails (here: the
// CA is down) the certificate in use stays in use until it expires, and
// the log says what to fix. Pebble issues 24-second certificates, which
// autocert renews with a third of their lifetime left.
func TestACMERenewalAndItsFailure(t *testing.T) {
	fed, client, httpChal := freeAddr(t), freeAddr(t), freeAddr(t)
	_, fedPort, _ := net.SplitHostPort(fed)
	_, httpPort, _ := net.SplitHostPort(httpChal)
	p := runPebble(t, httpPort, fedPort, 24)
	_, _, certs := pebbleTools(t)
	args := []string{"serve", "--data-dir", filepath.Join(t.TempDir(), "data"), "--server-name", "hs1.test", "--listen", client,
		"--federation-listen", fed, "--tls", "acme", "--acme-directory-url", p.dirURL,
		"--acme-ca-certs", filepath.Join(certs, "pebble.minica.pem"), "--acme-email", "admin@hs1.test"}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &syncBuffer{}
	go func() { done <- run(ctx, args, io.Discard, logs) }()
	defer func() {
		cancel()
		<-done
	}()
	first := waitForCertificate(t, fed, "hs1.test", p.roots, done, logs)
	if life := first.NotAfter.Sub(first.NotBefore); life > time.Minute {
		t.Fatalf("Pebble issued a certificate for %v, want a short-lived one", life)
	}
	// Renewed before it expires.
	var cert *x509.Certificate
	for cert = first; cert.Equal(first); cert = waitForCertificate(t, fed, "hs1.test", p.roots, done, logs) {
		if time.Now().After(first.NotAfter) {
			t.Fatalf("the certificate was not renewed before it expired:\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !cert.NotAfter.After(first.NotAfter) {
		t.Fatalf("renewed certificate expires at %v, the first at %v", cert.NotAfter, first.NotAfter)
	}
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Fatalf("errors logged while the CA works:\n%s", logs.String())
	}
	p.stop() // the CA goes away before the next renewal is due
	const want = "ACME: cannot reach the CA; certificates already issued stay in use until they expire"
	for !strings.Contains(logs.String(), want) {
		if time.Now().After(cert.NotAfter) {
			t.Fatalf("no renewal failure logged before the certificate expired:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, what := range []string{"acme_directory_url", "connection refused", p.dirURL} {
		if !strings.Contains(logs.String(), what) {
			t.Errorf("the renewal failure's log does not mention %q:\n%s", what, logs.String())
		}
	}
	// The old certificate is still served, and still verifies.
	conn, err := tls.Dial("tcp", fed, &tls.Config{ServerName: "hs1.test", RootCAs: p.roots})
	if err != nil {
		t.Fatalf("after the failed renewal: %v", err)
	}
	defer conn.Close()
	if !conn.ConnectionState().PeerCertificates[0].Equal(cert) {
		t.Fatal("the served certificate changed although renewal failed")
	}
}
