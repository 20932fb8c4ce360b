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
//
// Room events, the frequent change, are recorded once per room (the room's
// newest position) rather than once per member: a user's newest position
// is the maximum over their rooms, computed when they wait. An event then
// costs work proportional to the users waiting on the room, not to its
// members, which matters in rooms with thousands of members.
type Notifier struct {
	mu      sync.Mutex
	current Position
	users   map[string]*userState
	// roomUsers are the local users joined to, invited to or knocking on
	// each room, loaded from the database the first time the room changes;
	// userRooms is the same relation by user. Only rooms that changed since
	// the notifier started are in them, and only those have a roomPos.
	roomUsers map[string]map[string]bool
	userRooms map[string]map[string]bool
	// roomPos is the stream position of each room's newest event.
	roomPos map[string]int64
	// waiting are the users with at least one waiting sync.
	waiting     map[string]*userState
	loadMembers func(ctx context.Context, roomID string) ([]string, error)
	// publish, when set, is told of every change reported here (not of
	// those applied with Apply), so other processes sharing the database
	// can wake their own syncs; see SetPublish.
	publish func(Change)
}

// Change is one reported change, as other processes sharing the database
// receive it: a room event (Room set) or a change for users (Users set,
// and Device for a to-device message). Typing and presence positions are
// never in it: they are counters of one process's memory.
type Change struct {
	Room       string   `json:"r,omitempty"`
	Target     string   `json:"t,omitempty"`
	Membership string   `json:"m,omitempty"`
	Users      []string `json:"u,omitempty"`
	Device     string   `json:"d,omitempty"`
	Pos        Position `json:"p"`
}

type userState struct {
	// changed is the newest position of a change that concerned the user
	// other than an event in one of their rooms (see roomPos), and per
	// device for to-device messages, in toDevice.
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
	return &Notifier{
		current: current, users: map[string]*userState{},
		roomUsers: map[string]map[string]bool{}, userRooms: map[string]map[string]bool{},
		roomPos: map[string]int64{}, waiting: map[string]*userState{},
		loadMembers: loadMembers,
	}
}

// SetPublish makes the notifier tell fn of every change reported to it
// (called after the change is applied here, outside the notifier's lock).
// Call it before any change is reported.
func (n *Notifier) SetPublish(fn func(Change)) { n.publish = fn }

// Apply applies a change another process reported, without publishing it.
func (n *Notifier) Apply(ctx context.Context, c Change) {
	switch {
	case c.Room != "":
		n.roomEvent(ctx, c.Room, c.Pos.Events, c.Target, c.Membership)
	case c.Device != "" && len(c.Users) == 1:
		n.wakeDevice(c.Users[0], c.Device, c.Pos.ToDevice)
	default:
		n.wakeUsers(c.Users, c.Pos)
	}
}

// WakeAll moves the current position to pos and wakes every waiting sync,
// which then looks in the database: for changes that may have been missed
// (another process's notifications lost while the connection that
// receives them was down).
func (n *Notifier) WakeAll(pos Position) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.current = n.current.Max(pos)
	for id, u := range n.users {
		u.changed = u.changed.Max(n.current)
		n.wakeWaitersLocked(id, u, "")
	}
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
	n.wakeWaitersLocked(userID, u, device)
}

// wakeWaitersLocked ends the user's waiting syncs (only device's when device
// is set).
func (n *Notifier) wakeWaitersLocked(userID string, u *userState, device string) {
	for w := range u.waiters {
		if device != "" && w.device != device {
			continue
		}
		close(w.ch)
		delete(u.waiters, w)
	}
	if len(u.waiters) == 0 {
		delete(n.waiting, userID)
	}
}

// RoomEvent reports an event at stream position pos in roomID. membership
// is set for m.room.member events: the target user and new membership,
// which keep the room's user set up to date.
func (n *Notifier) RoomEvent(ctx context.Context, roomID string, pos int64, target, membership string) {
	n.roomEvent(ctx, roomID, pos, target, membership)
	if n.publish != nil {
		n.publish(Change{Room: roomID, Target: target, Membership: membership, Pos: Position{Events: pos}})
	}
}

func (n *Notifier) roomEvent(ctx context.Context, roomID string, pos int64, target, membership string) {
	loaded := n.loadRoom(ctx, roomID)
	n.mu.Lock()
	defer n.mu.Unlock()
	if pos > n.current.Events {
		n.current.Events = pos
	}
	p := Position{Events: pos}
	set := n.roomUsers[roomID]
	switch {
	case !loaded:
		// The members could not be loaded: tell everyone, to be safe.
		for id, u := range n.users {
			u.changed = u.changed.Max(p)
			n.wakeWaitersLocked(id, u, "")
		}
	case len(n.waiting) <= len(set):
		n.roomPos[roomID] = pos
		for id, u := range n.waiting {
			if set[id] {
				n.wakeWaitersLocked(id, u, "")
			}
		}
	default:
		n.roomPos[roomID] = pos
		for id := range set {
			if u, ok := n.waiting[id]; ok {
				n.wakeWaitersLocked(id, u, "")
			}
		}
	}
	if target != "" {
		n.wakeLocked(target, p, "") // also a user who just left or was invited
		if set != nil {
			switch membership {
			case "join", "invite", "knock":
				n.addRoomUserLocked(roomID, target)
			default:
				delete(set, target)
				delete(n.userRooms[target], roomID)
				if len(n.userRooms[target]) == 0 {
					delete(n.userRooms, target)
				}
			}
		}
	}
}

func (n *Notifier) addRoomUserLocked(roomID, userID string) {
	n.roomUsers[roomID][userID] = true
	rooms := n.userRooms[userID]
	if rooms == nil {
		rooms = map[string]bool{}
		n.userRooms[userID] = rooms
	}
	rooms[roomID] = true
}

// loadRoom loads the room's local users the first time the room changes,
// and reports whether they are known.
func (n *Notifier) loadRoom(ctx context.Context, roomID string) bool {
	n.mu.Lock()
	_, ok := n.roomUsers[roomID]
	n.mu.Unlock()
	if ok {
		return true
	}
	ids, err := n.loadMembers(ctx, roomID)
	if err != nil {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.roomUsers[roomID]; ok {
		return true
	}
	n.roomUsers[roomID] = map[string]bool{}
	for _, id := range ids {
		n.addRoomUserLocked(roomID, id)
	}
	return true
}

// roomMembers returns a copy of the room's local users, loading them once.
func (n *Notifier) roomMembers(ctx context.Context, roomID string) map[string]bool {
	if !n.loadRoom(ctx, roomID) {
		ids, _ := n.loadMembers(ctx, roomID)
		out := make(map[string]bool, len(ids))
		for _, id := range ids {
			out[id] = true
		}
		return out
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	set := n.roomUsers[roomID]
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
	n.wakeUsers(users, pos)
	if n.publish != nil && len(users) > 0 {
		// Typing and presence are counters of this process's memory.
		pos.Typing, pos.Presence = 0, 0
		if pos != (Position{}) {
			n.publish(Change{Users: users, Pos: pos})
		}
	}
}

func (n *Notifier) wakeUsers(users []string, pos Position) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.current = n.current.Max(pos)
	for _, u := range users {
		n.wakeLocked(u, pos, "")
	}
}

// Device reports a to-device message at pos for one device of a user.
func (n *Notifier) Device(userID, deviceID string, pos int64) {
	n.wakeDevice(userID, deviceID, pos)
	if n.publish != nil {
		n.publish(Change{Users: []string{userID}, Device: deviceID, Pos: Position{ToDevice: pos}})
	}
}

func (n *Notifier) wakeDevice(userID, deviceID string, pos int64) {
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
	for room := range n.userRooms[userID] {
		changed.Events = max(changed.Events, n.roomPos[room])
	}
	if changed.After(since) {
		return nil, true, func() {}
	}
	w := &waiter{device: deviceID, ch: make(chan struct{})}
	u.waiters[w] = true
	n.waiting[userID] = u
	return w.ch, false, func() {
		n.mu.Lock()
		delete(u.waiters, w)
		if len(u.waiters) == 0 && n.waiting[userID] == u {
			delete(n.waiting, userID)
		}
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

// WaitingSyncs is the number of long-polling syncs waiting now.
func (n *Notifier) WaitingSyncs() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	total := 0
	for _, u := range n.waiting {
		total += len(u.waiters)
	}
	return total
}
