package syncstream

import (
	"sync"
	"time"
)

// timers runs functions after a delay, as time.AfterFunc does, until it is
// closed. Presence and typing expire through them, and their callbacks
// reach the database and federation: after close no callback starts, and
// close waits for those already running, so nothing of a stopped server
// runs on (against its closed database) minutes later.
type timers struct {
	mu      sync.Mutex
	closed  bool
	running sync.WaitGroup
}

// after calls f after d unless the timers are closed by then.
func (ts *timers) after(d time.Duration, f func()) *time.Timer {
	return time.AfterFunc(d, func() {
		ts.mu.Lock()
		if ts.closed {
			ts.mu.Unlock()
			return
		}
		ts.running.Add(1)
		ts.mu.Unlock()
		defer ts.running.Done()
		f()
	})
}

// close stops every later callback and waits for the running ones.
func (ts *timers) close() {
	ts.mu.Lock()
	ts.closed = true
	ts.mu.Unlock()
	ts.running.Wait()
}
