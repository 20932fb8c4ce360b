package config_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth"
	"github.com/hearth-matrix/hearth/config"
)

// The sample config must parse, equal the defaults, and document every key
// (with its environment variable) so it stays the complete reference.
func TestSampleConfigDocumentsEveryOption(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sample.yaml")
	if err := os.WriteFile(path, []byte(hearth.SampleConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("sample config does not load: %v", err)
	}
	def := config.Default()
	if cfg.ServerName != def.ServerName || cfg.Registration != def.Registration || cfg.BcryptCost != def.BcryptCost ||
		cfg.MaxRequestBytes != def.MaxRequestBytes || cfg.Listen != def.Listen || cfg.FederationListen != def.FederationListen {
		t.Errorf("sample values differ from the defaults:\nsample  %+v\ndefault %+v", cfg, def)
	}
	for _, key := range config.Keys() {
		if !strings.Contains(hearth.SampleConfig, "\n"+key+":") {
			t.Errorf("config.sample.yaml does not set %s", key)
		}
		if !strings.Contains(hearth.SampleConfig, config.EnvName(key)) {
			t.Errorf("config.sample.yaml does not name %s", config.EnvName(key))
		}
	}
}

func TestValidateNamesTheBadKey(t *testing.T) {
	cases := map[string]func(*config.Config){
		"server_name":         func(c *config.Config) { c.ServerName = "bad name!" },
		"registration":        func(c *config.Config) { c.Registration = "sometimes" },
		"listen":              func(c *config.Config) { c.Listen = "8008" },
		"bcrypt_cost":         func(c *config.Config) { c.BcryptCost = 40 },
		"tls_cert_path":       func(c *config.Config) { c.TLSCertPath = "/x.crt" },
		"sqlite_synchronous":  func(c *config.Config) { c.SQLiteSynchronous = "off" },
		"log_level":           func(c *config.Config) { c.LogLevel = "loud" },
		"user_limit_info_uri": func(c *config.Config) { c.UserLimitInfoURI = "/limits" },
		"max_request_bytes":   func(c *config.Config) { c.MaxRequestBytes = 10 },
		"turn_user_lifetime":  func(c *config.Config) { c.TURNUserLifetime = "soon" },
		"turn_uris":           func(c *config.Config) { c.TURNURIs = []string{"http://turn.example.org"}; c.TURNSharedSecret = "s" },
		"turn_shared_secret":  func(c *config.Config) { c.TURNURIs = []string{"turn:turn.example.org"} },
		"livekit_url": func(c *config.Config) {
			c.LiveKitURL, c.LiveKitAPIKey, c.LiveKitAPISecret, c.WellKnownClient = "https://lk.example.org", "k", "s", "https://m.example.org"
		},
		"livekit_api_key": func(c *config.Config) { c.LiveKitURL, c.LiveKitAPISecret = "wss://lk.example.org", "s" },
		"livekit_api_secret": func(c *config.Config) {
			c.LiveKitURL, c.LiveKitAPIKey, c.WellKnownClient = "wss://lk.example.org", "k", "https://m.example.org"
		},
		"well_known_client": func(c *config.Config) {
			c.LiveKitURL, c.LiveKitAPIKey, c.LiveKitAPISecret = "wss://lk.example.org", "k", "s"
		},
	}
	for key, breakIt := range cases {
		c := config.Default()
		breakIt(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: error %v does not name the key", key, err)
		}
	}
	c := config.Default()
	if err := c.Validate(); err != nil {
		t.Errorf("defaults do not validate: %v", err)
	}
}

func TestUnknownKeyIsAnError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("server_nmae: example.org\n"), 0o600)
	if _, err := config.Load(path); err == nil || !strings.Contains(err.Error(), "server_nmae") {
		t.Fatalf("misspelt key accepted or not named: %v", err)
	}
	os.WriteFile(path, []byte("bcrypt_cost: lots\n"), 0o600)
	if _, err := config.Load(path); err == nil {
		t.Fatal("bcrypt_cost: lots accepted")
	}
}

func TestEnvAndSet(t *testing.T) {
	c := config.Default()
	env := map[string]string{"HEARTH_SERVER_NAME": "example.org", "HEARTH_BCRYPT_COST": "10", "HEARTH_FEDERATION_CA_CERTS": "/a.pem, /b.pem"}
	if err := c.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if c.ServerName != "example.org" || c.BcryptCost != 10 || len(c.FederationCACerts) != 2 || c.FederationCACerts[1] != "/b.pem" {
		t.Fatalf("env not applied: %+v", c)
	}
	if err := c.ApplyEnv(func(k string) (string, bool) { return "x", k == "HEARTH_BCRYPT_COST" }); err == nil || !strings.Contains(err.Error(), "HEARTH_BCRYPT_COST") {
		t.Fatalf("bad env value not reported by name: %v", err)
	}
	if err := c.Set("registration", "open"); err != nil || c.Registration != "open" {
		t.Fatalf("Set: %v %q", err, c.Registration)
	}
}

func TestServerNames(t *testing.T) {
	for _, ok := range []string{"example.org", "localhost:18448", "1.2.3.4", "[::1]:8448", "hs1"} {
		if err := config.ValidServerName(ok); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "a b", "x:0", "x:99999", "[::1", "ex_ample.org", "host:"} {
		if err := config.ValidServerName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseLifetime(t *testing.T) {
	for in, want := range map[string]time.Duration{"1h": time.Hour, "90m": 90 * time.Minute, "3600": time.Hour, " 60 ": time.Minute} {
		if got, err := config.ParseLifetime(in); err != nil || got != want {
			t.Errorf("ParseLifetime(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-5", "-1h", "soon"} {
		if _, err := config.ParseLifetime(in); err == nil {
			t.Errorf("ParseLifetime(%q) accepted", in)
		}
	}
}

// Only the reloadable keys of a changed config are applied on SIGHUP;
// the others are reported as needing a restart.
func TestReloadableKeys(t *testing.T) {
	for _, k := range []string{"log_level", "registration", "turn_uris", "livekit_url", "url_preview_allow_cidrs", "rate_limit_login_burst"} {
		if !slices.Contains(config.ReloadableKeys(), k) {
			t.Errorf("%s is not reloadable", k)
		}
	}
	for _, k := range []string{"server_name", "database_url", "listen", "tls"} {
		if config.Reloadable(k) {
			t.Errorf("%s is reloadable", k)
		}
	}
	old := config.Default()
	n := config.Default()
	n.Registration = config.RegistrationOpen
	n.TURNURIs = []string{"turn:new.example"}
	n.Listen = ":9999"
	n.ThumbnailSizes = append([]string(nil), old.ThumbnailSizes...) // equal, not the same slice
	changed := config.Changed(old, n)
	if want := []string{"listen", "registration", "turn_uris"}; !slices.Equal(changed, want) {
		t.Fatalf("Changed = %v, want %v", changed, want)
	}
	applied := old.WithReloaded(n)
	if applied.Registration != config.RegistrationOpen || !slices.Equal(applied.TURNURIs, n.TURNURIs) || applied.Listen != old.Listen {
		t.Fatalf("WithReloaded applied %+v", applied)
	}
	if old.Registration != config.RegistrationClosed {
		t.Fatal("WithReloaded changed its receiver")
	}
	var empty, nilList config.Config
	empty.TURNURIs = []string{}
	if c := config.Changed(empty, nilList); len(c) != 0 {
		t.Fatalf("an empty and a missing list differ: %v", c)
	}
}

// config.sample.yaml says "Reloads on SIGHUP." in the comment of exactly
// the reloadable keys.
func TestSampleConfigMarksReloadableKeys(t *testing.T) {
	lines := strings.Split(hearth.SampleConfig, "\n")
	for _, key := range config.Keys() {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, key+":") })
		if i < 0 {
			t.Fatalf("config.sample.yaml does not set %s", key)
		}
		marked := false
		for j := i - 1; j >= 0 && lines[j] != ""; j-- {
			marked = marked || lines[j] == "# Reloads on SIGHUP."
		}
		if marked != config.Reloadable(key) {
			t.Errorf("%s: marked as reloading %v, reloads %v", key, marked, config.Reloadable(key))
		}
	}
}
