package syncstream

import (
	"sync"
	"testing"
	"time"
)

// orderedPair is two processes' typing state whose changes a shared
// sequence orders, as the database does for processes sharing it: each
// change is applied in both, in one order, at one position.
type orderedPair struct {
	mu    sync.Mutex
	next  int64
	procs [2]*Typing
	pos   [2][]int64 // positions each one's changed callback saw
}

func newOrderedPair() *orderedPair {
	o := &orderedPair{next: 1000}
	for i := range o.procs {
		o.procs[i] = NewTyping(func(_ string, pos int64) { o.pos[i] = append(o.pos[i], pos) })
		o.procs[i].SetOrder(func(c TypingChange) error {
			o.mu.Lock()
			defer o.mu.Unlock()
			o.next++
			for j, p := range o.procs {
				d := c
				d.Pos, d.Own = o.next, j == i
				p.Apply(d)
			}
			return nil
		})
	}
	return o
}

// Changes made in either process take the same positions in both, and a
// typing user set through one process is ended at its timeout by that
// process for both.
func TestTypingOrderedAcrossProcesses(t *testing.T) {
	o := newOrderedPair()
	defer o.procs[0].Close()
	defer o.procs[1].Close()
	o.procs[0].Set("!r", "@a:x", true, time.Minute)
	o.procs[1].Set("!r", "@b:x", true, 50*time.Millisecond)
	o.procs[1].Set("!r", "@b:x", true, 50*time.Millisecond) // extends: no change
	o.procs[0].Set("!r", "@a:x", false, 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		users, _ := o.procs[0].Users("!r")
		if len(users) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	want := []int64{1001, 1002, 1004, 1005}
	for i := range o.pos {
		if len(o.pos[i]) != len(want) {
			t.Fatalf("process %d saw changes at %v, want %v", i, o.pos[i], want)
		}
		for k := range want {
			if o.pos[i][k] != want[k] {
				t.Fatalf("process %d saw changes at %v, want %v", i, o.pos[i], want)
			}
		}
	}
	for i, p := range o.procs {
		if users, pos := p.Users("!r"); len(users) != 0 || pos != 1005 {
			t.Fatalf("process %d: typing %v at %d after the expiry, want nobody at 1005", i, users, pos)
		}
	}
}

// Alone, positions come from the clock: later than the wall clock in
// milliseconds and increasing, so they survive a restart.
func TestTypingClockPositions(t *testing.T) {
	var got []int64
	ty := NewTyping(func(_ string, pos int64) { got = append(got, pos) })
	defer ty.Close()
	start := time.Now().UnixMilli()
	ty.Set("!r", "@a:x", true, time.Minute)
	ty.Set("!r", "@a:x", false, 0)
	ty.Set("!r", "@a:x", true, time.Minute)
	if len(got) != 3 || got[0] < start || got[1] <= got[0] || got[2] <= got[1] {
		t.Fatalf("positions %v, want increasing from %d", got, start)
	}
	// A change ordered elsewhere at an earlier position than this clock's
	// still comes after everything handed out here.
	ty.Apply(TypingChange{Room: "!r", User: "@b:x", Typing: true, Timeout: time.Minute, Pos: got[0]})
	if got[3] <= got[2] {
		t.Fatalf("a late ordered change took %d, not after %d", got[3], got[2])
	}
}

// Presence changes ordered across processes: a change both processes
// ordered with the same content (two syncs of one user starting at once)
// takes one position; others take theirs everywhere.
func TestPresenceOrderedAcrossProcesses(t *testing.T) {
	var mu sync.Mutex
	var next int64 = 500
	var procs [2]*Presence
	var seen [2][]int64
	for i := range procs {
		procs[i] = NewPresence(func(c PresenceChange) { seen[i] = append(seen[i], c.State.Pos) })
		procs[i].SetOrder(func(c PresenceChange) error {
			mu.Lock()
			defer mu.Unlock()
			next++
			for j, p := range procs {
				d := c
				d.State.Pos, d.Own = next, i == j
				p.Apply(d)
			}
			return nil
		})
	}
	defer procs[0].Close()
	defer procs[1].Close()
	procs[0].Set("@a:x", "online", nil, true)
	procs[1].Set("@a:x", "online", nil, true) // already online everywhere
	msg := "away"
	procs[1].Set("@a:x", "unavailable", &msg, false)
	for i, p := range procs {
		st := p.Get("@a:x")
		if st.Presence != "unavailable" || st.StatusMsg == nil || *st.StatusMsg != "away" || st.Pos != 502 {
			t.Fatalf("process %d: %+v, want unavailable, away, at 502", i, st)
		}
		if len(seen[i]) != 2 || seen[i][0] != 501 || seen[i][1] != 502 {
			t.Fatalf("process %d saw changes at %v, want [501 502]", i, seen[i])
		}
	}
}
