package syncstream

import (
	"testing"
	"time"
)

// A user whose long poll was just answered is still "actively syncing"
// until the grace passes: the event that ended the poll is the one whose
// push the hold must catch (TestPushHold in clientapi).
func TestActiveSyncingBetweenPolls(t *testing.T) {
	p := NewPresence(func(PresenceChange) {})
	defer p.Close()
	now := time.Now()
	p.now = func() time.Time { return now }
	const u = "@bob:hearth.test"
	if p.ActiveSyncing(u) {
		t.Fatal("a user who never synced is active")
	}
	done := p.Syncing(u, "online")
	if !p.ActiveSyncing(u) {
		t.Fatal("a user with an open sync is not active")
	}
	done()
	if !p.ActiveSyncing(u) {
		t.Fatal("a user between two polls is not active")
	}
	now = now.Add(activeSyncGrace + time.Millisecond)
	if p.ActiveSyncing(u) {
		t.Fatal("a user whose last sync ended more than the grace ago is active")
	}
	done = p.Syncing(u, "offline")
	defer done()
	p.Set(u, "offline", nil, false)
	if p.ActiveSyncing(u) {
		t.Fatal("a user syncing with set_presence=offline is active")
	}
}
