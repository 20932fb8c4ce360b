// Package rooms is the room event core: rooms as DAGs of signed PDUs,
// checked with each room version's auth rules, persisted through one
// sequencer per room, with state kept as delta snapshots.
//
// Every event takes the same road, persistEvent, whichever way it arrived
// (a local send, a remote PDU, backfill, an auth event fetched alone, a
// send_join answer, an invite to a room we are not in): authorise it
// against the state before it, persist it with a stream position, advance
// the forward extremities and current state, notify observers; the way it
// arrived decides which of the steps apply.
package rooms

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"golang.org/x/sync/singleflight"

	"github.com/hearth-matrix/hearth/serverkey"
	"github.com/hearth-matrix/hearth/stateres"
	"github.com/hearth-matrix/hearth/storage"
)

// Observer is told about events after they are committed, in stream order.
type Observer func(events []*Event)

// TxHook runs in the transaction that commits events observers will be
// told of, after they are stored: what it writes commits with them (push
// notification counts, see push.Record). An error rolls them back.
type TxHook func(ctx context.Context, tx *sql.Tx, events []*Event) error

// Rooms is the room core of one homeserver.
type Rooms struct {
	db             *storage.DB
	serverName     spec.ServerName
	key            serverkey.Key
	log            *slog.Logger
	DefaultVersion gomatrixserverlib.RoomVersion

	locks roomLocks
	// sentJoins are our joins to rooms we hold that another server's
	// send_join took (and so sends to the room): not sent again.
	sentJoins sync.Map
	snapshots *snapshotCache
	pdus      *pduCache
	versions  versionCache
	// bundles and recents are shared by the syncs at one position;
	// sharedGen retires their entries (cache.go).
	bundles   *bundleCache
	recents   *recentCache
	sharedGen atomic.Uint64
	// flights: the shared caches' readings under way, joined by the
	// syncs that miss the same entry at once.
	flights singleflight.Group

	keyRing  *gomatrixserverlib.KeyRing
	verifier gomatrixserverlib.JSONVerifier
	remote   Remote
	joins    JoinClient
	invites  InviteClient
	members  MembershipClient
	backfill backfillMemo
	// PartialStateJoins: remote joins ask for partial state (MSC3706)
	// and resync the rest in the background.
	PartialStateJoins bool
	resync            resyncer
	// policyClient asks remote policy servers; policyServer, when set, is
	// this server acting as one (policy.go).
	policyClient PolicyClient
	policyServer *PolicyServer
	// policyRooms are the rooms known to have had m.room.policy: sends
	// to others skip looking for a policy server.
	policyRooms sync.Map
	// policyDown: policy servers that could not be reached, until when
	// they are not asked again.
	policyDown sync.Map
	// serversAt holds each room's joined servers with the snapshot they
	// were read at (ServersInRoom); roomID -> serversEntry.
	serversAt sync.Map

	obsMu     sync.RWMutex
	observers []Observer
	txHook    TxHook
	// notifyMu makes observers see committed events in commit order even
	// when a room's lock is released before they are told (see publish).
	notifyMu sync.Mutex
}

// Cache bounds. They were 4,096 snapshots and 65,536 events: the state of a
// 1,000-member room is about 100 KB in memory and each join makes a new
// snapshot, so the joins benchmark alone held ~100 MB of snapshots
// (docs/performance.md). Now: 100,000 state entries (about 10 MB; 100 full
// states of a 1,000-member room) and about 16 MB of events.
const (
	snapshotCacheEntries = 100_000
	pduCacheBytes        = 16 << 20
)

// New returns the room core over db, signing as serverName with key.
func New(db *storage.DB, serverName string, key serverkey.Key, log *slog.Logger) *Rooms {
	return &Rooms{
		db: db, serverName: spec.ServerName(serverName), key: key, log: log,
		DefaultVersion: DefaultVersion, PartialStateJoins: true,
		snapshots: newSnapshotCache(snapshotCacheEntries),
		pdus:      newPDUCache(pduCacheBytes),
		bundles:   newBundleCache(),
		recents:   newRecentCache(),
	}
}

// ForgetEvents drops events from the event cache, for redactions another
// process sharing the database committed; with no IDs, every cached event
// (when such news may have been missed).
func (r *Rooms) ForgetEvents(ids ...string) {
	// The shared caches hold events in answers about others (a child in
	// a bundle, a timeline): retire them all (redactions and purges are
	// rare).
	r.forgetShared()
	if len(ids) == 0 {
		r.pdus.clear()
	}
	for _, id := range ids {
		r.pdus.remove(id)
	}
}

// Observe registers fn to be called with every batch of committed events.
func (r *Rooms) Observe(fn Observer) {
	r.obsMu.Lock()
	defer r.obsMu.Unlock()
	r.observers = append(r.observers, fn)
}

// SetTxHook sets the hook that runs before each commit of observed events.
func (r *Rooms) SetTxHook(fn TxHook) {
	r.obsMu.Lock()
	defer r.obsMu.Unlock()
	r.txHook = fn
}

func (r *Rooms) runTxHook(ctx context.Context, tx *sql.Tx, evs []*Event) error {
	r.obsMu.RLock()
	fn := r.txHook
	r.obsMu.RUnlock()
	// A policy server's dry run (policy.go) is rolled back: nothing to push.
	if fn == nil || len(evs) == 0 || ctx.Value(dryRunKey{}) != nil {
		return nil
	}
	return fn(ctx, tx, evs)
}

func (r *Rooms) notify(evs []*Event) {
	r.obsMu.RLock()
	defer r.obsMu.RUnlock()
	for _, fn := range r.observers {
		fn(evs)
	}
}

// ServerName is this server's name.
func (r *Rooms) ServerName() spec.ServerName { return r.serverName }

// DB exposes the store to the API layers for read queries.
func (r *Rooms) DB() *storage.DB { return r.db }

// roomLocks holds one mutex per room: one writer per room at a time, many
// rooms in parallel.
type roomLocks struct {
	mu    sync.Mutex
	locks map[string]*roomLock
}

type roomLock struct {
	sync.Mutex
	users int
	// pending are the sends waiting for this room, in arrival order; the
	// caller holding the lock takes them (see Rooms.Send).
	pending []*sendRequest
}

func (l *roomLocks) lock(roomID string) func() {
	_, unlock := l.lockQueued(roomID, nil)
	return unlock
}

// lockQueued queues req (if not nil) for the room, then locks the room.
func (l *roomLocks) lockQueued(roomID string, req *sendRequest) (*roomLock, func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*roomLock{}
	}
	rl := l.locks[roomID]
	if rl == nil {
		rl = &roomLock{}
		l.locks[roomID] = rl
	}
	rl.users++
	if req != nil {
		rl.pending = append(rl.pending, req)
	}
	l.mu.Unlock()
	rl.Lock()
	return rl, func() {
		rl.Unlock()
		l.mu.Lock()
		rl.users--
		if rl.users == 0 {
			delete(l.locks, roomID)
		}
		l.mu.Unlock()
	}
}

// take returns up to max waiting sends of a locked room, in arrival order,
// plus req itself if it is not among them; or nil when req was already
// taken by an earlier holder of the lock.
func (l *roomLocks) take(rl *roomLock, req *sendRequest, max int) []*sendRequest {
	l.mu.Lock()
	defer l.mu.Unlock()
	if req.taken {
		return nil
	}
	n := min(max, len(rl.pending))
	batch := append([]*sendRequest(nil), rl.pending[:n]...)
	rest := rl.pending[n:]
	if i := slices.Index(rest, req); i >= 0 {
		// The caller's own send is always in the batch it commits.
		batch = append(batch, req)
		rest = slices.Delete(rest, i, i+1)
	}
	rl.pending = append(rl.pending[:0], rest...)
	for _, s := range batch {
		s.taken = true
	}
	return batch
}

// userIDForSender maps sender IDs to user IDs; in every room version Hearth
// supports they are the same string.
func userIDForSender(_ spec.RoomID, senderID spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(senderID), true)
}

// Version returns the room version of a room, or storage.ErrNotFound.
func (r *Rooms) Version(ctx context.Context, roomID string) (gomatrixserverlib.IRoomVersion, error) {
	room, err := storage.GetRoom(ctx, r.db.Read(), roomID)
	if err != nil {
		return nil, err
	}
	v, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(room.Version))
	if err != nil {
		return nil, fmt.Errorf("room %s has unknown version %q: %w", roomID, room.Version, err)
	}
	return v, nil
}

// RedactsInContent reports whether a room version carries the redacted
// event's ID in content.redacts (room version 11 and later).
func RedactsInContent(v gomatrixserverlib.RoomVersion) bool {
	switch BaseVersion(v) {
	case "1", "2", "3", "4", "5", "6", "7", "8", "9", "10":
		return false
	}
	return true
}

// CanRedactOthers reports whether the user's power level reaches the
// room's redact level.
func (r *Rooms) CanRedactOthers(ctx context.Context, roomID, userID string) (bool, error) {
	pl, err := r.PowerLevels(ctx, roomID)
	if err != nil {
		return false, err
	}
	return pl.UserLevel(spec.SenderID(userID)) >= pl.Redact, nil
}

// PowerLevels returns the room's current power levels (the defaults the
// auth rules use when the room has none), as Hearth's own permission checks
// read them: in rooms with privileged creators (version 12) the creators
// are added to Users at gomatrixserverlib.CreatorPowerLevel, above any
// level an event can give. The result is a view, never event content.
func (r *Rooms) PowerLevels(ctx context.Context, roomID string) (*gomatrixserverlib.PowerLevelContent, error) {
	// Two keys, not the whole state (push asks this per event).
	st, err := r.CurrentStateIDs(ctx, roomID, storage.StateKey{Type: spec.MRoomCreate}, storage.StateKey{Type: spec.MRoomPowerLevels})
	if err != nil {
		return nil, err
	}
	createID, ok := st[storage.StateKey{Type: spec.MRoomCreate}]
	if !ok {
		return nil, storage.ErrNotFound // an unknown room
	}
	create, err := r.Event(ctx, createID)
	if err != nil {
		return nil, err
	}
	var pl *gomatrixserverlib.PowerLevelContent
	if id, ok := st[storage.StateKey{Type: spec.MRoomPowerLevels}]; ok {
		ev, err := r.Event(ctx, id)
		if err != nil {
			return nil, err
		}
		if pl, err = ev.PDU.PowerLevels(); err != nil {
			return nil, err
		}
	} else {
		pl = &gomatrixserverlib.PowerLevelContent{}
		pl.Defaults()
		pl.Users = map[string]int64{create.Sender: 100}
	}
	if v, err := gomatrixserverlib.GetRoomVersion(create.PDU.Version()); err == nil && v.PrivilegedCreators() {
		users := make(map[string]int64, len(pl.Users)+1)
		maps.Copy(users, pl.Users)
		for _, c := range stateres.Creators(create.PDU) {
			users[c] = gomatrixserverlib.CreatorPowerLevel
		}
		pl.Users = users
	}
	return pl, nil
}
