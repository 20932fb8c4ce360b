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
	clock   clock
	users   map[string]*PresenceState
	syncing map[string]int         // open syncs per user
	ended   map[string]time.Time   // when a user's last open sync ended
	offline map[string]*time.Timer // pending "went offline" per user
	changed func(PresenceChange)
	now     func() time.Time
	timers  timers
	// order, when set, sequences the changes made here with the other
	// processes' ones, as Typing's does.
	order func(PresenceChange) error
}

// PresenceChange is one user's new presence (State.Pos its position, 0
// before it is ordered); Own says it was made in this process.
type PresenceChange struct {
	User  string
	State PresenceState
	Own   bool
}

const (
	presenceIdleAfter    = 5 * time.Minute
	presenceOfflineAfter = 2 * time.Minute // after the last sync ended
	// activeSyncGrace keeps a user "actively syncing" between two long
	// polls: the event that ends one poll is the one whose push decides.
	activeSyncGrace = 5 * time.Second
)

// NewPresence returns empty presence; changed is called after each change.
func NewPresence(changed func(PresenceChange)) *Presence {
	return &Presence{users: map[string]*PresenceState{}, syncing: map[string]int{}, ended: map[string]time.Time{}, offline: map[string]*time.Timer{}, changed: changed, now: time.Now}
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
	next := *st
	next.Presence = presence
	if statusMsg != nil {
		msg := *statusMsg
		next.StatusMsg = &msg
	}
	if active {
		next.LastActive = p.now()
		st.LastActive = next.LastActive
	}
	next.CurrentlyActive = active && presence == "online"
	if !changed {
		*st = next
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	c := PresenceChange{User: userID, State: next, Own: true}
	c.State.Pos = 0
	if p.order != nil && p.order(c) == nil {
		return
	}
	p.Apply(c)
}

// SetOrder makes every change go through order, which must hand it back
// to Apply with its position and Own set (call it before serving). When
// order fails, the change is applied here alone.
func (p *Presence) SetOrder(order func(PresenceChange) error) { p.order = order }

// Apply records a change, ordered (State.Pos set) or not. An ordered
// change that changes nothing here (two processes said the same) takes no
// position.
func (p *Presence) Apply(c PresenceChange) {
	p.mu.Lock()
	st := c.State
	if st.StatusMsg != nil {
		msg := *st.StatusMsg
		st.StatusMsg = &msg
	}
	if cur := p.users[c.User]; cur != nil && c.State.Pos > 0 && cur.Presence == st.Presence &&
		cur.CurrentlyActive == st.CurrentlyActive && (st.StatusMsg == nil) == (cur.StatusMsg == nil) &&
		(st.StatusMsg == nil || *st.StatusMsg == *cur.StatusMsg) {
		cur.LastActive = later(cur.LastActive, st.LastActive)
		p.clock.last = max(p.clock.last, c.State.Pos)
		p.mu.Unlock()
		return
	}
	if c.State.Pos > 0 {
		st.Pos = p.clock.remote(c.State.Pos)
	} else {
		st.Pos = p.clock.local(p.now())
	}
	p.users[c.User] = &st
	c.State = st
	p.mu.Unlock()
	p.changed(c)
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
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
		p.ended[userID] = p.now()
		p.offline[userID] = p.timers.after(presenceOfflineAfter, func() {
			p.mu.Lock()
			idle := p.syncing[userID] == 0
			delete(p.offline, userID)
			if idle {
				delete(p.ended, userID)
			}
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
// now, or ended a sync within activeSyncGrace, and the user is online
// (push_hold_seconds holds pushes then).
func (p *Presence) ActiveSyncing(userID string) bool {
	p.mu.Lock()
	syncing := p.syncing[userID] > 0
	if ended, ok := p.ended[userID]; ok && !syncing {
		syncing = p.now().Sub(ended) < activeSyncGrace
	}
	p.mu.Unlock()
	return syncing && p.Get(userID).Presence == "online"
}
