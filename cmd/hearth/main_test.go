package main

import (
	"bytes"
	"context"
	"flag"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/serverkey"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// serveUntilReady runs `hearth serve args...` in the background until the
// client API answers, and returns a function that stops it (as SIGTERM does).
func serveUntilReady(t *testing.T, addr string, args ...string) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() { done <- run(ctx, append([]string{"serve"}, args...), os.Stdout, &logs) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("server exited early: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("server did not become ready\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return func() error { cancel(); return <-done }
}

// First start creates the data directory, config, key and database; the
// second start (from the written config) reuses all of it.
func TestFirstStartAndRestart(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		dir := filepath.Join(t.TempDir(), "data")
		addr := freeAddr(t)
		args := []string{"--data-dir", dir, "--listen", addr, "--federation-listen", "", "--server-name", "first.test"}
		if b == hearthtest.Postgres {
			args = append(args, "--database-url", hearthtest.DatabaseURL(t, b))
		}
		stop := serveUntilReady(t, addr, args...)
		if err := stop(); err != nil {
			t.Fatalf("graceful stop: %v", err)
		}
		for _, f := range []string{"hearth.yaml", "signing.key"} {
			if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
				t.Fatalf("first start did not create %s: %v", f, err)
			}
		}
		key1, err := os.ReadFile(filepath.Join(dir, "signing.key"))
		if err != nil {
			t.Fatal(err)
		}
		cfgPath := filepath.Join(dir, "hearth.yaml")
		var out bytes.Buffer
		if err := run(context.Background(), []string{"register-user", "--config", cfgPath, "--user", "alice", "--password", "pw", "--bcrypt-cost", "4"}, &out, &out); err != nil {
			t.Fatalf("register-user: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), "@alice:first.test") {
			t.Fatalf("register-user output: %s", out.String())
		}
		// Second start from the config alone: same key, same users.
		stop = serveUntilReady(t, addr, "--config", cfgPath)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		key2, _ := os.ReadFile(filepath.Join(dir, "signing.key"))
		if !bytes.Equal(key1, key2) {
			t.Fatal("signing key changed across restarts")
		}
		if _, err := serverkey.Parse(key2); err != nil {
			t.Fatal(err)
		}
		out.Reset()
		err = run(context.Background(), []string{"register-user", "--config", cfgPath, "--user", "alice", "--password", "pw"}, &out, &out)
		if err == nil || !strings.Contains(err.Error(), "already taken") {
			t.Fatalf("alice registered twice: %v", err)
		}
		// --update sets the password of the existing account instead.
		out.Reset()
		err = run(context.Background(), []string{"register-user", "--config", cfgPath, "--user", "alice", "--password", "pw2", "--admin", "--update", "--bcrypt-cost", "4"}, &out, &out)
		if err != nil || !strings.Contains(out.String(), "updated @alice:") {
			t.Fatalf("register-user --update: %v\n%s", err, out.String())
		}
		accts, closeDB, err := openAccounts(context.Background(), cfgPath, func(*config.Config) error { return nil }, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		defer closeDB()
		if _, err := accts.CheckPassword(context.Background(), "alice", "pw"); err == nil {
			t.Fatal("the old password still works after --update")
		}
		u, err := accts.CheckPassword(context.Background(), "alice", "pw2")
		if err != nil || !u.IsAdmin {
			t.Fatalf("after --update: %v, admin %v", err, u.IsAdmin)
		}
	})
}

func TestSelfSignedFederationCertificate(t *testing.T) {
	dir := t.TempDir()
	addr, fedAddr := freeAddr(t), freeAddr(t)
	stop := serveUntilReady(t, addr, "--data-dir", dir, "--listen", addr, "--federation-listen", fedAddr)
	defer stop()
	if _, err := os.Stat(filepath.Join(dir, "federation-tls.crt")); err != nil {
		t.Fatalf("no self-signed certificate: %v", err)
	}
	// The federation listener speaks TLS with it.
	conn, err := net.Dial("tcp", fedAddr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
}

func TestStartupErrorsAreClear(t *testing.T) {
	var out bytes.Buffer
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "--config", "/nonexistent/hearth.yaml"}, "generate-config"},
		{[]string{"serve", "--data-dir", t.TempDir(), "--registration", "sometimes"}, "registration"},
		{[]string{"serve", "--data-dir", t.TempDir(), "--listen", freeAddr(t), "--federation-listen", "", "--database-url", "postgres://nobody:x@127.0.0.1:1/none?connect_timeout=2"}, "cannot reach PostgreSQL"},
		{[]string{"frobnicate"}, "unknown command"},
	}
	for _, c := range cases {
		err := run(context.Background(), c.args, &out, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one mentioning %q", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), ":x@") {
			t.Errorf("error leaks the database password: %v", err)
		}
	}
}

func TestGenerateConfig(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"generate-config", "--server-name", "example.org"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "\nserver_name: example.org\n") {
		t.Fatalf("generated config lacks the server name:\n%s", out.String())
	}
}

// registration-token create/list/revoke work on the configured database.
func TestRegistrationTokenCommand(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		dir := t.TempDir()
		cfgPath := filepath.Join(dir, "hearth.yaml")
		cfg := "server_name: tokens.test\ndata_dir: " + dir + "\nregistration: token\nbcrypt_cost: 4\n"
		if b == hearthtest.Postgres {
			cfg += "database_url: " + hearthtest.DatabaseURL(t, b) + "\n"
		}
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		cli := func(args ...string) (string, error) {
			var out bytes.Buffer
			err := run(context.Background(), append([]string{"registration-token"}, args...), &out, &out)
			return out.String(), err
		}
		out, err := cli("create", "--config", cfgPath, "--token", "invite-1", "--uses", "2", "--expires", "24h")
		if err != nil || strings.TrimSpace(out) != "invite-1" {
			t.Fatalf("create: %v %s", err, out)
		}
		out, err = cli("create", "--config", cfgPath, "--length", "20")
		if err != nil || len(strings.TrimSpace(out)) != 20 {
			t.Fatalf("create random: %v %q", err, out)
		}
		random := strings.TrimSpace(out)
		if _, err := cli("create", "--config", cfgPath, "--token", "invite-1"); err == nil || !strings.Contains(err.Error(), "already exists") {
			t.Fatalf("duplicate token accepted: %v", err)
		}
		if _, err := cli("create", "--config", cfgPath, "--expires", "yesterday"); err == nil {
			t.Fatal("bad --expires accepted")
		}
		out, err = cli("list", "--config", cfgPath)
		if err != nil || !strings.Contains(out, "invite-1") || !strings.Contains(out, random) || !strings.Contains(out, "unlimited") {
			t.Fatalf("list: %v\n%s", err, out)
		}
		if out, err = cli("revoke", "--config", cfgPath, "--token", random); err != nil {
			t.Fatalf("revoke: %v %s", err, out)
		}
		out, _ = cli("list", "--config", cfgPath, "--valid", "true")
		if strings.Contains(out, random) || !strings.Contains(out, "invite-1") {
			t.Fatalf("list after revoke:\n%s", out)
		}
		if _, err := cli("revoke", "--config", cfgPath, "--token", random); err == nil {
			t.Fatal("revoking a missing token succeeded")
		}
		if _, err := cli("frobnicate", "--config", cfgPath); err == nil {
			t.Fatal("unknown subcommand accepted")
		}
	})
}

func TestBooleanFlagsNeedNoValue(t *testing.T) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	_, apply := configFlags(fs)
	if err := fs.Parse([]string{"--federation-tls-insecure-skip-verify", "--guest-access=false", "--server-name", "localhost:18448"}); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.GuestAccess = true
	if err := apply(&cfg); err != nil {
		t.Fatal(err)
	}
	if !cfg.FederationTLSInsecureSkipVerify || cfg.GuestAccess || cfg.ServerName != "localhost:18448" {
		t.Fatalf("flags applied: insecure=%v guest=%v name=%q", cfg.FederationTLSInsecureSkipVerify, cfg.GuestAccess, cfg.ServerName)
	}
}

// hearth --help and hearth help list every subcommand, not serve's flags.
func TestHelpListsSubcommands(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		var out, errOut strings.Builder
		if err := run(context.Background(), args, &out, &errOut); err != nil {
			t.Fatalf("hearth %v: %v", args, err)
		}
		for _, sub := range []string{"serve", "generate-config", "register-user", "registration-token", "media", "reset-password", "migrate-db", "backup", "restore", "import dendrite", "healthcheck", "version", "help"} {
			if !strings.Contains(out.String(), "hearth "+sub) && !strings.Contains(out.String(), "hearth ["+sub+"]") {
				t.Errorf("hearth %v does not list %s:\n%s", args, sub, out.String())
			}
		}
	}
}

// healthcheck succeeds against a server that answers /health and fails,
// saying so, against one that does not.
func TestHealthcheck(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	var out, errOut strings.Builder
	if err := run(context.Background(), []string{"healthcheck", "--url", hs.URL + "/health"}, &out, &errOut); err != nil {
		t.Fatalf("healthcheck of a running server: %v", err)
	}
	err := run(context.Background(), []string{"healthcheck", "--url", hs.URL + "/_matrix/client/v3/nothing", "--timeout", "2s"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("healthcheck of a missing endpoint: %v, want a 404 error", err)
	}
}

// reset-password sets a forgotten password from the shell and signs the
// user's devices out; an unknown user is a clear error.
func TestResetPassword(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		alice, oldTok := hs.RegisterUser(t, "alice")
		flags := []string{"--data-dir", hs.Config.DataDir, "--database-url", hs.Config.DatabaseURL, "--server-name", hs.Config.ServerName, "--bcrypt-cost", "4"}
		var out bytes.Buffer
		if err := run(context.Background(), append([]string{"reset-password", "--user", "alice", "--password", "n3w-secret"}, flags...), &out, &out); err != nil {
			t.Fatalf("reset-password: %v\n%s", err, out.String())
		}
		if !strings.Contains(out.String(), alice) {
			t.Fatalf("reset-password output: %s", out.String())
		}
		login := func(pw string) hearthtest.Response {
			return hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": pw})
		}
		hearthtest.Expect(t, login("password"), 403, "M_FORBIDDEN")
		hearthtest.Expect(t, login("n3w-secret"), 200, "")
		hs.Restart(t) // a running server may serve a cached token for a few seconds
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v3/account/whoami", oldTok, nil), 401, "M_UNKNOWN_TOKEN")

		err := run(context.Background(), append([]string{"reset-password", "--user", "@nobody:" + hs.Config.ServerName, "--password", "x"}, flags...), &out, &out)
		if err == nil || !strings.Contains(err.Error(), "No user") {
			t.Fatalf("reset-password of an unknown user: %v", err)
		}
	})
}

// hearth import needs its source named; a missing config is a clear error.
// (The import itself is tested against a real Dendrite in importdendrite.)
func TestImportCommandErrors(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"import"}, "usage: hearth import dendrite"},
		{[]string{"import", "synapse"}, "usage: hearth import dendrite"},
		{[]string{"import", "dendrite", "--data-dir", dir}, "--dendrite-config FILE and --data-dir DIR are required"},
		{[]string{"import", "dendrite", "--dendrite-config", filepath.Join(dir, "nope.yaml"), "--data-dir", dir}, "reading Dendrite config"},
	} {
		var out strings.Builder
		err := run(context.Background(), c.args, &out, &out)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("hearth %v: %v, want an error saying %q", c.args, err, c.want)
		}
	}
}
