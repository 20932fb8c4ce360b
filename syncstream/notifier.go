package syncstream

import (
	"context"
	"sync"
)

// Notifier wakes long-polling syncs. Every change is reported with the users
// (and, for to-device messages, the device) it concerns; the notifier keeps,
// per user, the newest position of anything that concerned them, so a sync
// with nothing new waits without touching the database, and a change costs
// work proportional to the users it concerns.
type Notifier struct {
	mu      sync.Mutex
	current Position
	users   map[string]*userState
	// roomUsers are the local users joined to, invited to or knocking on
	// each room, loaded from the database the first time the room changes.
	roomUsers   map[string]map[string]bool
	loadMembers func(ctx context.Context, roomID string) ([]string, error)
}

type userState struct {
	// changed is the newest position of a change that concerned the user
	// (per device for to-device messages, in toDevice).
	changed  Position
	toDevice map[string]int64
	waiters  map[*waiter]bool
}

type waiter struct {
	device string
	ch     chan struct{}
}

// NewNotifier starts at position current. loadMembers lists a room's local
// users (joined, invited or knocking).
func NewNotifier(current Position, loadMembers func(ctx context.Context, roomID string) ([]string, error)) *Notifier {
	return &Notifier{current: current, users: map[string]*userState{}, roomUsers: map[string]map[string]bool{}, loadMembers: loadMembers}
}

// Current is the newest position of every stream.
func (n *Notifier) Current() Position {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.current
}

func (n *Notifier) user(id string) *userState {
	u := n.users[id]
	if u == nil {
		// A user the notifier has not seen may have had changes before it
		// started: their "changed" is the current position, which makes a
		// sync from any older token look in the database once.
		u = &userState{changed: n.current, toDevice: map[string]int64{}, waiters: map[*waiter]bool{}}
		n.users[id] = u
	}
	return u
}

// wakeLocked records that a change at pos concerned user and wakes their
// waiting syncs (only device's when device is set).
func (n *Notifier) wakeLocked(userID string, pos Position, device string) {
	u := n.user(userID)
	u.changed = u.changed.Max(pos)
	if device != "" {
		if pos.ToDevice > u.toDevice[device] {
			u.toDevice[device] = pos.ToDevice
		}
	}
	for w := range u.waiters {
		if device != "" && w.device != device {
			continue
		}
		close(w.ch)
		delete(u.waiters, w)
	}
}

// RoomEvent reports an event at stream position pos in roomID. membership
// is set for m.room.member events: the target user and new membership,
// which keep the room's user set up to date.
func (n *Notifier) RoomEvent(ctx context.Context, roomID string, pos int64, target, membership string) {
	users := n.roomMembers(ctx, roomID)
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.current.Events {
		n.current.Events = pos
	}
	p := Position{Events: pos}
	for u := range users {
		n.wakeLocked(u, p, "")
	}
	if target != "" {
		n.wakeLocked(target, p, "") // also a user who just left or was invited
		set := n.roomUsers[roomID]
		if set != nil {
			switch membership {
			case "join", "invite", "knock":
				set[target] = true
			default:
				delete(set, target)
			}
		}
	}
}

// roomMembers returns the room's local users, loading them once.
func (n *Notifier) roomMembers(ctx context.Context, roomID string) map[string]bool {
	n.mu.Lock()
	set, ok := n.roomUsers[roomID]
	n.mu.Unlock()
	if ok {
		return copySet(n, set)
	}
	ids, err := n.loadMembers(ctx, roomID)
	n.mu.Lock()
	defer n.mu.Unlock()
	if set, ok := n.roomUsers[roomID]; ok {
		return copySetLocked(set)
	}
	set = map[string]bool{}
	for _, id := range ids {
		set[id] = true
	}
	if err == nil {
		n.roomUsers[roomID] = set
	}
	return copySetLocked(set)
}

func copySet(n *Notifier, set map[string]bool) map[string]bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return copySetLocked(set)
}

func copySetLocked(set map[string]bool) map[string]bool {
	out := make(map[string]bool, len(set))
	for k := range set {
		out[k] = true
	}
	return out
}

// RoomUsers returns the local users of a room the notifier knows.
func (n *Notifier) RoomUsers(ctx context.Context, roomID string) []string {
	set := n.roomMembers(ctx, roomID)
	out := make([]string, 0, len(set))
	for u := range set {
		out = append(out, u)
	}
	return out
}

// Users reports a change at pos that concerns the given users (account
// data, receipts, typing, device lists, presence).
func (n *Notifier) Users(users []string, pos Position) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.current = n.current.Max(pos)
	for _, u := range users {
		n.wakeLocked(u, pos, "")
	}
}

// Device reports a to-device message at pos for one device of a user.
func (n *Notifier) Device(userID, deviceID string, pos int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p := Position{ToDevice: pos}
	n.current = n.current.Max(p)
	n.wakeLocked(userID, p, deviceID)
}

// Advance moves the current position forward without concerning anyone
// (e.g. typing counters), so tokens handed out include it.
func (n *Notifier) Advance(pos Position) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.current = n.current.Max(pos)
}

// Wait returns a channel closed when something after since concerns the
// user's device, and whether that is already the case. cancel must be
// called when the caller stops waiting.
func (n *Notifier) Wait(userID, deviceID string, since Position) (ch <-chan struct{}, hasNew bool, cancel func()) {
	n.mu.Lock()
	defer n.mu.Unlock()
	u := n.user(userID)
	changed := u.changed
	changed.ToDevice = u.toDevice[deviceID]
	if changed.After(since) {
		return nil, true, func() {}
	}
	w := &waiter{device: deviceID, ch: make(chan struct{})}
	u.waiters[w] = true
	return w.ch, false, func() {
		n.mu.Lock()
		delete(u.waiters, w)
		n.mu.Unlock()
	}
}

// MarkSynced records that the user's state up to pos has been computed from
// the database, so later waits can trust the in-memory record.
func (n *Notifier) MarkSynced(userID string, pos Position) {
	_ = pos // the record is conservative already: changed only grows
	n.mu.Lock()
	n.user(userID)
	n.mu.Unlock()
}
