package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// portOnBoth is a TCP port free on 127.0.0.1 and on 127.0.0.2: Pebble
// validates TLS-ALPN-01 on one port for every name, so each server listens
// on its own loopback address.
func portOnBoth(t *testing.T) string {
	t.Helper()
	for range 20 {
		_, port, _ := net.SplitHostPort(freeAddr(t))
		if ln, err := net.Listen("tcp", "127.0.0.2:"+port); err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no port free on both 127.0.0.1 and 127.0.0.2")
	return ""
}

// Two Hearths with tls: acme get their federation certificates from Pebble
// and federate over them: each trusts only Pebble's root besides the
// system's (federation_ca_certs), names resolve through Pebble's mock DNS
// (federation_dns_server), a user of one joins a room on the other and
// messages arrive both ways.
func TestFederationOverPebbleCertificates(t *testing.T) {
	port := portOnBoth(t)
	p := runPebble(t, port, port, 0)
	p.addA(t, "hs2.test", "127.0.0.2") // hs1.test is the default, 127.0.0.1
	rootFile := filepath.Join(t.TempDir(), "pebble-root.pem")
	if err := os.WriteFile(rootFile, p.root, 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, certs := pebbleTools(t)
	type server struct {
		name, client string
		http         *http.Client
	}
	start := func(host, ip string) server {
		name := host + ":" + port
		_, clientPort, _ := net.SplitHostPort(freeAddr(t))
		s := server{name: name, client: "https://" + ip + ":" + clientPort,
			http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.roots, ServerName: host}}}}
		args := []string{"serve", "--data-dir", filepath.Join(t.TempDir(), "data"), "--server-name", name,
			"--listen", ip + ":" + clientPort, "--federation-listen", ip + ":" + port,
			"--tls", "acme", "--acme-directory-url", p.dirURL, "--acme-ca-certs", filepath.Join(certs, "pebble.minica.pem"),
			"--acme-email", "admin@" + host, "--federation-ca-certs", rootFile, "--federation-dns-server", p.dns,
			"--federation-allow-cidrs", "127.0.0.0/8", "--registration", "open", "--rate-limits", "off", "--bcrypt-cost", "4"}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		logs := &syncBuffer{}
		go func() { done <- run(ctx, args, io.Discard, logs) }()
		t.Cleanup(func() {
			cancel()
			<-done
			if t.Failed() {
				t.Logf("%s's log:\n%s", name, logs.String())
			}
		})
		waitForCertificate(t, ip+":"+port, host, p.roots, done, logs)
		return s
	}
	hs1, hs2 := start("hs1.test", "127.0.0.1"), start("hs2.test", "127.0.0.2")

	do := func(s server, method, path, token string, body any) hearthtest.Response {
		t.Helper()
		return hearthtest.Do(t, s.http, method, s.client+path, token, body)
	}
	register := func(s server, user string) string {
		t.Helper()
		req := map[string]any{"username": user, "password": "pw"}
		r := do(s, "POST", "/_matrix/client/v3/register", "", req)
		req["auth"] = map[string]any{"type": "m.login.dummy", "session": r.JSON["session"]}
		r = do(s, "POST", "/_matrix/client/v3/register", "", req)
		hearthtest.Expect(t, r, 200, "")
		return r.JSON["access_token"].(string)
	}
	aliceTok, bobTok := register(hs1, "alice"), register(hs2, "bob")
	r := do(hs1, "POST", "/_matrix/client/v3/createRoom", aliceTok, map[string]any{"preset": "public_chat", "name": "over ACME"})
	hearthtest.Expect(t, r, 200, "")
	roomID := r.JSON["room_id"].(string)
	r = do(hs2, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID)+"?server_name="+url.QueryEscape(hs1.name), bobTok, map[string]any{})
	hearthtest.Expect(t, r, 200, "")

	send := func(s server, token, txn, body string) {
		t.Helper()
		hearthtest.Expect(t, do(s, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/"+txn, token,
			map[string]any{"msgtype": "m.text", "body": body}), 200, "")
	}
	arrives := func(s server, token, body string) {
		t.Helper()
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			r := do(s, "GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/messages?dir=b&limit=20", token, nil)
			if r.Status == 200 && strings.Contains(string(r.Body), fmt.Sprintf("%q", body)) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%q did not arrive at %s: %d %s", body, s.name, r.Status, r.Body)
			}
		}
	}
	send(hs1, aliceTok, "a1", "from hs1 to hs2")
	arrives(hs2, bobTok, "from hs1 to hs2")
	send(hs2, bobTok, "b1", "from hs2 to hs1")
	arrives(hs1, aliceTok, "from hs2 to hs1")
}
