package hearthtest

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/tlscert"
)

// NewFederation starts n servers on backend b that federate with each
// other, the way docs/federation.md describes for several processes on
// one machine: each federation listener is bound first on 127.0.0.1:<port>
// and the server is named "localhost:<port>", which the server discovery
// rules resolve to exactly that address (an explicit port means no
// .well-known and no SRV lookup). Their certificates are signed by a test
// CA that every server trusts through federation_ca_certs, and
// federation_allow_cidrs lets them dial loopback. modify, when not nil,
// adjusts each server's config (i counts from 0).
func NewFederation(t testing.TB, b Backend, n int, modify func(i int, cfg *config.Config)) []*Server {
	t.Helper()
	dir := t.TempDir()
	caCert, caKey := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := tlscert.WriteCA(caCert, caKey, "Hearth test CA"); err != nil {
		t.Fatal(err)
	}
	pool, err := tlscert.CertPool([]string{caCert})
	if err != nil {
		t.Fatal(err)
	}
	servers := make([]*Server, n)
	for i := range servers {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("binding a federation listener: %v", err)
		}
		name := fmt.Sprintf("localhost:%d", ln.Addr().(*net.TCPAddr).Port)
		certPath, keyPath := filepath.Join(dir, fmt.Sprintf("server%d.crt", i)), filepath.Join(dir, fmt.Sprintf("server%d.key", i))
		if err := tlscert.WriteSignedByCA(certPath, keyPath, name, caCert, caKey); err != nil {
			t.Fatal(err)
		}
		cert, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			t.Fatal(err)
		}
		cfg := TestConfig(t, b)
		cfg.ServerName = name
		cfg.FederationCACerts = []string{caCert}
		cfg.FederationAllowCIDRs = []string{"127.0.0.0/8", "::1/128"}
		if modify != nil {
			modify(i, &cfg)
		}
		s := &Server{client: &swappable{}, fed: &swappable{}}
		s.start(t, cfg)
		client := httptest.NewServer(s.client)
		fed := httptest.NewUnstartedServer(s.fed)
		fed.Listener.Close()
		fed.Listener = ln
		fed.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		fed.StartTLS()
		s.URL, s.FederationURL = client.URL, "https://"+name
		s.Client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		t.Cleanup(func() {
			client.Close()
			fed.Close()
			s.Server.Close()
		})
		servers[i] = s
	}
	return servers
}
