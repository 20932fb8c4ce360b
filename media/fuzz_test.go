package media

import (
	"path"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/config"
)

// FuzzParseMXC: an mxc:// URI ParseMXC accepts renders back (MXC) to
// exactly itself, its parts pass CheckID and the server name check, and a
// media ID that passes can never step out of a directory ("..", "/", "\",
// NUL) — CheckID is what keeps such names out of every lookup. IDs the
// server makes (newMediaID) always pass.
func FuzzParseMXC(f *testing.F) {
	for _, s := range []string{
		"mxc://matrix.org/ascERGshawAWawugaAcauga", "mxc://example.com:8448/SEsfnsuifSDFSSEF", "mxc://[::1]:8448/abc-_DEF",
		"mxc://1.2.3.4/x", "mxc://hearth.test/" + newMediaID(),
		"mxc://matrix.org/../etc/passwd", "mxc://matrix.org/a/b", "mxc://../x", "mxc:///x", "mxc://matrix.org/", "http://matrix.org/x",
		"mxc://matrix.org/a%2Fb", "mxc://matrix.org/a.b", "mxc://matrix.org:+80/x", "MXC://matrix.org/x", "mxc://matrix.org/a\x00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		server, id, err := ParseMXC(uri)
		if err != nil {
			return
		}
		if MXC(server, id) != uri {
			t.Fatalf("%q parsed to (%q, %q), which renders as %q", uri, server, id, MXC(server, id))
		}
		if err := CheckID(server, id); err != nil {
			t.Fatalf("%q parsed, but its parts fail CheckID: %v", uri, err)
		}
		if err := config.ValidServerName(server); err != nil {
			t.Fatalf("%q parsed with server name %q: %v", uri, server, err)
		}
		if id == "" || len(id) > 255 || id == "." || id == ".." || strings.ContainsAny(id, "/\\.\x00%") || path.Clean(id) != id {
			t.Fatalf("%q parsed with unsafe media ID %q", uri, id)
		}
		// ".." is a server name by the grammar; files are named by their
		// hash, so only separators would matter.
		if strings.ContainsAny(server, "/\\\x00") {
			t.Fatalf("%q parsed with unsafe server name %q", uri, server)
		}
	})
}
