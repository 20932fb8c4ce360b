package rooms_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/serverkey"
	"github.com/hearth-matrix/hearth/storage"
)

// Tests of the room core below HTTP, on real storage: a temporary SQLite
// database, and PostgreSQL when HEARTH_TEST_POSTGRES is set.

const (
	alice = "@alice:hearth.test"
	bob   = "@bob:hearth.test"
)

// core is a room core over a fresh store. fresh returns another core over
// the same store with empty caches, to read what was persisted rather than
// what the first core remembers.
type core struct {
	*rooms.Rooms
	db    *storage.DB
	fresh func() *rooms.Rooms
}

func newCore(t *testing.T, b hearthtest.Backend) core {
	t.Helper()
	db, err := storage.Open(context.Background(), hearthtest.DatabaseURL(t, b), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	return core{
		Rooms: rooms.New(db, "hearth.test", key, log),
		db:    db,
		fresh: func() *rooms.Rooms { return rooms.New(db, "hearth.test", key, log) },
	}
}

func (c core) createRoom(t *testing.T, preset string) string {
	t.Helper()
	roomID, err := c.Create(context.Background(), rooms.CreateRequest{Creator: alice, Preset: preset})
	if err != nil {
		t.Fatal(err)
	}
	return roomID
}

func message(sender, body string) rooms.Proto {
	content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	return rooms.Proto{Sender: sender, Type: "m.room.message", Content: content}
}

func stateProto(sender, typ, stateKey string, content any) rooms.Proto {
	b, _ := json.Marshal(content)
	k := stateKey
	return rooms.Proto{Sender: sender, Type: typ, StateKey: &k, Content: b}
}

func (c core) send(t *testing.T, roomID string, p rooms.Proto) *rooms.Event {
	t.Helper()
	evs, err := c.Send(context.Background(), roomID, p)
	if err != nil {
		t.Fatalf("sending %s: %v", p.Type, err)
	}
	if len(evs) != 1 {
		t.Fatalf("send returned %d events", len(evs))
	}
	return evs[0]
}

func (c core) join(t *testing.T, roomID, user string) {
	t.Helper()
	if _, err := c.SetMembership(context.Background(), roomID, rooms.ChangeMembership{Sender: user, Target: user, Membership: spec.Join}); err != nil {
		t.Fatalf("%s joining: %v", user, err)
	}
}

// timeline is every event of the room in stream order, as stored.
func (c core) timeline(t *testing.T, roomID string) []storage.Event {
	t.Helper()
	ctx := context.Background()
	max, err := storage.MaxStreamPos(ctx, c.db.Read())
	if err != nil {
		t.Fatal(err)
	}
	evs, err := storage.RoomEventsStream(ctx, c.db.Read(), roomID, 0, max, 100_000)
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(evs)
	return evs
}

func (c core) room(t *testing.T, roomID string) storage.Room {
	t.Helper()
	room, err := storage.GetRoom(context.Background(), c.db.Read(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	return room
}

func prevEvents(t *testing.T, ev storage.Event) []string {
	t.Helper()
	var ids []string
	for _, id := range gjson.GetBytes(ev.JSON, "prev_events").Array() {
		ids = append(ids, id.String())
	}
	return ids
}

// assertLinear checks that the room's timeline is one chain: each event's
// only prev_event is the event before it in stream order, at the next
// depth, with strictly increasing stream positions, and the room's head is
// the last event.
func (c core) assertLinear(t *testing.T, roomID string) []storage.Event {
	t.Helper()
	evs := c.timeline(t, roomID)
	for i, ev := range evs {
		if i == 0 {
			if ev.Type != spec.MRoomCreate || len(prevEvents(t, ev)) != 0 {
				t.Fatalf("first event is %s with prev_events %v", ev.Type, prevEvents(t, ev))
			}
			continue
		}
		prev := evs[i-1]
		if ev.StreamPos <= prev.StreamPos {
			t.Fatalf("event %d at stream position %d after %d", i, ev.StreamPos, prev.StreamPos)
		}
		if got := prevEvents(t, ev); len(got) != 1 || got[0] != prev.EventID {
			t.Fatalf("event %d (%s) has prev_events %v, want [%s]", i, ev.Type, got, prev.EventID)
		}
		if ev.Depth != prev.Depth+1 {
			t.Fatalf("event %d at depth %d after %d", i, ev.Depth, prev.Depth)
		}
	}
	room := c.room(t, roomID)
	last := evs[len(evs)-1]
	if !slices.Equal(room.Extremities, []string{last.EventID}) || room.MaxDepth != last.Depth {
		t.Fatalf("room head %v at depth %d, want [%s] at %d", room.Extremities, room.MaxDepth, last.EventID, last.Depth)
	}
	return evs
}

// Sent events get strictly increasing stream positions and depths, each
// on top of the one before, and observers are told of them once each, in
// stream order.
func TestSendAppendsInStreamOrder(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		var mu sync.Mutex
		var observed []int64
		c.Observe(func(evs []*rooms.Event) {
			mu.Lock()
			defer mu.Unlock()
			for _, ev := range evs {
				observed = append(observed, ev.StreamPos)
			}
		})
		roomID := c.createRoom(t, "private_chat")
		var sent []*rooms.Event
		for i := range 10 {
			sent = append(sent, c.send(t, roomID, message(alice, fmt.Sprint("message ", i))))
		}
		for i := 1; i < len(sent); i++ {
			if sent[i].StreamPos <= sent[i-1].StreamPos {
				t.Fatalf("send %d got stream position %d after %d", i, sent[i].StreamPos, sent[i-1].StreamPos)
			}
		}
		evs := c.assertLinear(t, roomID)
		if last := evs[len(evs)-1]; last.EventID != sent[9].EventID {
			t.Fatalf("last stored event %s, want the last sent %s", last.EventID, sent[9].EventID)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(observed) != len(evs) || !slices.IsSorted(observed) || len(slices.Compact(slices.Clone(observed))) != len(observed) {
			t.Fatalf("observers saw positions %v for %d events", observed, len(evs))
		}
		for i, ev := range evs {
			if observed[i] != ev.StreamPos {
				t.Fatalf("observer saw position %d as event %d, stored %d", observed[i], i, ev.StreamPos)
			}
		}
	})
}

// A state event enters the current state, and one that replaces another
// records the replaced event's content, sender and ID (unsigned
// prev_content), as persisted.
func TestStateEventReplacesState(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		ctx := context.Background()
		roomID := c.createRoom(t, "private_chat")
		topicKey := storage.StateKey{Type: "m.room.topic"}
		first := c.send(t, roomID, stateProto(alice, "m.room.topic", "", map[string]string{"topic": "first"}))
		if first.PrevContent != nil || first.ReplacesState != nil {
			t.Fatalf("first topic claims to replace something: %v %v", first.PrevContent, first.ReplacesState)
		}
		msg := c.send(t, roomID, message(alice, "between"))
		second := c.send(t, roomID, stateProto(alice, "m.room.topic", "", map[string]string{"topic": "second"}))

		st, err := c.fresh().CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		if st[topicKey] != second.EventID {
			t.Fatalf("current topic %s, want %s", st[topicKey], second.EventID)
		}
		if _, ok := st[storage.StateKey{Type: "m.room.message"}]; ok {
			t.Fatal("a message entered the state")
		}
		stored, err := c.fresh().Event(ctx, second.EventID)
		if err != nil {
			t.Fatal(err)
		}
		if stored.PrevContent == nil || gjson.Get(*stored.PrevContent, "topic").String() != "first" ||
			stored.PrevSender == nil || *stored.PrevSender != alice ||
			stored.ReplacesState == nil || *stored.ReplacesState != first.EventID {
			t.Fatalf("stored replacement: prev_content %v, prev_sender %v, replaces %v", stored.PrevContent, stored.PrevSender, stored.ReplacesState)
		}
		// Snapshots: the message sits in the state the first topic made;
		// the state before the second topic holds the first.
		if msg.SnapshotBefore != first.SnapshotAfter || msg.SnapshotAfter != msg.SnapshotBefore {
			t.Fatalf("message snapshots %d→%d, first topic's after %d", msg.SnapshotBefore, msg.SnapshotAfter, first.SnapshotAfter)
		}
		before, err := c.fresh().StateAt(ctx, second.SnapshotBefore)
		if err != nil {
			t.Fatal(err)
		}
		if before[topicKey] != first.EventID {
			t.Fatalf("state before the second topic has topic %s", before[topicKey])
		}
	})
}

// A send the auth rules (or the size limit) refuse changes nothing: no
// event row, no stream position, the same current state and head.
func TestRefusedSendChangesNothing(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		ctx := context.Background()
		roomID := c.createRoom(t, "public_chat")
		c.join(t, roomID, bob)
		c.send(t, roomID, message(alice, "hello"))

		stateBefore, err := c.fresh().CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		roomBefore := c.room(t, roomID)
		posBefore, _ := storage.MaxStreamPos(ctx, c.db.Read())
		countBefore := len(c.timeline(t, roomID))

		const carol = "@carol:hearth.test"
		refused := []struct {
			what    string
			p       rooms.Proto
			errcode string
		}{
			{"a message from a non-member", message(carol, "let me in"), "M_FORBIDDEN"},
			{"power levels from a member without power", stateProto(bob, spec.MRoomPowerLevels, "", map[string]any{"users": map[string]int{bob: 100}}), "M_FORBIDDEN"},
			{"a name from a member below state_default", stateProto(bob, spec.MRoomName, "", map[string]string{"name": "bob's"}), "M_FORBIDDEN"},
			{"a join on behalf of someone else", stateProto(bob, spec.MRoomMember, carol, map[string]string{"membership": "join"}), "M_FORBIDDEN"},
			// gomatrixserverlib's builder refuses it (M_BAD_JSON) before
			// Hearth's own size check (M_TOO_LARGE) would: either is a refusal.
			{"an event over 64 KiB", message(alice, strings.Repeat("x", 70_000)), ""},
		}
		for _, r := range refused {
			evs, err := c.Send(ctx, roomID, r.p)
			var me *mxhttp.Error
			if !errors.As(err, &me) || (r.errcode != "" && me.ErrCode != r.errcode) || me.Status/100 != 4 || evs != nil {
				t.Fatalf("%s: %v, %d events; want %s", r.what, err, len(evs), r.errcode)
			}
		}
		// Several events in one send commit all or none.
		if _, err := c.Send(ctx, roomID, message(bob, "first of two"), message(carol, "second of two")); err == nil {
			t.Fatal("a send with a forbidden event succeeded")
		}

		stateAfter, err := c.fresh().CurrentState(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		if !maps.Equal(stateBefore, stateAfter) {
			t.Fatalf("current state changed:\nbefore %v\nafter  %v", stateBefore, stateAfter)
		}
		roomAfter := c.room(t, roomID)
		if !slices.Equal(roomBefore.Extremities, roomAfter.Extremities) || roomBefore.MaxDepth != roomAfter.MaxDepth ||
			roomBefore.CurrentSnapshot != roomAfter.CurrentSnapshot {
			t.Fatalf("room head changed: %+v → %+v", roomBefore, roomAfter)
		}
		if posAfter, _ := storage.MaxStreamPos(ctx, c.db.Read()); posAfter != posBefore {
			t.Fatalf("stream moved from %d to %d", posBefore, posAfter)
		}
		if n := len(c.timeline(t, roomID)); n != countBefore {
			t.Fatalf("%d events stored, had %d", n, countBefore)
		}
		if m, _, _ := c.MembershipOf(ctx, roomID, carol); m != "" {
			t.Fatalf("carol's membership became %q", m)
		}
		// The room still takes events, on top of the same head.
		ev := c.send(t, roomID, message(bob, "still here"))
		if got := prevEvents(t, ev.Event); !slices.Equal(got, roomBefore.Extremities) {
			t.Fatalf("next event's prev_events %v, want %v", got, roomBefore.Extremities)
		}
		if _, err := c.Send(ctx, "!nosuchroom:hearth.test", message(alice, "?")); !errors.As(err, new(*mxhttp.Error)) {
			t.Fatalf("send to an unknown room: %v", err)
		}
	})
}

// A send retried with the same transaction ID (same user, device and
// scope) returns the first event and stores nothing new; another device
// or scope with the same ID is a new send.
func TestTransactionIDsAreIdempotent(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		roomID := c.createRoom(t, "private_chat")
		withTxn := func(device, scope, txn, body string) rooms.Proto {
			p := message(alice, body)
			p.Device, p.TxnScope, p.TxnID = device, scope, txn
			return p
		}
		first := c.send(t, roomID, withTxn("PHONE", "send", "t1", "once"))
		n := len(c.timeline(t, roomID))
		again := c.send(t, roomID, withTxn("PHONE", "send", "t1", "a retry with another body"))
		if again.EventID != first.EventID || again.StreamPos != first.StreamPos {
			t.Fatalf("retry made %s, want %s", again.EventID, first.EventID)
		}
		// A core that remembers nothing finds it in the store.
		fromStore, err := c.fresh().Send(context.Background(), roomID, withTxn("PHONE", "send", "t1", "after a restart"))
		if err != nil || fromStore[0].EventID != first.EventID {
			t.Fatalf("retry after a restart: %v %v", fromStore, err)
		}
		if got := len(c.timeline(t, roomID)); got != n {
			t.Fatalf("retries stored %d events", got-n)
		}
		other := c.send(t, roomID, withTxn("LAPTOP", "send", "t1", "other device"))
		scoped := c.send(t, roomID, withTxn("PHONE", "redact", "t1", "other scope"))
		if other.EventID == first.EventID || scoped.EventID == first.EventID || other.EventID == scoped.EventID {
			t.Fatal("a different device or scope got the first event back")
		}
		// Concurrent retries of one new transaction make one event.
		var wg sync.WaitGroup
		ids := make([]string, 8)
		for i := range ids {
			wg.Go(func() {
				evs, err := c.Send(context.Background(), roomID, withTxn("PHONE", "send", "t2", fmt.Sprint("racer ", i)))
				if err == nil {
					ids[i] = evs[0].EventID
				}
			})
		}
		wg.Wait()
		for _, id := range ids {
			if id == "" || id != ids[0] {
				t.Fatalf("concurrent retries got %v", ids)
			}
		}
		if got := len(c.timeline(t, roomID)); got != n+3 {
			t.Fatalf("%d events after the racing retries, want %d", got, n+3)
		}
	})
}

// Concurrent sends to one room (committed in groups) keep the room's DAG
// one chain; a send the auth rules refuse among them fails alone.
func TestConcurrentSendsKeepLinearDAG(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		roomID := c.createRoom(t, "public_chat")
		c.join(t, roomID, bob)
		c.sendConcurrently(t, roomID, func(int) *rooms.Rooms { return c.Rooms }, func(s, i int) bool { return s == 0 && i%5 == 0 })
	})
}

// sendConcurrently has 6 senders send 15 messages each to roomID at once,
// sender s through core(s); where refused(s, i), a non-member's message is
// sent instead and must fail. The room's DAG must stay one chain holding
// exactly the messages whose sends returned.
func (c *core) sendConcurrently(t *testing.T, roomID string, core func(s int) *rooms.Rooms, refused func(s, i int) bool) {
	t.Helper()
	const senders, each = 6, 15
	var wg sync.WaitGroup
	var mu sync.Mutex
	sent := map[string]bool{}
	var failures []error
	want := 0
	for s := range senders {
		for i := range each {
			if !refused(s, i) {
				want++
			}
		}
		wg.Go(func() {
			r := core(s)
			for i := range each {
				sender := alice
				if s%2 == 1 {
					sender = bob
				}
				p := message(sender, fmt.Sprintf("%d/%d", s, i))
				refused := refused(s, i)
				if refused {
					p = message("@carol:hearth.test", "not a member")
				}
				evs, err := r.Send(context.Background(), roomID, p)
				mu.Lock()
				switch {
				case refused && err == nil:
					failures = append(failures, fmt.Errorf("a non-member's send %d succeeded", i))
				case !refused && err != nil:
					failures = append(failures, err)
				case !refused:
					sent[evs[0].EventID] = true
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(failures) > 0 {
		t.Fatal(failures)
	}
	var messages int
	for _, ev := range c.assertLinear(t, roomID) {
		if ev.Type == "m.room.message" {
			messages++
			if !sent[ev.EventID] {
				t.Fatalf("stored message %s no send returned", ev.EventID)
			}
			if ev.Sender == "@carol:hearth.test" {
				t.Fatal("a refused event was stored")
			}
		}
	}
	if messages != want || len(sent) != want {
		t.Fatalf("%d messages stored, %d sends returned, want %d", messages, len(sent), want)
	}
}

// A redaction marks its target redacted in the store, and the target is
// served in redacted form from then on.
func TestRedactionMarksTarget(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		ctx := context.Background()
		roomID := c.createRoom(t, "public_chat")
		c.join(t, roomID, bob)
		target := c.send(t, roomID, message(bob, "regrettable"))
		keep := c.send(t, roomID, message(bob, "fine"))
		// Cache the target, so the redaction must reach the cached copy too.
		if ev, err := c.Event(ctx, target.EventID); err != nil || gjson.GetBytes(ev.PDU.Content(), "body").String() != "regrettable" {
			t.Fatalf("target before redaction: %v", err)
		}
		content, _ := json.Marshal(map[string]string{"reason": "spam", "redacts": target.EventID})
		red := c.send(t, roomID, rooms.Proto{Sender: alice, Type: spec.MRoomRedaction, Redacts: target.EventID, Content: content})

		for name, r := range map[string]*rooms.Rooms{"same core": c.Rooms, "fresh core": c.fresh()} {
			ev, err := r.Event(ctx, target.EventID)
			if err != nil {
				t.Fatal(err)
			}
			if ev.RedactedBy == nil || *ev.RedactedBy != red.EventID {
				t.Fatalf("%s: target redacted_by %v, want %s", name, ev.RedactedBy, red.EventID)
			}
			if gjson.GetBytes(ev.PDU.Content(), "body").Exists() || ev.PDU.EventID() != target.EventID {
				t.Fatalf("%s: target still has its content: %s", name, ev.PDU.Content())
			}
			other, err := r.Event(ctx, keep.EventID)
			if err != nil || other.RedactedBy != nil || gjson.GetBytes(other.PDU.Content(), "body").String() != "fine" {
				t.Fatalf("%s: an unrelated event was touched: %v", name, err)
			}
		}
		row, err := storage.GetEvent(ctx, c.db.Read(), target.EventID)
		if err != nil || row.RedactedBy == nil || *row.RedactedBy != red.EventID {
			t.Fatalf("stored row: %v %v", row.RedactedBy, err)
		}
	})
}

// Membership changes move users in and out of the joined members and
// their joined rooms; a repeated join changes nothing.
func TestMembershipUpdatesJoinedMembers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		ctx := context.Background()
		roomID := c.createRoom(t, "private_chat")
		joined := func() []string {
			t.Helper()
			ms, err := storage.MembersOfRoom(ctx, c.db.Read(), roomID)
			if err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, m := range ms {
				if m.Membership == spec.Join {
					out = append(out, m.UserID)
				}
			}
			slices.Sort(out)
			return out
		}
		membership := func(user string) string {
			t.Helper()
			m, id, err := c.MembershipOf(ctx, roomID, user)
			if err != nil {
				t.Fatal(err)
			}
			st, _ := c.fresh().CurrentState(ctx, roomID)
			if id != st[storage.StateKey{Type: spec.MRoomMember, StateKey: user}] {
				t.Fatalf("membership event %s of %s is not the one in the current state", id, user)
			}
			return m
		}
		if got := joined(); !slices.Equal(got, []string{alice}) {
			t.Fatalf("after create: %v", got)
		}
		// The room is invite-only: bob cannot join uninvited.
		if _, err := c.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: bob, Target: bob, Membership: spec.Join}); err == nil {
			t.Fatal("bob joined an invite-only room uninvited")
		}
		if _, err := c.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: alice, Target: bob, Membership: spec.Invite}); err != nil {
			t.Fatal(err)
		}
		if m := membership(bob); m != spec.Invite || slices.Contains(joined(), bob) {
			t.Fatalf("invited bob: %q, joined %v", m, joined())
		}
		c.join(t, roomID, bob)
		if m := membership(bob); m != spec.Join || !slices.Equal(joined(), []string{alice, bob}) {
			t.Fatalf("after bob's join: %q, joined %v", m, joined())
		}
		if rs, err := c.JoinedRooms(ctx, bob); err != nil || !slices.Equal(rs, []string{roomID}) {
			t.Fatalf("bob's joined rooms: %v %v", rs, err)
		}
		n := len(c.timeline(t, roomID))
		if ev, err := c.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: bob, Target: bob, Membership: spec.Join}); err != nil || ev != nil {
			t.Fatalf("a repeated join: %v %v", ev, err)
		}
		if got := len(c.timeline(t, roomID)); got != n {
			t.Fatal("a repeated join stored an event")
		}
		if _, err := c.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: alice, Target: bob, Membership: spec.Ban, Reason: "enough"}); err != nil {
			t.Fatal(err)
		}
		if m := membership(bob); m != spec.Ban || !slices.Equal(joined(), []string{alice}) {
			t.Fatalf("after the ban: %q, joined %v", m, joined())
		}
		if rs, _ := c.JoinedRooms(ctx, bob); len(rs) != 0 {
			t.Fatalf("banned bob still has joined rooms %v", rs)
		}
		// Banned: neither a join nor a message gets in.
		if _, err := c.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: bob, Target: bob, Membership: spec.Join}); err == nil {
			t.Fatal("banned bob rejoined")
		}
		if _, err := c.Send(ctx, roomID, message(bob, "still here?")); err == nil {
			t.Fatal("banned bob sent a message")
		}
		if _, err := c.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: alice, Target: alice, Membership: spec.Leave}); err != nil {
			t.Fatal(err)
		}
		if got := joined(); len(got) != 0 {
			t.Fatalf("after everyone left: %v", got)
		}
	})
}

// Two room cores over one store (two processes) sending to one room at
// once: each builds its batch before its transaction on the head it read,
// and the other may have moved the head by then; the events must still
// form one chain, every send stored once.
func TestSendsFromTwoCoresKeepLinearDAG(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		other := c.fresh()
		roomID := c.createRoom(t, "public_chat")
		c.join(t, roomID, bob)
		c.sendConcurrently(t, roomID, func(s int) *rooms.Rooms {
			if s%2 == 1 {
				return other
			}
			return c.Rooms
		}, func(int, int) bool { return false })
	})
}

// TestBigStateReloads: a room whose state outgrows one multi-row insert
// (a full copy of it every maxChainLen changes) reads back from the
// database, uncached, with every key.
func TestBigStateReloads(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		ctx := context.Background()
		roomID := c.createRoom(t, "private_chat")
		const keys = 700
		var last *rooms.Event
		for i := range keys {
			last = c.send(t, roomID, stateProto(alice, "org.example.k", fmt.Sprint(i), map[string]int{"v": i}))
		}
		st, err := c.fresh().StateAt(ctx, last.SnapshotAfter)
		if err != nil {
			t.Fatal(err)
		}
		for i := range keys {
			if _, ok := st[storage.StateKey{Type: "org.example.k", StateKey: fmt.Sprint(i)}]; !ok {
				t.Fatalf("key %d missing from the reloaded state of %d entries", i, len(st))
			}
		}
		if st[storage.StateKey{Type: "org.example.k", StateKey: fmt.Sprint(keys - 1)}] != last.EventID {
			t.Fatal("the last key names another event")
		}
	})
}

// ServersInRoom keeps each room's servers with the state snapshot they
// were read at: a membership change committed by another core on the
// same store (another process) is seen by the next call.
func TestServersInRoomFollowsMembership(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		c := newCore(t, b)
		ctx := context.Background()
		roomID := c.createRoom(t, "public_chat")
		servers := func() []spec.ServerName {
			t.Helper()
			s, err := c.ServersInRoom(ctx, roomID)
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
		if got := servers(); !slices.Equal(got, []spec.ServerName{"hearth.test"}) {
			t.Fatalf("servers of a new room: %v", got)
		}
		servers() // from the cache
		other := c.fresh()
		if _, err := other.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: alice, Target: alice, Membership: spec.Leave}); err != nil {
			t.Fatal(err)
		}
		if got := servers(); len(got) != 0 {
			t.Fatalf("servers after the only member left through another core: %v", got)
		}
		if _, err := other.SetMembership(ctx, roomID, rooms.ChangeMembership{Sender: bob, Target: bob, Membership: spec.Join}); err != nil {
			t.Fatal(err)
		}
		if got := servers(); !slices.Equal(got, []spec.ServerName{"hearth.test"}) {
			t.Fatalf("servers after a join through another core: %v", got)
		}
	})
}
