package syncstream

import (
	"sync/atomic"
	"testing"
	"time"
)

// A stopped server's presence and typing expiries must not run on: after
// close no callback starts, and close waits for one already running.
func TestTimersCloseStopsAndWaits(t *testing.T) {
	var ts timers
	started, release := make(chan struct{}), make(chan struct{})
	var finished atomic.Bool
	ts.after(0, func() {
		close(started)
		<-release
		finished.Store(true)
	})
	<-started

	closed := make(chan struct{})
	go func() { ts.close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("close returned while a callback was running")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	<-closed
	if !finished.Load() {
		t.Fatal("close returned before the running callback finished")
	}
	// A timer that fires after close (whenever it was set) does nothing.
	var late atomic.Bool
	ts.after(0, func() { late.Store(true) })
	time.Sleep(100 * time.Millisecond)
	if late.Load() {
		t.Fatal("a callback ran after close")
	}
}
