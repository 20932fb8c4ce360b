package main

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestMain lets a test start this binary as the hearth command in a
// process of its own (startProcess), to send it real signals.
func TestMain(m *testing.M) {
	if os.Getenv("HEARTH_TEST_BE_HEARTH") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// hearthProcess is `hearth args...` running in its own process.
type hearthProcess struct {
	cmd  *exec.Cmd
	logs *syncBuffer
}

// startProcess runs hearth with args until its client API on addr answers.
func startProcess(t *testing.T, addr string, args ...string) *hearthProcess {
	t.Helper()
	p := &hearthProcess{cmd: exec.Command(os.Args[0], args...), logs: &syncBuffer{}}
	p.cmd.Env = append(os.Environ(), "HEARTH_TEST_BE_HEARTH=1")
	p.cmd.Stdout, p.cmd.Stderr = p.logs, p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("hearth's log:\n%s", p.logs.String())
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if resp, err := http.Get("http://" + addr + "/_matrix/client/versions"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("hearth exited early: %v\n%s", err, p.logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("hearth did not become ready\n%s", p.logs.String())
		}
	}
}

// waitLog waits until the log holds want n times.
func (p *hearthProcess) waitLog(t *testing.T, want string, n int) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); strings.Count(p.logs.String(), want) < n; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q (#%d) in the log:\n%s", want, n, p.logs.String())
		}
	}
}

// SIGHUP reloads the config file's runtime keys in a running process:
// registration mode and shared secret, rate limits, TURN, the RTC
// transports (LiveKit), URL previews and their allow list, and the log
// level; a key that needs a restart is logged as such, and a broken file
// leaves the running config as it was.
func TestSIGHUPReloadsConfig(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		dir := t.TempDir()
		addr := freeAddr(t)
		base := fmt.Sprintf("server_name: reload.test\ndata_dir: %s\nlisten: %s\nfederation_listen: \"\"\nbcrypt_cost: 4\n", dir, addr)
		if b == hearthtest.Postgres {
			base += fmt.Sprintf("database_url: %q\n", hearthtest.DatabaseURL(t, b))
		}
		cfgPath := filepath.Join(dir, "hearth.yaml")
		write := func(s string) {
			t.Helper()
			if err := os.WriteFile(cfgPath, []byte(base+s), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		write(`
log_level: warn
registration: open
rate_limits: "off"
turn_uris: ["turn:old.example:3478"]
turn_shared_secret: old-secret
`)
		p := startProcess(t, addr, "serve", "--config", cfgPath)
		hup := func() {
			t.Helper()
			if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		if strings.Contains(p.logs.String(), "hearth starting") {
			t.Fatal("an info line was logged at log_level warn")
		}
		do := func(method, path, token string, body any) hearthtest.Response {
			t.Helper()
			return hearthtest.Do(t, http.DefaultClient, method, "http://"+addr+path, token, body)
		}
		register := func(user string) hearthtest.Response {
			t.Helper()
			r := do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": user, "password": "pw"})
			if r.Status != 401 {
				return r
			}
			return do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": user, "password": "pw",
				"auth": map[string]any{"type": "m.login.dummy", "session": r.JSON["session"]}})
		}
		badLogin := func() hearthtest.Response {
			t.Helper()
			return do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}, "password": "wrong"})
		}
		page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, `<html><head><meta property="og:title" content="Reloaded page"></head></html>`)
		}))
		defer page.Close()
		preview := func(token string) hearthtest.Response {
			t.Helper()
			return do("GET", "/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(page.URL+"/"), token, nil)
		}

		// As started.
		r := register("alice")
		hearthtest.Expect(t, r, 200, "")
		tok := r.JSON["access_token"].(string)
		turn := do("GET", "/_matrix/client/v3/voip/turnServer", tok, nil)
		hearthtest.Expect(t, turn, 200, "")
		if fmt.Sprint(turn.JSON["uris"]) != "[turn:old.example:3478]" {
			t.Fatalf("turn uris at start: %v", turn.JSON["uris"])
		}
		rtc := do("GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", tok, nil)
		hearthtest.Expect(t, rtc, 200, "")
		if fmt.Sprint(rtc.JSON["rtc_transports"]) != "[]" {
			t.Fatalf("rtc transports at start: %s", rtc.Body)
		}
		hearthtest.Expect(t, do("GET", "/_synapse/admin/v1/register", "", nil), 404, "M_UNRECOGNIZED")
		hearthtest.Expect(t, preview(tok), 404, "M_UNRECOGNIZED")
		for range 3 {
			hearthtest.Expect(t, badLogin(), 403, "M_FORBIDDEN")
		}

		// Reload: registration closed, a shared secret, rate limits on,
		// new TURN servers, a LiveKit SFU, previews on (no internal
		// addresses yet), info logs; max_upload_bytes needs a restart.
		liveKitChanged := `
log_level: info
registration: closed
registration_shared_secret: shh
rate_limits: "on"
rate_limit_login_per_second: 0.001
rate_limit_login_burst: 1
turn_uris: ["turn:new.example:3478", "turns:new.example:5349"]
turn_shared_secret: new-secret
turn_user_lifetime: 2h
livekit_url: ws://sfu.example:7880
livekit_api_key: key
livekit_api_secret: livekit-secret
well_known_client: http://` + addr + `
url_preview: true
`
		write(liveKitChanged + "max_upload_bytes: 1234\n")
		hup()
		p.waitLog(t, "SIGHUP: configuration reloaded", 1) // an info line: log_level took effect
		p.waitLog(t, "key=max_upload_bytes", 1)
		if !strings.Contains(p.logs.String(), "takes effect only after a restart") {
			t.Fatal("the restart-only key was not logged as such")
		}
		hearthtest.Expect(t, register("bob"), 403, "M_FORBIDDEN")
		turn = do("GET", "/_matrix/client/v3/voip/turnServer", tok, nil)
		hearthtest.Expect(t, turn, 200, "")
		if fmt.Sprint(turn.JSON["uris"]) != "[turn:new.example:3478 turns:new.example:5349]" || turn.JSON["ttl"] != float64(7200) {
			t.Fatalf("turn after reload: %s", turn.Body)
		}
		mac := hmac.New(sha1.New, []byte("new-secret"))
		mac.Write([]byte(turn.JSON["username"].(string)))
		if turn.JSON["password"] != base64.StdEncoding.EncodeToString(mac.Sum(nil)) {
			t.Fatal("TURN credentials are not made with the new shared secret")
		}
		service := "http://" + addr + "/_hearth/livekit"
		rtc = do("GET", "/_matrix/client/unstable/org.matrix.msc4143/rtc/transports", tok, nil)
		hearthtest.Expect(t, rtc, 200, "")
		if !strings.Contains(string(rtc.Body), `"livekit_service_url":"`+service+`"`) {
			t.Fatalf("rtc transports after reload: %s", rtc.Body)
		}
		wk := do("GET", "/.well-known/matrix/client", "", nil)
		hearthtest.Expect(t, wk, 200, "")
		if !strings.Contains(string(wk.Body), "org.matrix.msc4143.rtc_foci") {
			t.Fatalf(".well-known/matrix/client after reload: %s", wk.Body)
		}
		hearthtest.Expect(t, do("GET", "/_synapse/admin/v1/register", "", nil), 200, "")
		hearthtest.Expect(t, badLogin(), 403, "M_FORBIDDEN")
		hearthtest.Expect(t, badLogin(), 429, "M_LIMIT_EXCEEDED")
		hearthtest.Expect(t, preview(tok), 403, "M_FORBIDDEN") // 127.0.0.1 is not public

		// A broken file changes nothing.
		if err := os.WriteFile(cfgPath, []byte(base+"registration: [open\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		hup()
		p.waitLog(t, "SIGHUP: the config did not load; still running on the previous one", 1)
		hearthtest.Expect(t, register("bob"), 403, "M_FORBIDDEN")
		turn = do("GET", "/_matrix/client/v3/voip/turnServer", tok, nil)
		if fmt.Sprint(turn.JSON["uris"]) != "[turn:new.example:3478 turns:new.example:5349]" {
			t.Fatalf("turn after a broken reload: %s", turn.Body)
		}

		// Registration open again, and previews of the test page allowed.
		write(strings.Replace(liveKitChanged, "registration: closed", "registration: open", 1) + "url_preview_allow_cidrs: [127.0.0.0/8]\nmax_upload_bytes: 1234\n")
		hup()
		p.waitLog(t, "SIGHUP: configuration reloaded", 2)
		hearthtest.Expect(t, register("bob"), 200, "")
		pv := preview(tok)
		hearthtest.Expect(t, pv, 200, "")
		if pv.JSON["og:title"] != "Reloaded page" {
			t.Fatalf("preview after allowing 127.0.0.0/8: %s", pv.Body)
		}
		if n := strings.Count(p.logs.String(), "key=max_upload_bytes"); n != 2 {
			t.Fatalf("max_upload_bytes logged %d times as needing a restart, want once per reload (2)", n)
		}
		// Still the limits of the first reload: the buckets were kept.
		hearthtest.Expect(t, badLogin(), 429, "M_LIMIT_EXCEEDED")
	})
}
