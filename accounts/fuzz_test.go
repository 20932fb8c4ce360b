package accounts

import (
	"strings"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/config"
)

// FuzzUserID covers the user and room ID grammar as the server applies it:
// ValidateLocalpart for new users, and gomatrixserverlib's spec.NewUserID
// and spec.NewRoomID for IDs from requests and events. Properties:
//   - a localpart ValidateLocalpart accepts uses only the new-user
//     characters, and with a valid server name makes a user ID that
//     NewUserID accepts strictly, with that localpart and domain back;
//   - an ID NewUserID or NewRoomID accepts renders (String) to itself and
//     parses again to the same parts.
func FuzzUserID(f *testing.F) {
	for _, c := range [][2]string{
		{"alice", "hearth.test"}, {"bob.smith_1=2-3/4+5", "example.org:8448"}, {"", "hearth.test"}, {"Alice", "hearth.test"},
		{"al ice", "hearth.test"}, {"@alice", "hearth.test"}, {"alice:x", "hearth.test"}, {"élise", "hearth.test"},
		{strings.Repeat("a", 250), "hearth.test"}, {"alice", "[::1]:8448"}, {"alice", "1.2.3.4"},
	} {
		f.Add(c[0], c[1], "@"+c[0]+":"+c[1])
	}
	for _, id := range []string{"!room:hearth.test", "!4rguxf1u1wRHEXp8D5b2lGR2SqW5HmWwVK7bc7ks4-c", "@:x", "@a:", "@a:b:c", "!:x", "@a@b:x", "@\x00:x"} {
		f.Add("alice", "hearth.test", id)
	}
	f.Fuzz(func(t *testing.T, localpart, serverName, id string) {
		if ValidateLocalpart(localpart, serverName) == nil && config.ValidServerName(serverName) == nil {
			for _, c := range []byte(localpart) {
				if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.IndexByte("._=-/+", c) >= 0) {
					t.Fatalf("localpart %q accepted with %q", localpart, c)
				}
			}
			full := "@" + localpart + ":" + serverName
			if len(full) > 255 {
				t.Fatalf("user ID %q accepted at %d bytes", full, len(full))
			}
			u, err := spec.NewUserID(full, true)
			if err != nil {
				t.Fatalf("new user %q is not a valid user ID: %v", full, err)
			}
			if u.Local() != localpart || string(u.Domain()) != serverName || u.String() != full {
				t.Fatalf("%q parses to (%q, %q, %q)", full, u.Local(), u.Domain(), u.String())
			}
		}
		for _, strict := range []bool{true, false} {
			if u, err := spec.NewUserID(id, strict); err == nil {
				again, err := spec.NewUserID(u.String(), strict)
				if u.String() != id || err != nil || again.Local() != u.Local() || again.Domain() != u.Domain() {
					t.Fatalf("user ID %q renders as %q, which parses to %v, %v", id, u.String(), again, err)
				}
			}
		}
		if r, err := spec.NewRoomID(id); err == nil {
			again, err := spec.NewRoomID(r.String())
			if r.String() != id || err != nil || again.String() != r.String() {
				t.Fatalf("room ID %q renders as %q, which parses to %v, %v", id, r.String(), again, err)
			}
		}
	})
}
