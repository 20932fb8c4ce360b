// Package rooms is the room event core: rooms as DAGs of signed PDUs,
// checked with each room version's auth rules, persisted through one
// sequencer per room, with state kept as delta snapshots.
//
// Local sends (and, later, federated PDUs) take the same path: build or
// parse the PDU, authorise it against the state before it, persist it,
// advance the forward extremities and current state, assign a stream
// position, notify observers.
package rooms

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/serverkey"
	"github.com/hearth-matrix/hearth/stateres"
	"github.com/hearth-matrix/hearth/storage"
)

// Observer is told about events after they are committed, in stream order.
type Observer func(events []*Event)

// Rooms is the room core of one homeserver.
type Rooms struct {
	db             *storage.DB
	serverName     spec.ServerName
	key            serverkey.Key
	log            *slog.Logger
	DefaultVersion gomatrixserverlib.RoomVersion

	locks     roomLocks
	snapshots *snapshotCache
	pdus      *pduCache
	versions  versionCache

	keyRing  *gomatrixserverlib.KeyRing
	verifier gomatrixserverlib.JSONVerifier
	remote   Remote
	joins    JoinClient
	invites  InviteClient
	members  MembershipClient
	backfill backfillMemo

	obsMu     sync.RWMutex
	observers []Observer
}

// New returns the room core over db, signing as serverName with key.
func New(db *storage.DB, serverName string, key serverkey.Key, log *slog.Logger) *Rooms {
	return &Rooms{
		db: db, serverName: spec.ServerName(serverName), key: key, log: log,
		DefaultVersion: DefaultVersion,
		snapshots:      newSnapshotCache(4096),
		pdus:           newPDUCache(65536),
	}
}

// Observe registers fn to be called with every batch of committed events.
func (r *Rooms) Observe(fn Observer) {
	r.obsMu.Lock()
	defer r.obsMu.Unlock()
	r.observers = append(r.observers, fn)
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
}

func (l *roomLocks) lock(roomID string) func() {
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
	l.mu.Unlock()
	rl.Lock()
	return func() {
		rl.Unlock()
		l.mu.Lock()
		rl.users--
		if rl.users == 0 {
			delete(l.locks, roomID)
		}
		l.mu.Unlock()
	}
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
	switch v {
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
	st, err := r.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	create, err := r.Event(ctx, st[storage.StateKey{Type: spec.MRoomCreate}])
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
