package importdendrite_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha1"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/serverkey"
	"github.com/hearth-matrix/hearth/tlscert"
)

// The Dendrite the import is tested against: the last release of
// github.com/matrix-org/dendrite, built from the Go module proxy.
const dendriteVersion = "v0.13.8"

// bridgeASToken is the application service's token in the test's registration.
const bridgeASToken = "bridge-as-token-123"

// dendriteBinary finds Dendrite: $HEARTH_DENDRITE, or the tool cache that
// .ci/run fills. Missing, it is built into the cache (minutes, once),
// except in CI, where .ci/run must have built it: there the test fails.
func dendriteBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("HEARTH_DENDRITE"); p != "" {
		return p
	}
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	bin := filepath.Join(cache, "hearth-tools", "bin")
	p := filepath.Join(bin, "dendrite")
	ver, _ := os.ReadFile(p + ".version")
	if _, err := os.Stat(p); err == nil && strings.TrimSpace(string(ver)) == dendriteVersion {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("Dendrite %s is not at %s: .ci/run builds it (go install github.com/matrix-org/dendrite/cmd/dendrite@%s)", dendriteVersion, p, dendriteVersion)
	}
	t.Logf("building Dendrite %s into %s (once)", dendriteVersion, bin)
	cmd := exec.Command("go", "install", "github.com/matrix-org/dendrite/cmd/dendrite@"+dendriteVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+bin, "CGO_ENABLED=1", "GOFLAGS=-mod=mod")
	cmd.Dir = os.TempDir()
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building Dendrite: %v\n%s", err, out)
	}
	if err := os.WriteFile(p+".version", []byte(dendriteVersion+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// dendrite is a Dendrite process on this machine.
type dendrite struct {
	URL        string
	Dir        string
	ConfigPath string
	ServerName string
	FedPort    string // the federation (TLS) listener's port
	TLSCert    string
	TLSKey     string
	Key        serverkey.Key
	OldKey     serverkey.Key // published as ed25519:old1
	secret     string
	pgDSN      string // PostgreSQL: Dendrite's database; empty: SQLite files in Dir
	cmd        *exec.Cmd
	done       chan error
	logPath    string
}

// startDendrite starts Dendrite on SQLite (one database per component, as
// its sample config has it) or on PostgreSQL (one database for all, a
// database of its own), with open registration and federation off.
func startDendrite(t testing.TB, b hearthtest.Backend) *dendrite {
	t.Helper()
	bin := dendriteBinary(t)
	// Named by its federation address (an explicit port: no .well-known
	// or SRV lookup), as hearthtest.NewFederation names Hearth servers, so
	// a Hearth on this machine can federate with it.
	d := &dendrite{Dir: t.TempDir(), secret: "import-test-secret", FedPort: freePort(t)}
	d.ServerName = "localhost:" + d.FedPort
	d.TLSCert, d.TLSKey = filepath.Join(d.Dir, "server.crt"), filepath.Join(d.Dir, "server.key")
	if _, err := tlscert.EnsureSelfSigned(d.TLSCert, d.TLSKey, "localhost"); err != nil {
		t.Fatal(err)
	}
	key, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	d.Key = key
	if err := serverkey.Save(filepath.Join(d.Dir, "matrix_key.pem"), key); err != nil {
		t.Fatal(err)
	}
	var dbs string
	if b == hearthtest.Postgres {
		d.pgDSN = dendritePostgres(t)
		dbs = fmt.Sprintf("  database:\n    connection_string: %s\n    max_open_conns: 10\n    max_idle_conns: 2\n    conn_max_lifetime: -1\n", d.pgDSN)
	}
	perComponent := func(key, file string) string {
		if b == hearthtest.Postgres {
			return ""
		}
		return fmt.Sprintf("  %s:\n    connection_string: file:%s\n", key, file)
	}
	port := freePort(t)
	d.URL = "http://127.0.0.1:" + port
	// A key the server used before: its public half stays published.
	old, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	d.OldKey = old
	oldKeys := fmt.Sprintf("  old_private_keys:\n    - public_key: %s\n      key_id: ed25519:old1\n      expired_at: 1700000000000\n", old.PublicBase64().Encode())
	config := "version: 2\nglobal:\n  server_name: " + d.ServerName + "\n  private_key: matrix_key.pem\n" + oldKeys + dbs +
		`  key_validity_period: 168h0m0s
  disable_federation: false
  presence:
    enable_inbound: false
    enable_outbound: false
  jetstream:
    storage_path: ./jetstream
    topic_prefix: Dendrite
  dns_cache:
    enabled: false
app_service_api:
  config_files: [bridge.yaml]
client_api:
  registration_disabled: false
  guests_disabled: true
  registration_requires_token: true
  registration_shared_secret: "` + d.secret + `"
  rate_limiting:
    enabled: false
federation_api:
` + perComponent("database", "federationapi.db") + `  send_max_retries: 3
  disable_tls_validation: true
  key_perspectives: []
key_server:
` + perComponent("database", "keyserver.db") + `media_api:
` + perComponent("database", "mediaapi.db") + `  base_path: ./media_store
  max_file_size_bytes: 10485760
  dynamic_thumbnails: false
  thumbnail_sizes:
    - width: 32
      height: 32
      method: crop
    - width: 96
      height: 96
      method: crop
mscs:
` + perComponent("database", "mscs.db") + `  mscs: []
relay_api:
` + perComponent("database", "relayapi.db") + `room_server:
` + perComponent("database", "roomserver.db") + `  default_room_version: "10"
sync_api:
` + perComponent("database", "syncapi.db") + `  search:
    enabled: false
user_api:
` + perComponent("account_database", "userapi_accounts.db") + `  bcrypt_cost: 4
logging:
  - type: std
    level: warn
`
	// An application service (a bridge), whose registration must come along.
	bridge := `id: bridge
url: http://127.0.0.1:9
as_token: ` + bridgeASToken + `
hs_token: bridge-hs-token-123
sender_localpart: bridgebot
rate_limited: false
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*"
  aliases: []
  rooms: []
`
	if err := os.WriteFile(filepath.Join(d.Dir, "bridge.yaml"), []byte(bridge), 0o600); err != nil {
		t.Fatal(err)
	}
	d.ConfigPath = filepath.Join(d.Dir, "dendrite.yaml")
	if err := os.WriteFile(d.ConfigPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	d.logPath = filepath.Join(d.Dir, "dendrite.log")
	d.start(t, bin, port)
	t.Cleanup(func() { d.stop(t) })
	return d
}

func (d *dendrite) start(t testing.TB, bin, port string) {
	t.Helper()
	logf, err := os.Create(d.logPath)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bin, "--config", d.ConfigPath, "--really-enable-open-registration",
		"--http-bind-address", "127.0.0.1:"+port, "--https-bind-address", "127.0.0.1:"+d.FedPort,
		"--tls-cert", d.TLSCert, "--tls-key", d.TLSKey)
	d.cmd.Dir = d.Dir
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("starting Dendrite: %v", err)
	}
	d.done = make(chan error, 1)
	go func() { d.done <- d.cmd.Wait(); logf.Close() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(d.URL + "/_matrix/client/versions")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		select {
		case err := <-d.done:
			d.done <- err
			log, _ := os.ReadFile(d.logPath)
			t.Fatalf("Dendrite exited: %v\n%s", err, log)
		default:
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(d.logPath)
			t.Fatalf("Dendrite did not answer within 60 s\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// stop ends Dendrite as an operator would before a migration (SIGTERM,
// then waiting for it to exit).
func (d *dendrite) stop(t testing.TB) {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case err := <-d.done:
		d.done <- err
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.done:
		d.done <- err
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Log("Dendrite did not stop within 30 s; killed")
	}
}

// dendritePostgres is Dendrite's own database on the test PostgreSQL
// server (hearth_dendrite_test, which .ci/postgres.sh creates), emptied.
func dendritePostgres(t testing.TB) string {
	t.Helper()
	dsn := os.Getenv("HEARTH_TEST_DENDRITE_POSTGRES")
	if dsn == "" {
		u, err := url.Parse(os.Getenv("HEARTH_TEST_POSTGRES"))
		if err != nil {
			t.Fatal(err)
		}
		u.Path = "/hearth_dendrite_test"
		dsn = u.String()
	}
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, q := range []string{"DROP SCHEMA IF EXISTS public CASCADE", "CREATE SCHEMA public"} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("preparing Dendrite's database (%s; .ci/postgres.sh creates hearth_dendrite_test): %v", q, err)
		}
	}
	return dsn
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

func (d *dendrite) do(t testing.TB, method, path, token string, body any) hearthtest.Response {
	t.Helper()
	return hearthtest.Do(t, http.DefaultClient, method, d.URL+path, token, body)
}

// registerAdmin creates an account through the shared-secret admin
// registration endpoint Dendrite serves (as Synapse's).
func (d *dendrite) register(t testing.TB, localpart, password string, admin bool) (userID, token, device string) {
	t.Helper()
	r := d.do(t, "GET", "/_synapse/admin/v1/register", "", nil)
	hearthtest.Expect(t, r, 200, "")
	nonce, _ := r.JSON["nonce"].(string)
	mac := hmac.New(sha1.New, []byte(d.secret))
	adminStr := "notadmin"
	if admin {
		adminStr = "admin"
	}
	mac.Write([]byte(nonce + "\x00" + localpart + "\x00" + password + "\x00" + adminStr))
	r = d.do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
		"nonce": nonce, "username": localpart, "password": password, "admin": admin, "mac": hex.EncodeToString(mac.Sum(nil)),
	})
	hearthtest.Expect(t, r, 200, "")
	return r.JSON["user_id"].(string), r.JSON["access_token"].(string), r.JSON["device_id"].(string)
}

// login makes another device.
func (d *dendrite) login(t testing.TB, localpart, password, deviceName string) (token, device string) {
	t.Helper()
	r := d.do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{
		"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": localpart},
		"password": password, "initial_device_display_name": deviceName,
	})
	hearthtest.Expect(t, r, 200, "")
	return r.JSON["access_token"].(string), r.JSON["device_id"].(string)
}

// exec runs a statement on Dendrite's account database (the test's own
// change, as a newer Dendrite would make; the importer only reads).
func (d *dendrite) exec(t testing.TB, stmts ...string) {
	t.Helper()
	driver, dsn := "sqlite", filepath.Join(d.Dir, "userapi_accounts.db")
	if d.pgDSN != "" {
		driver, dsn = "pgx", d.pgDSN
	}
	db, err := sql.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range stmts {
		if _, err := db.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}
