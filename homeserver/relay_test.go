package homeserver

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/hearth-matrix/hearth/syncstream"
)

// Notifications stay under PostgreSQL's 8000-byte payload limit: many
// messages are packed into few payloads, and a message whose user list is
// too long for one is split, losing no one.
func TestRelayPacksUnderThePayloadLimit(t *testing.T) {
	r := &relay{id: "0123456789abcdef", log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	var users []string
	for i := range 3000 {
		users = append(users, fmt.Sprintf("@user%d:a.rather.long.server.name.example.org", i))
	}
	msgs := []relayMessage{{Sync: &syncstream.Change{Users: users, Pos: syncstream.Position{Receipts: 7}}}}
	for i := range 500 {
		msgs = append(msgs, relayMessage{Sync: &syncstream.Change{Room: fmt.Sprintf("!room%d:example.org", i), Pos: syncstream.Position{Events: int64(i)}}})
	}
	msgs = append(msgs, relayMessage{Tokens: "@alice:example.org"})
	payloads := r.pack(msgs)
	if len(payloads) < 2 || len(payloads) > 60 {
		t.Fatalf("%d payloads", len(payloads))
	}
	got := map[string]bool{}
	rooms, tokens := 0, 0
	for _, p := range payloads {
		if len(p) > 8000 {
			t.Fatalf("payload of %d bytes", len(p))
		}
		var rp relayPayload
		if err := json.Unmarshal([]byte(p), &rp); err != nil || rp.From != r.id {
			t.Fatalf("payload %q: %v", p[:100], err)
		}
		for _, raw := range rp.Msgs {
			var m relayMessage
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			switch {
			case m.Sync != nil && m.Sync.Room != "":
				rooms++
			case m.Sync != nil:
				if m.Sync.Pos.Receipts != 7 {
					t.Fatalf("split message lost its position: %+v", m.Sync.Pos)
				}
				for _, u := range m.Sync.Users {
					got[u] = true
				}
			case m.Tokens != "":
				tokens++
			}
		}
	}
	if len(got) != len(users) || rooms != 500 || tokens != 1 {
		t.Fatalf("after packing: %d of %d users, %d of 500 rooms, %d of 1 token messages", len(got), len(users), rooms, tokens)
	}
}
