package syncstream

import (
	"sync"
	"time"
)

// PresenceState is one user's presence (client-server API, Presence).
type PresenceState struct {
	Presence        string // online, unavailable, offline
	StatusMsg       *string
	LastActive      time.Time
	CurrentlyActive bool
	Pos             int64 // presence stream position of the last change
}

// Presence keeps users' presence in memory. A user is online while any of
// their devices syncs or says so; a user silent for idleAfter becomes
// unavailable, and offline once no sync has been seen for offlineAfter.
type Presence struct {
	mu      sync.Mutex
	pos     int64
	users   map[string]*PresenceState
	syncing map[string]int         // open syncs per user
	offline map[string]*time.Timer // pending "went offline" per user
	changed func(userID string, pos int64)
	now     func() time.Time
	timers  timers
}

const (
	presenceIdleAfter    = 5 * time.Minute
	presenceOfflineAfter = 2 * time.Minute // after the last sync ended
)

// NewPresence returns empty presence; changed is called after each change.
func NewPresence(changed func(userID string, pos int64)) *Presence {
	return &Presence{users: map[string]*PresenceState{}, syncing: map[string]int{}, offline: map[string]*time.Timer{}, changed: changed, now: time.Now}
}

// Set records a presence change, from PUT /presence or sync's set_presence.
// A status message of nil keeps the current one. Repeating the same state
// refreshes last_active without a new position unless it changed.
func (p *Presence) Set(userID, presence string, statusMsg *string, active bool) {
	p.mu.Lock()
	st := p.users[userID]
	if st == nil {
		st = &PresenceState{Presence: "offline"}
		p.users[userID] = st
	}
	changed := st.Presence != presence || (statusMsg != nil && (st.StatusMsg == nil || *st.StatusMsg != *statusMsg))
	if active && !st.CurrentlyActive {
		changed = true
	}
	st.Presence = presence
	if statusMsg != nil {
		msg := *statusMsg
		st.StatusMsg = &msg
	}
	if active {
		st.LastActive = p.now()
	}
	st.CurrentlyActive = active && presence == "online"
	if !changed {
		p.mu.Unlock()
		return
	}
	p.pos++
	st.Pos = p.pos
	pos := p.pos
	p.mu.Unlock()
	p.changed(userID, pos)
}

// Get returns a user's presence (offline if never seen), with unavailable
// applied to users idle for long.
func (p *Presence) Get(userID string) PresenceState {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.users[userID]
	if st == nil {
		return PresenceState{Presence: "offline"}
	}
	out := *st
	if out.Presence == "online" && !out.LastActive.IsZero() && p.now().Sub(out.LastActive) > presenceIdleAfter {
		out.Presence, out.CurrentlyActive = "unavailable", false
	}
	return out
}

// Current is the newest presence position.
func (p *Presence) Current() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos
}

// Syncing records that one of the user's devices is syncing with
// set_presence (online unless said otherwise). The returned function ends
// it; when no device has synced for presenceOfflineAfter, the user goes
// offline.
func (p *Presence) Syncing(userID, presence string) (done func()) {
	p.mu.Lock()
	p.syncing[userID]++
	if t := p.offline[userID]; t != nil {
		t.Stop()
		delete(p.offline, userID)
	}
	p.mu.Unlock()
	if presence != "offline" {
		p.Set(userID, presence, nil, presence == "online")
	}
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.syncing[userID]--
		if p.syncing[userID] > 0 {
			return
		}
		delete(p.syncing, userID)
		p.offline[userID] = p.timers.after(presenceOfflineAfter, func() {
			p.mu.Lock()
			idle := p.syncing[userID] == 0
			delete(p.offline, userID)
			p.mu.Unlock()
			if idle {
				p.Set(userID, "offline", nil, false)
			}
		})
	}
}

// Close stops the pending "went offline" changes, for a server shutting
// down; it waits for one that is being made.
func (p *Presence) Close() { p.timers.close() }

// ChangedSince returns the users whose presence changed in (from, to].
func (p *Presence) ChangedSince(from, to int64) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for u, st := range p.users {
		if st.Pos > from && st.Pos <= to {
			out = append(out, u)
		}
	}
	return out
}

// ActiveSyncing reports whether one of the user's devices is syncing right
// now and the user is online (push_hold_seconds holds pushes then).
func (p *Presence) ActiveSyncing(userID string) bool {
	p.mu.Lock()
	syncing := p.syncing[userID] > 0
	p.mu.Unlock()
	return syncing && p.Get(userID).Presence == "online"
}
