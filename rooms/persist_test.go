package rooms

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/serverkey"
	"github.com/hearth-matrix/hearth/storage"
)

// roadFixture is a room on a real SQLite store, with a remote server whose
// events the test builds and hands to persist directly (their signatures
// are checked before the road, in ReceivePDU).
type roadFixture struct {
	t         *testing.T
	r         *Rooms
	roomID    string
	remoteKey serverkey.Key
	mu        sync.Mutex
	observed  []string
}

const roadAlice, roadBob = "@alice:a.test", "@bob:b.test"

func newRoadFixture(t *testing.T) *roadFixture {
	t.Helper()
	return newRoadFixtureWith(t, CreateRequest{Creator: roadAlice, Preset: "public_chat"})
}

// newRoadFixtureWith is newRoadFixture with the room req creates.
func newRoadFixtureWith(t *testing.T, req CreateRequest) *roadFixture {
	t.Helper()
	ctx := context.Background()
	db, err := storage.Open(ctx, filepath.Join(t.TempDir(), "hearth.db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	remoteKey, err := serverkey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	f := &roadFixture{t: t, r: New(db, "a.test", key, slog.New(slog.NewTextHandler(io.Discard, nil))), remoteKey: remoteKey}
	f.r.Observe(func(evs []*Event) {
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, ev := range evs {
			f.observed = append(f.observed, ev.EventID)
		}
	})
	if f.roomID, err = f.r.Create(ctx, req); err != nil {
		t.Fatal(err)
	}
	return f
}

// remote builds an event of b.test on prevs, its auth events chosen from
// the state after the last of them.
func (f *roadFixture) remote(sender, typ string, stateKey *string, content any, prevs ...*Event) gomatrixserverlib.PDU {
	f.t.Helper()
	ctx := context.Background()
	ver, err := f.r.Version(ctx, f.roomID)
	if err != nil {
		f.t.Fatal(err)
	}
	c, _ := json.Marshal(content)
	var prevIDs []string
	var depth int64
	for _, p := range prevs {
		prevIDs = append(prevIDs, p.EventID)
		depth = max(depth, p.Depth)
	}
	st, err := f.r.StateAt(ctx, prevs[len(prevs)-1].SnapshotAfter)
	if err != nil {
		f.t.Fatal(err)
	}
	proto := &gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: f.roomID, Type: typ, StateKey: stateKey, Content: c,
		PrevEvents: prevIDs, AuthEvents: []string{}, Depth: depth + 1, Version: ver}
	provider, err := f.r.authProvider(ctx, f.r.db.Read(), st, proto, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	b := ver.NewEventBuilderFromProtoEvent(proto)
	if err := b.AddAuthEvents(provider); err != nil {
		f.t.Fatal(err)
	}
	pdu, err := b.Build(time.Now(), "b.test", f.remoteKey.ID, f.remoteKey.Private)
	if err != nil {
		f.t.Fatal(err)
	}
	return pdu
}

// arrive persists pdu as arriving a, on its prev events.
func (f *roadFixture) arrive(a arrival, pdu gomatrixserverlib.PDU, prevs ...*Event) *Event {
	f.t.Helper()
	in := incoming{arrival: a, pdu: pdu, prevs: map[string]*Event{}}
	for _, p := range prevs {
		in.prevs[p.EventID] = p
	}
	ev, err := f.r.persist(context.Background(), in)
	if err != nil {
		f.t.Fatal(err)
	}
	return ev
}

func (f *roadFixture) room() storage.Room {
	f.t.Helper()
	room, err := storage.GetRoom(context.Background(), f.r.db.Read(), f.roomID)
	if err != nil {
		f.t.Fatal(err)
	}
	return room
}

func (f *roadFixture) stored(id string) *Event {
	f.t.Helper()
	ev, err := f.r.Event(context.Background(), id)
	if err != nil {
		f.t.Fatal(err)
	}
	return ev
}

func (f *roadFixture) wasObserved(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Contains(f.observed, id)
}

// A local, a live remote and a backfilled event take the same steps on
// the one road: each gets a stream position, the state after its prev
// events as its state before, its relation fields; only the arrival
// decides where its stream position goes and whether observers hear of it.
func TestOneRoadSameStepsForEveryArrival(t *testing.T) {
	f := newRoadFixture(t)
	ctx := context.Background()
	bob := roadBob
	head := f.stored(f.room().Extremities[0])

	join := f.arrive(arriveLive, f.remote(bob, spec.MRoomMember, &bob, map[string]any{"membership": spec.Join}, head), head)
	reply := map[string]any{"msgtype": "m.text", "body": "reply", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": head.EventID}}
	live := f.arrive(arriveLive, f.remote(bob, "m.room.message", nil, reply, join), join)
	c, _ := json.Marshal(reply)
	local, err := f.r.Send(ctx, f.roomID, Proto{Sender: roadAlice, Type: "m.room.message", Content: c})
	if err != nil {
		t.Fatal(err)
	}
	// History: another message bob sent on his join, which we never had.
	reply["body"] = "an older reply"
	backfilled := f.arrive(arriveBackfill, f.remote(bob, "m.room.message", nil, reply, join), join)

	for _, tc := range []struct {
		name      string
		ev, prev  *Event
		observed  bool
		belowSync bool
	}{
		{"live", f.stored(live.EventID), join, true, false},
		{"local", f.stored(local[0].EventID), live, true, false},
		{"backfill", f.stored(backfilled.EventID), join, false, true},
	} {
		ev := tc.ev
		if ev.StreamPos == 0 || (ev.StreamPos < 0) != tc.belowSync {
			t.Errorf("%s: stream position %d (below sync: %v)", tc.name, ev.StreamPos, tc.belowSync)
		}
		if ev.SnapshotBefore != tc.prev.SnapshotAfter || ev.SnapshotAfter != ev.SnapshotBefore {
			t.Errorf("%s: snapshots %d→%d, want the state after its prev event (%d)", tc.name, ev.SnapshotBefore, ev.SnapshotAfter, tc.prev.SnapshotAfter)
		}
		if ev.RelatesTo == nil || *ev.RelatesTo != head.EventID || ev.RelType == nil || *ev.RelType != "m.thread" {
			t.Errorf("%s: relation %v %v, want an m.thread of %s", tc.name, ev.RelatesTo, ev.RelType, head.EventID)
		}
		if ev.Outlier || ev.Rejected || ev.SoftFailed {
			t.Errorf("%s: outlier %v rejected %v soft-failed %v", tc.name, ev.Outlier, ev.Rejected, ev.SoftFailed)
		}
		if f.wasObserved(ev.EventID) != tc.observed {
			t.Errorf("%s: observed %v, want %v", tc.name, !tc.observed, tc.observed)
		}
	}
	// The join's state after it holds the join, with its replaced state.
	st, err := f.r.StateAt(ctx, join.SnapshotAfter)
	if err != nil {
		t.Fatal(err)
	}
	if st[storage.StateKey{Type: spec.MRoomMember, StateKey: bob}] != join.EventID {
		t.Errorf("the state after bob's join lacks it: %v", st)
	}
	// History moves neither the head nor current state.
	if room := f.room(); !slices.Equal(room.Extremities, []string{local[0].EventID}) {
		t.Errorf("extremities %v after backfill, want the local event", room.Extremities)
	}
}

// A rejected or soft-failed event is stored, yet changes neither current
// state nor the forward extremities (server-server API, Checks performed
// on receipt of a PDU: rejected events are not used as state, soft-failed
// ones are not extremities or current state).
func TestOneRoadRejectedAndSoftFailedLeaveCurrentState(t *testing.T) {
	f := newRoadFixture(t)
	ctx := context.Background()
	bob := roadBob
	head := f.stored(f.room().Extremities[0])
	join := f.arrive(arriveLive, f.remote(bob, spec.MRoomMember, &bob, map[string]any{"membership": spec.Join}, head), head)

	// Bob has power 0; the public_chat preset wants 50 for state.
	empty := ""
	topic := f.arrive(arriveLive, f.remote(bob, spec.MRoomTopic, &empty, map[string]any{"topic": "bob's"}, join), join)
	// Alice bans bob; bob, not yet knowing, changes his name on his join:
	// the state before it allows it, the current state does not.
	ban, err := f.r.SetMembership(ctx, f.roomID, ChangeMembership{Sender: roadAlice, Target: bob, Membership: spec.Ban})
	if err != nil {
		t.Fatal(err)
	}
	before := f.room()
	rename := f.arrive(arriveLive, f.remote(bob, spec.MRoomMember, &bob, map[string]any{"membership": spec.Join, "displayname": "Bob"}, join), join)

	if ev := f.stored(topic.EventID); !ev.Rejected || ev.SnapshotAfter != ev.SnapshotBefore {
		t.Errorf("bob's topic: rejected %v, snapshots %d→%d; want rejected with no state after", ev.Rejected, ev.SnapshotBefore, ev.SnapshotAfter)
	}
	if ev := f.stored(rename.EventID); ev.Rejected || !ev.SoftFailed {
		t.Errorf("bob's rename: rejected %v, soft-failed %v; want soft-failed only", ev.Rejected, ev.SoftFailed)
	}
	after := f.room()
	if !slices.Equal(after.Extremities, before.Extremities) || after.CurrentSnapshot != before.CurrentSnapshot {
		t.Errorf("head moved: %v/%d → %v/%d", before.Extremities, before.CurrentSnapshot, after.Extremities, after.CurrentSnapshot)
	}
	cur, err := f.r.CurrentState(ctx, f.roomID)
	if err != nil {
		t.Fatal(err)
	}
	if id := cur[storage.StateKey{Type: spec.MRoomMember, StateKey: bob}]; id != ban.EventID {
		t.Errorf("bob's current membership is %s, want the ban %s", id, ban.EventID)
	}
	if _, ok := cur[storage.StateKey{Type: spec.MRoomTopic}]; ok {
		t.Errorf("the rejected topic is in current state")
	}
	m, id, err := storage.CurrentMembership(ctx, f.r.db.Read(), f.roomID, bob)
	if err != nil || m != spec.Ban || id != ban.EventID {
		t.Errorf("current_state holds %q %s (%v), want the ban", m, id, err)
	}
}
