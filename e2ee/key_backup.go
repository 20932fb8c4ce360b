package e2ee

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Server-side key backups (client-server API, Server-side key backups).
// Versions are decimal strings counting up per user.

// BackupInfo is the answer of GET /room_keys/version[/{version}].
type BackupInfo struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Count     int64           `json:"count"`
	Etag      string          `json:"etag"`
	Version   string          `json:"version"`
}

// BackupKey is a KeyBackupData object.
type BackupKey struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

// BackupUpdate is the answer of the key-changing endpoints.
type BackupUpdate struct {
	Count int64  `json:"count"`
	Etag  string `json:"etag"`
}

func unknownBackup() error { return mxhttp.NotFound("Unknown backup version") }

func parseVersion(v string) (int64, bool) {
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil && n > 0
}

func checkAuthData(algorithm string, authData json.RawMessage) error {
	if algorithm == "" {
		return mxhttp.MissingParam("algorithm is required")
	}
	if len(authData) == 0 || authData[0] != '{' {
		return mxhttp.BadJSON("auth_data must be a JSON object")
	}
	return nil
}

// CreateBackup creates a new backup version, which becomes the current one.
func (e *E2EE) CreateBackup(ctx context.Context, userID, algorithm string, authData json.RawMessage) (string, error) {
	if err := checkAuthData(algorithm, authData); err != nil {
		return "", err
	}
	var v int64
	err := e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		var err error
		v, err = storage.InsertBackupVersion(ctx, tx, userID, algorithm, string(authData))
		return err
	})
	if errors.Is(err, storage.ErrConflict) {
		return "", mxhttp.LimitExceeded("Another backup was created at the same time; try again").With("retry_after_ms", 100)
	}
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(v, 10), nil
}

// GetBackup describes a backup version, or the current one when version is
// empty.
func (e *E2EE) GetBackup(ctx context.Context, userID, version string) (BackupInfo, error) {
	q := e.db.Read()
	var b storage.BackupVersion
	var err error
	if version == "" {
		b, err = storage.LatestBackupVersion(ctx, q, userID)
	} else if n, ok := parseVersion(version); ok {
		b, err = storage.GetBackupVersion(ctx, q, userID, n)
	} else {
		return BackupInfo{}, unknownBackup()
	}
	if errors.Is(err, storage.ErrNotFound) || err == nil && b.Deleted {
		if version == "" {
			return BackupInfo{}, mxhttp.NotFound("No current backup version")
		}
		return BackupInfo{}, unknownBackup()
	}
	if err != nil {
		return BackupInfo{}, err
	}
	count, err := storage.BackupKeyCount(ctx, q, userID, b.Version)
	if err != nil {
		return BackupInfo{}, err
	}
	return BackupInfo{Algorithm: b.Algorithm, AuthData: json.RawMessage(b.AuthData), Count: count,
		Etag: strconv.FormatInt(b.Etag, 10), Version: strconv.FormatInt(b.Version, 10)}, nil
}

// UpdateBackup replaces a backup's auth_data; the algorithm cannot change,
// and a version in the body must match the path.
func (e *E2EE) UpdateBackup(ctx context.Context, userID, version, algorithm string, authData json.RawMessage, bodyVersion string) error {
	if err := checkAuthData(algorithm, authData); err != nil {
		return err
	}
	if bodyVersion != "" && bodyVersion != version {
		return mxhttp.InvalidParam("The version in the body does not match the version in the path")
	}
	n, ok := parseVersion(version)
	if !ok {
		return unknownBackup()
	}
	return e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		b, err := storage.LockBackupVersion(ctx, tx, userID, n)
		if errors.Is(err, storage.ErrNotFound) || err == nil && b.Deleted {
			return unknownBackup()
		}
		if err != nil {
			return err
		}
		if b.Algorithm != algorithm {
			return mxhttp.InvalidParam("Algorithm does not match the backup's algorithm %s", b.Algorithm)
		}
		return storage.UpdateBackupAuthData(ctx, tx, userID, n, string(authData))
	})
}

// DeleteBackup deletes a backup and its keys; deleting it again succeeds.
func (e *E2EE) DeleteBackup(ctx context.Context, userID, version string) error {
	n, ok := parseVersion(version)
	if !ok {
		return unknownBackup()
	}
	return e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if _, err := storage.LockBackupVersion(ctx, tx, userID, n); errors.Is(err, storage.ErrNotFound) {
			return unknownBackup()
		} else if err != nil {
			return err
		}
		return storage.DeleteBackupVersion(ctx, tx, userID, n)
	})
}

// existingBackup resolves a version query parameter to a live backup.
func (e *E2EE) existingBackup(ctx context.Context, q storage.Reader, userID, version string) (int64, error) {
	if version == "" {
		return 0, mxhttp.MissingParam("The version query parameter is required")
	}
	n, ok := parseVersion(version)
	if !ok {
		return 0, unknownBackup()
	}
	b, err := storage.GetBackupVersion(ctx, q, userID, n)
	if errors.Is(err, storage.ErrNotFound) || err == nil && b.Deleted {
		return 0, unknownBackup()
	}
	return n, err
}

// PutBackupKeys stores keys in the current backup, keeping for each
// session the better of the stored and the new key: a verified one over an
// unverified one, then the lower first_message_index, then the lower
// forwarded_count. Writing to any other version is M_WRONG_ROOM_KEYS_VERSION.
func (e *E2EE) PutBackupKeys(ctx context.Context, userID, version string, rooms map[string]map[string]BackupKey) (BackupUpdate, error) {
	if version == "" {
		return BackupUpdate{}, mxhttp.MissingParam("The version query parameter is required")
	}
	var sessions []storage.BackupSession
	for roomID, ss := range rooms {
		for sessionID, k := range ss {
			if k.FirstMessageIndex == nil || k.ForwardedCount == nil || k.IsVerified == nil || len(k.SessionData) == 0 || k.SessionData[0] != '{' {
				return BackupUpdate{}, mxhttp.BadJSON("Key %s in %s needs first_message_index, forwarded_count, is_verified and a session_data object", sessionID, roomID)
			}
			sessions = append(sessions, storage.BackupSession{RoomID: roomID, SessionID: sessionID,
				FirstMessageIndex: *k.FirstMessageIndex, ForwardedCount: *k.ForwardedCount, IsVerified: *k.IsVerified,
				SessionData: string(k.SessionData)})
		}
	}
	var out BackupUpdate
	err := e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		latest, err := storage.LatestBackupVersion(ctx, tx, userID)
		if errors.Is(err, storage.ErrNotFound) {
			return unknownBackup()
		}
		if err != nil {
			return err
		}
		if strconv.FormatInt(latest.Version, 10) != version {
			return mxhttp.WrongRoomKeysVersion("Version %s is not the current backup version", version).
				With("current_version", strconv.FormatInt(latest.Version, 10))
		}
		b, err := storage.LockBackupVersion(ctx, tx, userID, latest.Version)
		if err != nil {
			return err
		}
		etag, changed := b.Etag, false
		for _, s := range sessions {
			old, err := storage.BackupSessions(ctx, tx, userID, b.Version, s.RoomID, s.SessionID)
			if err != nil {
				return err
			}
			if len(old) > 0 && !betterBackupKey(s, old[0]) {
				continue
			}
			if err := storage.UpsertBackupSession(ctx, tx, userID, b.Version, s); err != nil {
				return err
			}
			changed = true
		}
		if changed {
			if etag, err = storage.BumpBackupEtag(ctx, tx, userID, b.Version); err != nil {
				return err
			}
		}
		count, err := storage.BackupKeyCount(ctx, tx, userID, b.Version)
		out = BackupUpdate{Count: count, Etag: strconv.FormatInt(etag, 10)}
		return err
	})
	return out, err
}

// betterBackupKey reports whether key a should replace stored key b.
func betterBackupKey(a, b storage.BackupSession) bool {
	if a.IsVerified != b.IsVerified {
		return a.IsVerified
	}
	if a.FirstMessageIndex != b.FirstMessageIndex {
		return a.FirstMessageIndex < b.FirstMessageIndex
	}
	return a.ForwardedCount < b.ForwardedCount
}

func backupKeyOf(s storage.BackupSession) BackupKey {
	return BackupKey{FirstMessageIndex: &s.FirstMessageIndex, ForwardedCount: &s.ForwardedCount, IsVerified: &s.IsVerified,
		SessionData: json.RawMessage(s.SessionData)}
}

// GetBackupKeys returns a backup's keys by room and session, narrowed to a
// room and a session when those are not empty.
func (e *E2EE) GetBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (map[string]map[string]BackupKey, error) {
	q := e.db.Read()
	n, err := e.existingBackup(ctx, q, userID, version)
	if err != nil {
		return nil, err
	}
	ss, err := storage.BackupSessions(ctx, q, userID, n, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]BackupKey{}
	for _, s := range ss {
		if out[s.RoomID] == nil {
			out[s.RoomID] = map[string]BackupKey{}
		}
		out[s.RoomID][s.SessionID] = backupKeyOf(s)
	}
	return out, nil
}

// DeleteBackupKeys deletes a backup's keys, narrowed to a room and a
// session when those are not empty.
func (e *E2EE) DeleteBackupKeys(ctx context.Context, userID, version, roomID, sessionID string) (BackupUpdate, error) {
	var out BackupUpdate
	err := e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		n, err := e.existingBackup(ctx, tx, userID, version)
		if err != nil {
			return err
		}
		b, err := storage.LockBackupVersion(ctx, tx, userID, n)
		if err != nil {
			return err
		}
		deleted, err := storage.DeleteBackupSessions(ctx, tx, userID, n, roomID, sessionID)
		if err != nil {
			return err
		}
		etag := b.Etag
		if deleted > 0 {
			if etag, err = storage.BumpBackupEtag(ctx, tx, userID, n); err != nil {
				return err
			}
		}
		count, err := storage.BackupKeyCount(ctx, tx, userID, n)
		out = BackupUpdate{Count: count, Etag: strconv.FormatInt(etag, 10)}
		return err
	})
	return out, err
}
