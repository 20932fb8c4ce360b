package syncstream

import (
	"sort"
	"sync"
	"time"
)

// Typing is who is typing in each room (client-server API, Typing
// Notifications). It lives in memory only: typing state is seconds long and
// not worth a write. Every change takes the next typing position: from the
// process's clock, or, with several processes on one database, from the
// order the database gives every process's changes (SetOrder).
type Typing struct {
	mu      sync.Mutex
	clock   clock
	now     func() time.Time
	rooms   map[string]*roomTyping
	changed func(roomID string, pos int64) // wakes the room's users
	timers  timers
	// order, when set, sequences the changes made here with the other
	// processes' ones: a change is applied when it comes back through
	// Apply, with its position, in the same order in every process.
	order func(TypingChange) error
}

// TypingChange is one Set, or the expiry of one, as processes sharing a
// database order it. Pos is its position (0 before it is ordered); Own says
// it was made in this process.
type TypingChange struct {
	Room    string
	User    string
	Typing  bool
	Timeout time.Duration
	Pos     int64
	Own     bool
}

// typingGrace is how much longer a process keeps a user typing whom
// another process set typing: that process ends it at the timeout, for
// every process; this expiry is for when it cannot (it died).
const typingGrace = 5 * time.Second

type roomTyping struct {
	users   map[string]*typist
	changed int64 // position of the last change
}

type typist struct {
	timer *time.Timer
	own   bool // set typing through this process, which ends it
}

// NewTyping returns empty typing state; changed is called after each change.
func NewTyping(changed func(roomID string, pos int64)) *Typing {
	return &Typing{rooms: map[string]*roomTyping{}, changed: changed, now: time.Now}
}

// SetOrder makes every change go through order, which must hand it back
// to Apply with its position and Own set (call it before serving). When
// order fails, the change is applied here alone.
func (t *Typing) SetOrder(order func(TypingChange) error) { t.order = order }

// Set marks a user typing for timeout, or not typing.
func (t *Typing) Set(roomID, userID string, typing bool, timeout time.Duration) {
	c := TypingChange{Room: roomID, User: userID, Typing: typing, Timeout: timeout, Own: true}
	if t.order != nil && t.order(c) == nil {
		return
	}
	t.Apply(c)
}

// Apply applies a change, ordered (Pos set) or not.
func (t *Typing) Apply(c TypingChange) {
	t.mu.Lock()
	rt := t.rooms[c.Room]
	if rt == nil {
		rt = &roomTyping{users: map[string]*typist{}}
		t.rooms[c.Room] = rt
	}
	old, was := rt.users[c.User]
	if was {
		old.timer.Stop()
		delete(rt.users, c.User)
	}
	if c.Typing {
		ty := &typist{own: c.Own}
		timeout := c.Timeout
		if !c.Own {
			timeout += typingGrace
		}
		ty.timer = t.timers.after(timeout, func() { t.expire(c.Room, c.User, ty) })
		rt.users[c.User] = ty
	}
	if was == c.Typing {
		// Still typing (the timer was extended) or still not: nothing to
		// tell anyone.
		t.clock.last = max(t.clock.last, c.Pos)
		t.mu.Unlock()
		return
	}
	pos := t.nextLocked(c.Pos)
	rt.changed = pos
	t.mu.Unlock()
	t.changed(c.Room, pos)
}

// nextLocked is the position of a change: its ordered position, or the
// clock's for one made here alone.
func (t *Typing) nextLocked(ordered int64) int64 {
	if ordered > 0 {
		return t.clock.remote(ordered)
	}
	return t.clock.local(t.now())
}

// expire ends ty's typing when its timeout passed. One set through this
// process is ended through the order, so every process ends it at the
// same position.
func (t *Typing) expire(roomID, userID string, ty *typist) {
	t.mu.Lock()
	rt := t.rooms[roomID]
	current := rt != nil && rt.users[userID] == ty
	t.mu.Unlock()
	if !current {
		return
	}
	if ty.own && t.order != nil && t.order(TypingChange{Room: roomID, User: userID, Own: true}) == nil {
		return
	}
	t.mu.Lock()
	if rt.users[userID] != ty {
		t.mu.Unlock()
		return
	}
	delete(rt.users, userID)
	pos := t.clock.local(t.now())
	rt.changed = pos
	t.mu.Unlock()
	t.changed(roomID, pos)
}

// Close stops the pending expiries, for a server shutting down; it waits
// for one that is being made.
func (t *Typing) Close() { t.timers.close() }

// Users returns who is typing in a room and the position of the last change.
func (t *Typing) Users(roomID string) ([]string, int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt := t.rooms[roomID]
	if rt == nil {
		return []string{}, 0
	}
	out := make([]string, 0, len(rt.users))
	for u := range rt.users {
		out = append(out, u)
	}
	sort.Strings(out)
	return out, rt.changed
}
