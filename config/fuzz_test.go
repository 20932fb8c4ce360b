package config

import (
	"net"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// The server name grammar (appendices, Server Name), with the limits
// Hearth adds: the port is 1 to 65535, an IPv6 literal must be an address
// net.ParseIP reads, and the whole name is at most 255 bytes.
var (
	refServerName = regexp.MustCompile(`^(?:\[([0-9A-Fa-f:.]{2,45})\]|([0-9A-Za-z.-]{1,255}))(?::([0-9]{1,5}))?$`)
)

func refValidServerName(name string) bool {
	m := refServerName.FindStringSubmatch(name)
	if m == nil || len(name) > 255 {
		return false
	}
	if m[1] != "" && net.ParseIP(m[1]) == nil {
		return false
	}
	if m[3] != "" {
		n, _ := strconv.Atoi(m[3])
		return n >= 1 && n <= 65535
	}
	return true
}

// FuzzValidServerName: ValidServerName agrees with the spec's grammar
// (written as a regular expression above), and a valid name stays valid
// with a valid port added when it has none.
func FuzzValidServerName(f *testing.F) {
	for _, s := range []string{
		"matrix.org", "matrix.org:8888", "1.2.3.4", "1.2.3.4:1234", "[1234:5678::abcd]", "[1234:5678::abcd]:5678", "localhost:8448",
		"hearth.test", "[::1]", "[::ffff:127.0.0.1]:443", "a", "-", "x..y",
		"", ":", "matrix.org:", "matrix.org:0", "matrix.org:65536", "[::1", "[::1]x", "[::1]:", "[fe80::1%eth0]", "a_b.org",
		"matrix.org:80:80", "ex ample.org", "ünicode.org", "[g::1]", "matrix.org/", "@alice:matrix.org",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		got, want := ValidServerName(name) == nil, refValidServerName(name)
		if got != want {
			t.Fatalf("ValidServerName(%q) accepts: %v, grammar: %v", name, got, want)
		}
		if got && !strings.HasSuffix(name, "]") && strings.Count(name, ":") == 0 && len(name) <= 250 {
			if err := ValidServerName(name + ":8448"); err != nil {
				t.Fatalf("%q is valid but %q is not: %v", name, name+":8448", err)
			}
		}
	})
}
