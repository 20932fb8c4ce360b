package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/homeserver"
)

// hearth media quarantine|delete works on a running server's database.
func TestMediaCommand(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		dir := t.TempDir()
		cfg := config.Default()
		cfg.ServerName, cfg.DataDir, cfg.BcryptCost, cfg.FederationListen = "cli.test", dir, 4, ""
		if b == hearthtest.Postgres {
			cfg.DatabaseURL = hearthtest.DatabaseURL(t, b)
		}
		raw, err := cfg.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		cfgPath := filepath.Join(dir, "hearth.yaml")
		if err := os.WriteFile(cfgPath, raw, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.ResolvePaths()
		hs, err := homeserver.New(context.Background(), cfg, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer hs.Close()
		srv := httptest.NewServer(hs.ClientHandler())
		defer srv.Close()
		login, err := hs.Accounts.Register(context.Background(), accounts.NewUser{Localpart: "alice", Password: "pw"})
		if err != nil {
			t.Fatal(err)
		}
		r := hearthtest.Do(t, http.DefaultClient, "POST", srv.URL+"/_matrix/media/v3/upload", login.AccessToken, "some content")
		hearthtest.Expect(t, r, http.StatusOK, "")
		mxc := r.JSON["content_uri"].(string)
		download := func() int {
			return hearthtest.Do(t, http.DefaultClient, "GET", srv.URL+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(mxc, "mxc://"), login.AccessToken, nil).Status
		}
		media := func(args ...string) (string, error) {
			var out bytes.Buffer
			err := run(context.Background(), append([]string{"media"}, args...), &out, &out)
			return out.String(), err
		}
		if out, err := media("quarantine", "--config", cfgPath, mxc); err != nil || !strings.Contains(out, "quarantined") {
			t.Fatalf("quarantine: %v %s", err, out)
		}
		if s := download(); s != http.StatusNotFound {
			t.Fatalf("quarantined media served: %d", s)
		}
		if _, err := media("unquarantine", "--config", cfgPath, mxc); err != nil {
			t.Fatal(err)
		}
		if s := download(); s != http.StatusOK {
			t.Fatalf("unquarantined media: %d", s)
		}
		if _, err := media("delete", "--config", cfgPath, mxc); err != nil {
			t.Fatal(err)
		}
		if s := download(); s != http.StatusNotFound {
			t.Fatalf("deleted media served: %d", s)
		}
		if _, err := media("delete", "--config", cfgPath, mxc); err == nil || !strings.Contains(err.Error(), "not found") {
			t.Fatalf("deleting twice: %v", err)
		}
		if _, err := media("delete", "--config", cfgPath, "mxc://cli.test/../../etc"); err == nil {
			t.Fatal("a traversal media ID was accepted")
		}
	})
}
