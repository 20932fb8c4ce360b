package rooms_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
)

// A redaction of another user's event takes effect only when its sender
// has the room's redact power level or is of the target sender's server
// (room versions 3 and later leave this check to the server, and events of
// other servers' users reach the same path): a user of another server
// without power cannot erase this server's users' events. Their own
// events they can redact, and the room's admins can redact theirs.
func TestRedactionNeedsPowerOverOthers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		for _, version := range []string{"10", "11", "12"} {
			if !rooms.IsSupported(version) {
				continue
			}
			t.Run("v"+version, func(t *testing.T) {
				c := newCore(t, b)
				ctx := context.Background()
				roomID, err := c.Create(ctx, rooms.CreateRequest{Creator: alice, Preset: "public_chat", Version: gomatrixserverlib.RoomVersion(version)})
				if err != nil {
					t.Fatal(err)
				}
				const mallory = "@mallory:elsewhere.invalid"
				c.join(t, roomID, mallory)
				redact := func(sender, target string) *rooms.Event {
					t.Helper()
					content, _ := json.Marshal(map[string]string{"redacts": target})
					return c.send(t, roomID, rooms.Proto{Sender: sender, Type: spec.MRoomRedaction, Redacts: target, Content: content})
				}
				redactedBy := func(r *rooms.Rooms, id string) string {
					t.Helper()
					ev, err := r.Event(ctx, id)
					if err != nil {
						t.Fatal(err)
					}
					if ev.RedactedBy == nil {
						if !gjson.GetBytes(ev.PDU.Content(), "body").Exists() {
							t.Fatalf("%s lost its content without being marked redacted", id)
						}
						return ""
					}
					if gjson.GetBytes(ev.PDU.Content(), "body").Exists() {
						t.Fatalf("%s marked redacted but served with its content", id)
					}
					return *ev.RedactedBy
				}
				alices := c.send(t, roomID, message(alice, "alice's words"))
				refused := redact(mallory, alices.EventID)
				for name, r := range map[string]*rooms.Rooms{"same core": c.Rooms, "fresh core": c.fresh()} {
					if by := redactedBy(r, alices.EventID); by != "" {
						t.Fatalf("%s: mallory (power 0, another server) redacted alice's event with %s", name, by)
					}
				}
				if _, err := c.Event(ctx, refused.EventID); err != nil {
					t.Fatalf("the redaction itself is not stored: %v", err)
				}
				own := c.send(t, roomID, message(mallory, "mallory's words"))
				byMallory := redact(mallory, own.EventID)
				other := c.send(t, roomID, message(mallory, "more of mallory's words"))
				byAlice := redact(alice, other.EventID)
				for name, r := range map[string]*rooms.Rooms{"same core": c.Rooms, "fresh core": c.fresh()} {
					if by := redactedBy(r, own.EventID); by != byMallory.EventID {
						t.Fatalf("%s: mallory's redaction of her own event: redacted by %q", name, by)
					}
					if by := redactedBy(r, other.EventID); by != byAlice.EventID {
						t.Fatalf("%s: the admin's redaction of mallory's event: redacted by %q", name, by)
					}
				}
			})
		}
	})
}
