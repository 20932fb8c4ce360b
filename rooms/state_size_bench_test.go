package rooms_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
)

// BenchmarkStateStorage builds a room of 1,000 members with 10,000
// messages and reports the bytes its state storage takes per event (the
// snapshot rows: ids, parents, and the (type, state_key, event_id) entries).
// Run it once: go test -run '^$' -bench StateStorage -benchtime 1x ./rooms
func BenchmarkStateStorage(b *testing.B) {
	const members, messages = 1000, 10000
	for i := 0; i < b.N; i++ {
		hs := hearthtest.NewServer(b, hearthtest.SQLite, nil)
		ctx := context.Background()
		creator, _ := hs.RegisterUser(b, "creator")
		roomID, err := hs.Rooms.Create(ctx, rooms.CreateRequest{Creator: creator, Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		for m := 0; m < members-1; m++ {
			// Members of another server: the room's state is the same, and
			// no local push evaluation runs for them (a room of 1,000 local
			// members costs 999 notification rows per message, which is
			// push's storage, not state's).
			u := fmt.Sprintf("@member%d:elsewhere.invalid", m)
			if _, err := hs.Rooms.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: u, Target: u, Membership: spec.Join}); err != nil {
				b.Fatal(err)
			}
		}
		content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": "hello"})
		for m := 0; m < messages; m++ {
			if _, err := hs.Rooms.Send(ctx, roomID, rooms.Proto{Sender: creator, Type: "m.room.message", Content: content}); err != nil {
				b.Fatal(err)
			}
		}
		var events, snapshots, entries, entryBytes int64
		q := hs.DB.Read()
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE room_id = $1`, roomID).Scan(&events); err != nil {
			b.Fatal(err)
		}
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM state_snapshots WHERE room_id = $1`, roomID).Scan(&snapshots); err != nil {
			b.Fatal(err)
		}
		if err := q.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(LENGTH(type) + LENGTH(state_key) + LENGTH(event_id) + 8), 0)
			FROM state_snapshot_entries e JOIN state_snapshots s ON s.snapshot_id = e.snapshot_id WHERE s.room_id = $1`, roomID).Scan(&entries, &entryBytes); err != nil {
			b.Fatal(err)
		}
		total := entryBytes + snapshots*3*8 // each snapshot row: id, parent, chain length
		b.ReportMetric(float64(total)/float64(events), "state-bytes/event")
		b.ReportMetric(float64(entries), "snapshot-entries")
		b.ReportMetric(float64(snapshots), "snapshots")
		b.ReportMetric(float64(events), "events")
	}
}
