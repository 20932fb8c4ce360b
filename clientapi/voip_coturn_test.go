package clientapi_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// The credentials /voip/turnServer hands out open a relay allocation on a
// real coturn running with use-auth-secret (Debian package coturn, which
// .ci/run installs); tampered and expired ones do not.
func TestTURNCredentialsWorkWithCoturn(t *testing.T) {
	turnserver, err1 := exec.LookPath("turnserver")
	uclient, err2 := exec.LookPath("turnutils_uclient")
	if err1 != nil || err2 != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("coturn (turnserver, turnutils_uclient) is not installed; .ci/run installs it")
		}
		t.Skip("coturn is not installed (apt-get install coturn); CI runs this test")
	}
	const secret = "hearth-turn-test-secret"
	port := freeUDPPort(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv := exec.CommandContext(ctx, turnserver, "-n", "--no-cli", "--no-tls", "--no-dtls",
		"--listening-ip=127.0.0.1", fmt.Sprintf("--listening-port=%d", port), "--relay-ip=127.0.0.1",
		"--use-auth-secret", "--static-auth-secret="+secret, "--realm=hearth.test",
		"--allow-loopback-peers", "--min-port=49152", "--max-port=65535",
		"--pidfile="+filepath.Join(dir, "pid"), "--userdb="+filepath.Join(dir, "turndb"),
		"--log-file=stdout", "--simple-log")
	var srvLog strings.Builder
	srv.Stdout, srv.Stderr = &srvLog, &srvLog
	if err := srv.Start(); err != nil {
		t.Fatalf("starting turnserver: %v", err)
	}
	t.Cleanup(func() { cancel(); _ = srv.Wait() })

	hs := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) {
		c.TURNURIs = []string{fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", port)}
		c.TURNSharedSecret = secret
		c.TURNUserLifetime = "1h"
	})
	_, tok := hs.RegisterUser(t, "alice")
	r := hs.Do(t, "GET", "/_matrix/client/v3/voip/turnServer", tok, nil)
	hearthtest.Expect(t, r, 200, "")
	user, _ := r.JSON["username"].(string)
	pass, _ := r.JSON["password"].(string)

	// uclient in client-to-client mode allocates two relays with the
	// credentials and sends packets between them; it exits non-zero when
	// an allocation is refused. coturn may need a moment to listen.
	allocate := func(user, pass string) (string, error) {
		var out []byte
		var err error
		for range 20 {
			c, cancel := context.WithTimeout(ctx, 20*time.Second)
			out, err = exec.CommandContext(c, uclient, "-y", "-n", "2", "-u", user, "-w", pass,
				"-p", fmt.Sprint(port), "127.0.0.1").CombinedOutput()
			cancel()
			if err == nil || strings.Contains(string(out), "Cannot complete Allocation") {
				return string(out), err
			}
			time.Sleep(250 * time.Millisecond) // not listening yet
		}
		return string(out), err
	}
	if out, err := allocate(user, pass); err != nil {
		t.Fatalf("coturn refused Hearth's credentials %q: %v\n%s\nturnserver log:\n%s", user, err, out, srvLog.String())
	}
	if _, err := allocate(user, pass+"x"); err == nil {
		t.Fatal("coturn accepted a tampered password")
	}
	// The expiry is part of the signed username: moving it invalidates it,
	// and credentials whose time has passed are refused.
	exp, rest, _ := strings.Cut(user, ":")
	if _, err := allocate("1:"+rest, pass); err == nil {
		t.Fatalf("coturn accepted %q, an expired username with the password of %s", "1:"+rest, exp)
	}
}

func freeUDPPort(t *testing.T) int {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}
