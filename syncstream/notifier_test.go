package syncstream

import (
	"context"
	"fmt"
	"testing"
)

func members(n int) func(context.Context, string) ([]string, error) {
	return func(context.Context, string) ([]string, error) {
		ids := make([]string, n)
		for i := range ids {
			ids[i] = fmt.Sprintf("@u%d:x", i)
		}
		return ids, nil
	}
}

func woken(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestRoomEventWakesMembersOnly: an event wakes the waiting members of its
// room, a later wait from before the event returns at once, others sleep,
// and membership changes move users in and out of the room.
func TestRoomEventWakesMembersOnly(t *testing.T) {
	ctx := context.Background()
	n := NewNotifier(Position{Events: 10}, members(3)) // @u0..@u2
	since := n.Current()
	member, _, cancelMember := n.Wait("@u1:x", "D", since)
	defer cancelMember()
	outsider, _, cancelOutsider := n.Wait("@other:x", "D", since)
	defer cancelOutsider()
	n.RoomEvent(ctx, "!r:x", 11, "", "")
	if !woken(member) || woken(outsider) {
		t.Fatalf("member woken %v, outsider woken %v; want true, false", woken(member), woken(outsider))
	}
	if _, hasNew, cancel := n.Wait("@u2:x", "D", since); !hasNew {
		cancel()
		t.Fatal("a member waiting from before the event is not told it is there")
	}
	if _, hasNew, cancel := n.Wait("@other:x", "D", since); hasNew {
		cancel()
		t.Fatal("an outsider is told of an event in a room it is not in")
	}
	// @other joins: woken by its own membership; later events concern it.
	ch, _, cancel := n.Wait("@other:x", "D", since)
	n.RoomEvent(ctx, "!r:x", 12, "@other:x", "join")
	if !woken(ch) {
		t.Fatal("the joining user is not woken")
	}
	cancel()
	after := n.Current()
	ch, _, cancel = n.Wait("@other:x", "D", after)
	n.RoomEvent(ctx, "!r:x", 13, "", "")
	if !woken(ch) {
		t.Fatal("a new member is not woken by the room's events")
	}
	cancel()
	// @u0 leaves: woken by the leave, not by what follows.
	n.RoomEvent(ctx, "!r:x", 14, "@u0:x", "leave")
	after = n.Current()
	ch, _, cancel = n.Wait("@u0:x", "D", after)
	defer cancel()
	n.RoomEvent(ctx, "!r:x", 15, "", "")
	if woken(ch) {
		t.Fatal("a user who left is woken by the room's events")
	}
	if got := n.Current().Events; got != 15 {
		t.Fatalf("current events position %d, want 15", got)
	}
}

// BenchmarkRoomEvent is one event in a room of 1,000 local members of whom
// 10 are long-polling: the cost must follow the waiting users, not the
// members.
func BenchmarkRoomEvent(b *testing.B) {
	ctx := context.Background()
	n := NewNotifier(Position{}, members(1000))
	n.RoomEvent(ctx, "!r:x", 1, "", "")
	var cancels []func()
	wait := func(i int) {
		_, _, cancel := n.Wait(fmt.Sprintf("@u%d:x", i), "D", n.Current())
		cancels = append(cancels, cancel)
	}
	for i := range 10 {
		wait(i)
	}
	b.ReportAllocs()
	pos := int64(1)
	for b.Loop() {
		pos++
		n.RoomEvent(ctx, "!r:x", pos, "", "")
		b.StopTimer()
		for i := range 10 {
			wait(i)
		}
		b.StartTimer()
	}
	for _, c := range cancels {
		c()
	}
}
