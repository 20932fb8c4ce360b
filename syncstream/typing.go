package syncstream

import (
	"sort"
	"sync"
	"time"
)

// Typing is who is typing in each room (client-server API, Typing
// Notifications). It lives in memory only: typing state is seconds long and
// not worth a write. Every change takes the next typing position.
type Typing struct {
	mu      sync.Mutex
	pos     int64
	rooms   map[string]*roomTyping
	changed func(roomID string, pos int64) // wakes the room's users
	timers  timers
	// publish, when set, is told of every Set (not of Apply), so other
	// processes sharing the database keep the same typing state, each
	// with positions of its own.
	publish func(roomID, userID string, typing bool, timeout time.Duration)
}

type roomTyping struct {
	users   map[string]*time.Timer // user → expiry timer
	changed int64                  // position of the last change
}

// NewTyping returns empty typing state; changed is called after each change.
func NewTyping(changed func(roomID string, pos int64)) *Typing {
	return &Typing{rooms: map[string]*roomTyping{}, changed: changed}
}

// SetPublish makes Set tell fn of every change (call it before serving).
func (t *Typing) SetPublish(fn func(roomID, userID string, typing bool, timeout time.Duration)) {
	t.publish = fn
}

// Set marks a user typing for timeout, or not typing.
func (t *Typing) Set(roomID, userID string, typing bool, timeout time.Duration) {
	t.Apply(roomID, userID, typing, timeout)
	if t.publish != nil {
		t.publish(roomID, userID, typing, timeout)
	}
}

// Apply is Set for a change another process published.
func (t *Typing) Apply(roomID, userID string, typing bool, timeout time.Duration) {
	t.mu.Lock()
	rt := t.rooms[roomID]
	if rt == nil {
		rt = &roomTyping{users: map[string]*time.Timer{}}
		t.rooms[roomID] = rt
	}
	old, was := rt.users[userID]
	if was {
		old.Stop()
		delete(rt.users, userID)
	}
	if typing {
		rt.users[userID] = t.timers.after(timeout, func() { t.expire(roomID, userID) })
	}
	if was == typing && typing {
		// Still typing: the timer was extended, nothing to tell anyone.
		t.mu.Unlock()
		return
	}
	if !was && !typing {
		t.mu.Unlock()
		return
	}
	t.pos++
	rt.changed = t.pos
	pos := t.pos
	t.mu.Unlock()
	t.changed(roomID, pos)
}

func (t *Typing) expire(roomID, userID string) {
	t.mu.Lock()
	rt := t.rooms[roomID]
	if rt == nil || rt.users[userID] == nil {
		t.mu.Unlock()
		return
	}
	delete(rt.users, userID)
	t.pos++
	rt.changed = t.pos
	pos := t.pos
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
