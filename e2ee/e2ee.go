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

	// OnChange is called after a commit that concerns sync: with the target
	// user and device for each to-device message, and with every user who
	// should see a device-list change (deviceID empty). Set it before
	// serving; nil means nobody listens.
	OnChange func(userIDs []string, deviceID string)

	// InboxCap bounds each device's to-device inbox.
	InboxCap int

	// TokenPosition maps a sync token (the from and to of /keys/changes) to
	// a device-list stream position. Sync sets it to its own token parser;
	// the default accepts a bare decimal position.
	TokenPosition func(token string) (int64, error)
}

// New returns the end-to-end encryption service over db.
func New(db *storage.DB, serverName string, log *slog.Logger) *E2EE {
	return &E2EE{db: db, serverName: serverName, log: log, InboxCap: DefaultInboxCap, TokenPosition: parseDecimalPosition}
}

func parseDecimalPosition(token string) (int64, error) {
	n, err := strconv.ParseInt(token, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("not a stream position: %q", token)
	}
	return n, nil
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

// DeviceListChangesSince lists, for the syncing user userID, the users whose
// devices or keys changed at device-list positions in (fromPos, toPos] and
// who share a joined room with userID, userID included. left is reserved for
// users who no longer share any room with userID; it is empty for now.
func (e *E2EE) DeviceListChangesSince(ctx context.Context, userID string, fromPos, toPos int64) (changed, left []string, err error) {
	changed, err = storage.DeviceListChanges(ctx, e.db.Read(), userID, fromPos, toPos)
	if err != nil {
		return nil, nil, err
	}
	return changed, []string{}, nil
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

// RecordDeviceListChange appends userID to the device-list stream in tx.
// After tx commits the caller must call NotifyDeviceListChange.
func (e *E2EE) RecordDeviceListChange(ctx context.Context, tx *sql.Tx, userID string) error {
	_, err := e.db.AppendDeviceListChange(ctx, tx, userID)
	return err
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
		return e.RecordDeviceListChange(ctx, tx, userID)
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
