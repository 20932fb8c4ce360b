package appservice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeReg(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const goodReg = `id: irc
url: null
as_token: a1
hs_token: h1
sender_localpart: ircbot
namespaces:
  users: [{exclusive: true, regex: '@_irc_.*'}]
  aliases: [{exclusive: false, regex: '#_irc_.*'}]
org.matrix.msc3202: true
`

func TestLoadChecksEveryFieldAndNamesIt(t *testing.T) {
	dir := t.TempDir()
	good := writeReg(t, dir, "good.yaml", goodReg)
	regs, err := Load([]string{good}, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	reg := regs[0]
	if reg.PushURL() != "" || !reg.IsRateLimited() || !reg.OwnsUser("@_irc_bob:example.org", "example.org") ||
		!reg.OwnsUser("@ircbot:example.org", "example.org") || reg.OwnsUser("@bob:example.org", "example.org") || !reg.OwnsAlias("#_irc_x:example.org") {
		t.Fatalf("registration read wrongly: %+v", reg)
	}
	r := NewRegistry(regs, "example.org")
	if got, ok := r.ByToken("a1"); !ok || got != reg {
		t.Fatal("as_token lookup failed")
	}
	if _, ok := r.ByToken("h1"); ok {
		t.Fatal("hs_token authenticated as the service")
	}
	if !r.ExclusiveUser("@_irc_bob:example.org", nil) || r.ExclusiveUser("@_irc_bob:example.org", reg) || r.ExclusiveAlias("#_irc_x:example.org", nil) {
		t.Fatal("exclusive namespaces misjudged")
	}

	for _, tc := range []struct{ name, body, want string }{
		{"noid", strings.Replace(goodReg, "id: irc\n", "", 1), "id: is required"},
		{"noas", strings.Replace(goodReg, "as_token: a1\n", "", 1), "as_token: is required"},
		{"nohs", strings.Replace(goodReg, "hs_token: h1\n", "", 1), "hs_token: is required"},
		{"samehs", strings.Replace(goodReg, "hs_token: h1", "hs_token: a1", 1), "hs_token: must differ"},
		{"nosender", strings.Replace(goodReg, "sender_localpart: ircbot\n", "", 1), "sender_localpart: is required"},
		{"badsender", strings.Replace(goodReg, "ircbot", "IRC Bot", 1), "sender_localpart:"},
		{"badurl", strings.Replace(goodReg, "url: null", "url: ftp://x", 1), "url:"},
		{"badregex", strings.Replace(goodReg, "'@_irc_.*'", "'@_irc_(.*'", 1), "namespaces.users[0].regex:"},
		{"noregex", strings.Replace(goodReg, "regex: '#_irc_.*'", "regex: ''", 1), "namespaces.aliases[0].regex: is required"},
		{"notyaml", "id: [", "notyaml.yaml"},
	} {
		path := writeReg(t, dir, tc.name+".yaml", tc.body)
		_, err := Load([]string{path}, "example.org")
		if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error naming %s and %q", tc.name, err, path, tc.want)
		}
	}

	dupID := writeReg(t, dir, "dupid.yaml", strings.NewReplacer("a1", "a2", "h1", "h2").Replace(goodReg))
	if _, err := Load([]string{good, dupID}, "example.org"); err == nil || !strings.Contains(err.Error(), "id:") {
		t.Errorf("duplicate id: %v", err)
	}
	dupTok := writeReg(t, dir, "duptok.yaml", strings.NewReplacer("id: irc", "id: other", "h1", "h2").Replace(goodReg))
	if _, err := Load([]string{good, dupTok}, "example.org"); err == nil || !strings.Contains(err.Error(), "as_token:") {
		t.Errorf("duplicate as_token: %v", err)
	}
	if _, err := Load([]string{filepath.Join(dir, "missing.yaml")}, "example.org"); err == nil {
		t.Error("a missing file loaded")
	}
}
