package rooms_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/rooms"
)

// TestFormatAtSharesBundlesSafely: the syncs at one position share an
// event's bundled aggregations (FormatAt), yet what is the viewer's own
// stays theirs, and a redaction retires what was shared, in this process
// and, told by the relay (ForgetEvents), in another.
func TestFormatAtSharesBundlesSafely(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		other := c.fresh() // another process over the same database
		ctx := context.Background()
		const carol = "@carol:hearth.test"
		roomID := c.createRoom(t, "public_chat")
		c.join(t, roomID, bob)
		c.join(t, roomID, carol)
		rootProto := message(alice, "root")
		rootProto.Device, rootProto.TxnID = "PHONE", "txn-root"
		root := c.send(t, roomID, rootProto)
		editContent, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": "* edited",
			"m.new_content": map[string]any{"msgtype": "m.text", "body": "edited"},
			"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": root.EventID}})
		edit := c.send(t, roomID, rooms.Proto{Sender: alice, Type: "m.room.message", Content: editContent, Device: "PHONE", TxnID: "txn-edit"})
		replyContent, _ := json.Marshal(map[string]any{"msgtype": "m.text", "body": "reply",
			"m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": root.EventID}})
		reply := c.send(t, roomID, rooms.Proto{Sender: bob, Type: "m.room.message", Content: replyContent})
		pos := reply.StreamPos // every event up to it is committed

		format := func(r *rooms.Rooms, viewer rooms.Viewer) map[string]any {
			t.Helper()
			evs, err := r.Events(ctx, r.DB().Read(), []string{root.EventID})
			if err != nil {
				t.Fatal(err)
			}
			out, err := r.FormatAt(ctx, []*rooms.Event{evs[root.EventID]}, viewer, pos)
			if err != nil || len(out) != 1 {
				t.Fatalf("formatting for %v: %v", viewer, err)
			}
			var m map[string]any
			b, _ := json.Marshal(out[0])
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			return m
		}
		get := func(m map[string]any, keys ...string) any {
			var v any = m
			for _, k := range keys {
				o, _ := v.(map[string]any)
				v = o[k]
			}
			return v
		}
		phone := rooms.Viewer{UserID: alice, DeviceID: "PHONE"}
		laptop := rooms.Viewer{UserID: alice, DeviceID: "LAPTOP"}
		bobV, carolV := rooms.Viewer{UserID: bob, DeviceID: "B"}, rooms.Viewer{UserID: carol, DeviceID: "C"}

		before := c.CacheStats()["bundles"]
		// Carol first: her format fills the shared entry the others use.
		for _, v := range []rooms.Viewer{carolV, phone, bobV, laptop} {
			m := format(c.Rooms, v)
			wantTxn := v == phone
			if _, has := get(m, "unsigned", "transaction_id").(string); has != wantTxn {
				t.Errorf("%v: the root's transaction_id shown: %v, want %v", v, has, wantTxn)
			}
			if get(m, "unsigned", "m.relations", "m.replace", "event_id") != edit.EventID {
				t.Fatalf("%v: m.replace: %v", v, get(m, "unsigned", "m.relations"))
			}
			if txn, has := get(m, "unsigned", "m.relations", "m.replace", "unsigned", "transaction_id").(string); has != wantTxn || wantTxn && txn != "txn-edit" {
				t.Errorf("%v: the bundled edit's transaction_id: %q (shown %v), want shown %v", v, txn, has, wantTxn)
			}
			if get(m, "unsigned", "m.relations", "m.thread", "latest_event", "event_id") != reply.EventID || get(m, "unsigned", "m.relations", "m.thread", "count") != float64(1) {
				t.Fatalf("%v: m.thread: %v", v, get(m, "unsigned", "m.relations", "m.thread"))
			}
			// Alice sent the root, bob the reply; carol neither.
			if p := get(m, "unsigned", "m.relations", "m.thread", "current_user_participated"); p != (v.UserID != carol) {
				t.Errorf("%v: current_user_participated %v", v, p)
			}
			if get(m, "unsigned", "membership") != spec.Join {
				t.Errorf("%v: unsigned.membership %v", v, get(m, "unsigned", "membership"))
			}
		}
		after := c.CacheStats()["bundles"]
		if after.Hits-before.Hits != 3 || after.Misses-before.Misses != 1 {
			t.Fatalf("bundle cache: %d hits, %d misses for four viewers at one position, want 3 and 1",
				after.Hits-before.Hits, after.Misses-before.Misses)
		}

		// The other process shares the bundle among its own syncs.
		if get(format(other, bobV), "unsigned", "m.relations", "m.replace", "event_id") != edit.EventID {
			t.Fatal("other process: no m.replace before the redaction")
		}
		// The edit is redacted; syncs at the old position (slow ones, or
		// a sliding sync's leave) must not be served the cached edit.
		redContent, _ := json.Marshal(map[string]string{"redacts": edit.EventID})
		c.send(t, roomID, rooms.Proto{Sender: alice, Type: spec.MRoomRedaction, Redacts: edit.EventID, Content: redContent})
		for _, v := range []rooms.Viewer{phone, bobV} {
			if r := get(format(c.Rooms, v), "unsigned", "m.relations", "m.replace"); r != nil {
				t.Fatalf("%v: the redacted edit is still bundled: %v", v, r)
			}
		}
		// The relay tells the other process of the redaction.
		other.ForgetEvents(edit.EventID)
		m := format(other, bobV)
		if r := get(m, "unsigned", "m.relations", "m.replace"); r != nil {
			t.Fatalf("other process: the redacted edit is still bundled: %v", r)
		}
		if get(m, "unsigned", "m.relations", "m.thread", "latest_event", "event_id") != reply.EventID {
			t.Fatalf("other process: m.thread lost: %v", get(m, "unsigned", "m.relations"))
		}
	})
}

// TestRecentSharedUntilRedaction: the syncs asking for one range of a
// room's timeline at one position share the answer, and a redaction
// retires it, in this process and, told by the relay, in another.
func TestRecentSharedUntilRedaction(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		other := c.fresh()
		ctx := context.Background()
		roomID := c.createRoom(t, "public_chat")
		c.join(t, roomID, bob)
		first := c.send(t, roomID, message(bob, "first"))
		target := c.send(t, roomID, message(bob, "regrettable"))
		from, to := first.StreamPos-1, target.StreamPos

		recent := func(r *rooms.Rooms) map[string]*rooms.Event {
			t.Helper()
			evs, limited, err := r.Recent(ctx, roomID, from, to, 10)
			if err != nil || limited || len(evs) != 2 {
				t.Fatalf("recent: %d events, limited %v, %v", len(evs), limited, err)
			}
			out := map[string]*rooms.Event{}
			for _, ev := range evs {
				out[ev.EventID] = ev
			}
			return out
		}
		hits := c.CacheStats()["recent"].Hits
		for _, r := range []*rooms.Rooms{c.Rooms, c.Rooms, other} {
			if ev := recent(r)[target.EventID]; ev == nil || ev.RedactedBy != nil {
				t.Fatal("the target before its redaction")
			}
		}
		if c.CacheStats()["recent"].Hits != hits+1 {
			t.Fatalf("the second read of one range was not shared")
		}
		content, _ := json.Marshal(map[string]string{"redacts": target.EventID})
		red := c.send(t, roomID, rooms.Proto{Sender: alice, Type: spec.MRoomRedaction, Redacts: target.EventID, Content: content})
		other.ForgetEvents(target.EventID) // what the relay does
		for name, r := range map[string]*rooms.Rooms{"this process": c.Rooms, "another": other} {
			ev := recent(r)[target.EventID]
			if ev == nil || ev.RedactedBy == nil || *ev.RedactedBy != red.EventID {
				t.Fatalf("%s: a timeline read before the redaction is still served", name)
			}
			if len(ev.PDU.Content()) > 2 {
				t.Fatalf("%s: the redacted target keeps its content: %s", name, ev.PDU.Content())
			}
		}
	})
}
