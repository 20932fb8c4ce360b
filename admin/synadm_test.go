package admin_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// synadm runs the real synadm client (Debian package synadm) with the
// config file at cfg and returns its standard output.
func synadm(t *testing.T, cfg string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("synadm", append([]string{"--batch", "-o", "json", "-c", cfg}, args...)...)
	cmd.Env = append(os.Environ(), "HOME="+filepath.Dir(cfg))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("synadm %v: %v\nstdout: %s\nstderr: %s", args, err, out.Bytes(), errb.Bytes())
	}
	if strings.Contains(errb.String(), "returned status code") || strings.Contains(errb.String(), "ERROR") {
		t.Fatalf("synadm %v reported a failure:\nstdout: %s\nstderr: %s", args, out.Bytes(), errb.Bytes())
	}
	return out.Bytes()
}

// lastJSON decodes the last JSON document synadm printed (some commands
// print notes and earlier documents first).
func lastJSON(t *testing.T, out []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(out[bytes.IndexByte(out, '{'):]))
	var last map[string]any
	for {
		var v map[string]any
		if err := dec.Decode(&v); err != nil {
			break
		}
		last = v
	}
	if last == nil {
		t.Fatalf("no JSON in synadm's output: %s", out)
	}
	return last
}

// TestSynadm drives a Hearth server with synadm, the Synapse admin CLI:
// version, user list, details, password and deactivate, room list,
// details and delete, media list by user and by room. Without synadm on PATH the test fails when CI=true
// (CI installs it) and is skipped otherwise.
func TestSynadm(t *testing.T) {
	if _, err := exec.LookPath("synadm"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("synadm is not installed (apt-get install -y synadm); CI must run this test")
		}
		t.Skip("synadm is not installed (apt-get install -y synadm): skipping the real-client test")
	}
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		bob := newUser(t, hs, "bob")
		room := bob.createRoom(t, map[string]any{"name": "Synadm room"})

		dir := t.TempDir()
		cfg := filepath.Join(dir, "synadm.yaml")
		// JSON is YAML: every value quoted. synadm wants every key set.
		conf, _ := json.Marshal(map[string]any{"user": admin.id, "token": admin.token, "base_url": hs.URL,
			"admin_path": "/_synapse/admin", "matrix_path": "/_matrix", "timeout": 30,
			"server_discovery": "well-known", "homeserver": "hearth.test", "format": "json"})
		if err := os.WriteFile(cfg, conf, 0o600); err != nil {
			t.Fatal(err)
		}

		if v := lastJSON(t, synadm(t, cfg, "version")); !strings.HasPrefix(v["server_version"].(string), "Hearth") {
			t.Fatalf("version: %v", v)
		}
		j := lastJSON(t, synadm(t, cfg, "user", "list"))
		if j["total"] != float64(2) || len(names(j["users"], "name")) != 2 {
			t.Fatalf("user list: %v", j)
		}
		if j = lastJSON(t, synadm(t, cfg, "user", "details", bob.id)); j["name"] != bob.id || j["deactivated"] != false {
			t.Fatalf("user details: %v", j)
		}
		image, imageID := upload(t, bob, "synadm image")
		bob.ok(t, "PUT", path("/_matrix/client/v3/rooms", room, "send", "m.room.message", "img"),
			map[string]any{"msgtype": "m.image", "body": "pic", "url": image})
		if j = lastJSON(t, synadm(t, cfg, "media", "list", "-u", bob.id, "--ts")); j["total"] != float64(1) || names(j["media"], "media_id")[0] != imageID {
			t.Fatalf("media list -u: %v", j)
		}
		if j = lastJSON(t, synadm(t, cfg, "media", "list", "-u", bob.id, "-s", "media_length", "-R", "--ts")); j["total"] != float64(1) {
			t.Fatalf("media list -u sorted: %v", j)
		}
		if j = lastJSON(t, synadm(t, cfg, "media", "list", "-r", room)); len(j["local"].([]any)) != 1 || j["local"].([]any)[0] != image {
			t.Fatalf("media list -r: %v", j)
		}

		synadm(t, cfg, "user", "password", bob.id, "-p", "changed-by-synadm")
		hearthtest.Expect(t, bob.do(t, "GET", "/_matrix/client/v3/account/whoami", nil), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		login := hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
			"identifier": map[string]any{"type": "m.id.user", "user": "bob"}, "password": "changed-by-synadm"})
		hearthtest.Expect(t, login, http.StatusOK, "")

		j = lastJSON(t, synadm(t, cfg, "room", "list"))
		if j["total_rooms"] != float64(1) || names(j["rooms"], "room_id")[0] != room {
			t.Fatalf("room list: %v", j)
		}
		if j = lastJSON(t, synadm(t, cfg, "room", "details", room)); j["name"] != "Synadm room" || j["joined_local_members"] != float64(1) {
			t.Fatalf("room details: %v", j)
		}

		if j = lastJSON(t, synadm(t, cfg, "user", "deactivate", bob.id)); j["id_server_unbind_result"] != "success" {
			t.Fatalf("user deactivate: %v", j)
		}
		if d := admin.ok(t, "GET", v2+"/users/"+bob.id, nil); d["deactivated"] != true {
			t.Fatalf("bob after synadm deactivate: %v", d)
		}
		if j = lastJSON(t, synadm(t, cfg, "room", "details", room)); j["joined_members"] != float64(0) {
			t.Fatalf("bob should have left his room: %v", j)
		}

		other := admin.createRoom(t, map[string]any{"name": "To delete"})
		if j = lastJSON(t, synadm(t, cfg, "room", "delete", other, "--block")); len(j["kicked_users"].([]any)) != 1 {
			t.Fatalf("room delete: %v", j)
		}
		if b := admin.ok(t, "GET", v1+"/rooms/"+other+"/block", nil); b["block"] != true {
			t.Fatalf("room not blocked after synadm room delete --block: %v", b)
		}
	})
}
