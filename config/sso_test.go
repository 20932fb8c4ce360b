package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/config"
)

// sso_providers comes from the file as a list, and from the environment
// (and flags) as JSON; each provider is checked, and the secret can come
// from a file or an environment variable.
func TestSSOProviders(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "hearth.yaml")
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(" s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	yaml := "server_name: example.org\nsso_providers:\n  - id: corp\n    name: Corp\n    issuer: https://id.example.com/\n    client_id: hearth\n    client_secret_file: " + secretFile + "\n    link_existing: email\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg.DataDir = dir
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sp, ok := cfg.SSOProviders.Provider("corp")
	if !ok || sp.LinkExisting != config.SSOLinkEmail {
		t.Fatalf("providers: %+v", cfg.SSOProviders)
	}
	if s, err := sp.Secret(); err != nil || s != "s3cret" {
		t.Fatalf("secret from file: %q %v", s, err)
	}
	d := sp.WithDefaults()
	if d.Register != config.SSORegisterAuto || d.LocalpartClaim != "preferred_username" || strings.Join(d.Scopes, " ") != "openid profile email" {
		t.Fatalf("defaults: %+v", d)
	}

	env := map[string]string{"HEARTH_SSO_PROVIDERS": `[{"id":"a","name":"A","issuer":"http://127.0.0.1:4444/","client_id":"c","client_secret_env":"TEST_SSO_SECRET"}]`}
	if err := cfg.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "TEST_SSO_SECRET") {
		t.Fatalf("an unset secret variable: %v", err)
	}
	t.Setenv("TEST_SSO_SECRET", "from-env")
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if s, _ := cfg.SSOProviders[0].Secret(); s != "from-env" {
		t.Fatalf("secret from env: %q", s)
	}

	bad := map[string]config.SSOProvider{
		"id must be":       {ID: "a b", Name: "x", Issuer: "https://i.example/", ClientID: "c"},
		"not an https URL": {ID: "a", Name: "x", Issuer: "http://id.example.com/", ClientID: "c"},
		"client_id":        {ID: "a", Name: "x", Issuer: "https://i.example/"},
		"at most one":      {ID: "a", Name: "x", Issuer: "https://i.example/", ClientID: "c", ClientSecret: "s", ClientSecretEnv: "E"},
		"link_existing":    {ID: "a", Name: "x", Issuer: "https://i.example/", ClientID: "c", LinkExisting: "always"},
		"register":         {ID: "a", Name: "x", Issuer: "https://i.example/", ClientID: "c", Register: "sometimes"},
	}
	for want, sp := range bad {
		c := cfg
		c.SSOProviders = config.SSOProviders{sp}
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%+v: %v, want an error about %s", sp, err, want)
		}
	}
	c := cfg
	c.SSOProviders = config.SSOProviders{{ID: "a", Name: "x", Issuer: "https://i.example/", ClientID: "c"}, {ID: "a", Name: "y", Issuer: "https://i.example/", ClientID: "c"}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("duplicate ids: %v", err)
	}
}
