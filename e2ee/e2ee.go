// Package e2ee is the server side of end-to-end encryption (client-server
// API, End-to-End Encryption and Send-to-Device messaging): device and
// one-time keys, cross-signing, to-device inboxes, key backups and the
// device-list stream that tells users when someone's devices changed.
//
// /sync reads from here through InboxSince, AckInbox, DeviceListChangesSince,
// OneTimeKeyCounts, UnusedFallbackKeyTypes and MaxPositions, and is woken by
// OnChange.
package e2ee

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"

	"github.com/hearth-matrix/hearth/storage"
)

// DefaultInboxCap is how many undelivered to-device messages one device may
// hold; further messages to it are dropped (and logged) until it syncs.
const DefaultInboxCap = 10000

// E2EE is the end-to-end encryption state of one homeserver.
type E2EE struct {
	db         *storage.DB
	serverName string
	log        *slog.Logger
	remote     Remote // nil: no federation

	// OnChange is called after a commit that concerns sync: with the target
	// user and device for each to-device message, and with every user who
	// should see a device-list change (deviceID empty). Set it before
	// serving; nil means nobody listens.
	OnChange func(userIDs []string, deviceID string)

	// InboxCap bounds each device's to-device inbox.
	InboxCap int

	// TokenPosition maps a sync token (the from and to of /keys/changes) to
	// its room-event and device-list stream positions. Sync sets it to its
	// own token parser; the default accepts a bare decimal device-list
	// position.
	TokenPosition func(token string) (Positions, error)
}

// Positions are the stream positions device-list changes are read between:
// the device-list stream, and the room-event stream for membership changes
// (a user who starts sharing a room shows as changed, one who stops as left).
type Positions struct {
	Events, DeviceLists int64
}

// New returns the end-to-end encryption service over db.
func New(db *storage.DB, serverName string, log *slog.Logger) *E2EE {
	return &E2EE{db: db, serverName: serverName, log: log, InboxCap: DefaultInboxCap, TokenPosition: parseDecimalPosition}
}

func parseDecimalPosition(token string) (Positions, error) {
	n, err := strconv.ParseInt(token, 10, 64)
	if err != nil || n < 0 {
		return Positions{}, fmt.Errorf("not a stream position: %q", token)
	}
	return Positions{DeviceLists: n}, nil
}

// isLocal reports whether a user ID belongs to this server.
func (e *E2EE) isLocal(userID string) bool {
	_, server, ok := strings.Cut(userID, ":")
	return ok && strings.HasPrefix(userID, "@") && server == e.serverName
}

func (e *E2EE) notify(userIDs []string, deviceID string) {
	if e.OnChange != nil && len(userIDs) > 0 {
		e.OnChange(userIDs, deviceID)
	}
}

// MaxPositions returns the newest committed positions of the to-device and
// device-list streams: what a sync token taken now should hold.
func (e *E2EE) MaxPositions(ctx context.Context) (toDevice, deviceLists int64, err error) {
	if toDevice, err = storage.MaxToDevicePos(ctx, e.db.Read()); err != nil {
		return 0, 0, err
	}
	if deviceLists, err = storage.MaxDeviceListPos(ctx, e.db.Read()); err != nil {
		return 0, 0, err
	}
	return toDevice, deviceLists, nil
}

// DeviceListChangesSince lists, for the syncing user userID, the users
// whose devices or keys changed between from and to and who share a joined
// room with userID (userID included), and those who started sharing one
// (they joined a room of userID's, or userID joined theirs). left are the
// users who stopped sharing any room with userID in that window.
func (e *E2EE) DeviceListChangesSince(ctx context.Context, userID string, from, to Positions) (changed, left []string, err error) {
	q := e.db.Read()
	changed, err = storage.DeviceListChanges(ctx, q, userID, from.DeviceLists, to.DeviceLists)
	if err != nil {
		return nil, nil, err
	}
	moves, err := storage.MembershipChangesBetween(ctx, q, userID, from.Events, to.Events)
	if err != nil || len(moves) == 0 {
		return changed, []string{}, err
	}
	sharing := map[string]bool{}
	users, err := storage.UsersSharingRoomWith(ctx, q, userID)
	if err != nil {
		return nil, nil, err
	}
	for _, u := range users {
		sharing[u] = true
	}
	changedSet, leftSet := map[string]bool{}, map[string]bool{}
	for _, u := range changed {
		changedSet[u] = true
	}
	note := func(u string, joined bool) {
		switch {
		case u == userID:
		case joined && sharing[u]:
			changedSet[u] = true
		case !joined && !sharing[u]:
			leftSet[u] = true
		}
	}
	for _, m := range moves {
		if m.UserID != userID {
			note(m.UserID, m.Membership == "join")
			continue
		}
		// userID's own join or leave: every member of the room, and on a
		// join userID too (their other devices track the same rooms).
		if m.Membership == "join" {
			changedSet[userID] = true
		}
		members, err := storage.MembersOfRoom(ctx, q, m.RoomID)
		if err != nil {
			return nil, nil, err
		}
		for _, mm := range members {
			if mm.Membership == "join" {
				note(mm.UserID, m.Membership == "join")
			}
		}
	}
	changed, left = sortedKeys(changedSet), sortedKeys(leftSet)
	return changed, left, nil
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// OneTimeKeyCounts counts a device's unclaimed one-time keys by algorithm
// (sync's device_one_time_keys_count).
func (e *E2EE) OneTimeKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, error) {
	return storage.OneTimeKeyCounts(ctx, e.db.Read(), userID, deviceID)
}

// UnusedFallbackKeyTypes lists the algorithms for which a device has a
// fallback key not yet handed out (sync's device_unused_fallback_key_types).
func (e *E2EE) UnusedFallbackKeyTypes(ctx context.Context, userID, deviceID string) ([]string, error) {
	return storage.UnusedFallbackKeyTypes(ctx, e.db.Read(), userID, deviceID)
}

// DeviceKeyCounts is OneTimeKeyCounts and UnusedFallbackKeyTypes read
// together, never nil.
func (e *E2EE) DeviceKeyCounts(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
	return storage.DeviceKeyCounts(ctx, e.db.Read(), userID, deviceID)
}

// RecordDeviceListChange appends a change of one of userID's devices (new,
// deleted, keys or signatures changed) to the device-list stream in tx,
// and for a local user queues the m.device_list_update for the servers
// sharing a room with them. After tx commits the caller must call
// NotifyDeviceListChange.
func (e *E2EE) RecordDeviceListChange(ctx context.Context, tx *sql.Tx, userID, deviceID string) error {
	prev, err := storage.LastDeviceListPosition(ctx, tx, userID)
	if err != nil {
		return err
	}
	pos, err := e.db.AppendDeviceListChange(ctx, tx, userID)
	if err != nil || e.remote == nil || !e.isLocal(userID) {
		return err
	}
	return e.queueDeviceListUpdate(ctx, tx, userID, deviceID, pos, prev)
}

// RecordCrossSigningChange is RecordDeviceListChange for a change of
// userID's cross-signing keys (m.signing_key_update).
func (e *E2EE) RecordCrossSigningChange(ctx context.Context, tx *sql.Tx, userID string) error {
	if _, err := e.db.AppendDeviceListChange(ctx, tx, userID); err != nil || e.remote == nil || !e.isLocal(userID) {
		return err
	}
	return e.queueSigningKeyUpdate(ctx, tx, userID)
}

// NotifyDeviceListChange wakes the syncs of everyone who should see that
// userID's device list changed: userID and those sharing a room with them.
func (e *E2EE) NotifyDeviceListChange(ctx context.Context, userID string) {
	if e.OnChange == nil {
		return
	}
	users, err := storage.UsersSharingRoomWith(ctx, e.db.Read(), userID)
	if err != nil {
		e.log.Warn("listing users to notify of a device-list change", "user_id", userID, "err", err)
		users = []string{userID}
	}
	e.notify(users, "")
}

// DeviceDeleted removes a deleted device's keys, signatures of them and its
// to-device inbox, and records the device-list change. With a nil tx it
// runs its own transaction and notifies; with a tx it writes in the
// caller's transaction, and the caller calls NotifyDeviceListChange after
// committing.
func (e *E2EE) DeviceDeleted(ctx context.Context, tx *sql.Tx, userID, deviceID string) error {
	write := func(tx *sql.Tx) error {
		if err := storage.DeleteDeviceE2EE(ctx, tx, userID, deviceID); err != nil {
			return err
		}
		return e.RecordDeviceListChange(ctx, tx, userID, deviceID)
	}
	if tx != nil {
		return write(tx)
	}
	if err := e.db.WriteTx(ctx, write); err != nil {
		return fmt.Errorf("deleting keys of device %s: %w", deviceID, err)
	}
	e.NotifyDeviceListChange(ctx, userID)
	return nil
}
