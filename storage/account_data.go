package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// The account-data stream.
//
// Each (user, room, type) has one row in account_data; its stream_pos is the
// position of its latest change. A change deletes the row and inserts it
// anew, so the row moves to a new, higher position from the table's
// sequence. Sync reads "everything user U changed after position N" with
// AccountDataSince: one index range scan, however much account data the
// user has.
//
// A reader must never see position N+1 committed while N is still in flight,
// or it would advance past N and miss it forever. SQLite has one writer, so
// positions commit in order. On PostgreSQL several transactions may write at
// once; lockAccountDataStream serializes account-data writers (a transaction
// advisory lock, held until commit), so positions are taken and committed in
// the same order. Account data changes are rare enough that one writer at a
// time costs nothing noticeable.

// Deleted account data (MSC3391, and a PUT of an empty object) is a row
// whose content is {}: it moves forward in the stream so incremental syncs
// tell clients with an empty content, while reads and initial syncs treat it
// as absent.
const deletedAccountData = "{}"

// AccountData is one account-data entry.
type AccountData struct {
	StreamPos int64
	RoomID    string // "" for global account data
	Type      string
	Content   []byte // a JSON object
}

// accountDataLockKey is the PostgreSQL advisory lock key of the account-data
// stream (migrations use 7460118).
const accountDataLockKey = 7460119

func (db *DB) lockAccountDataStream(ctx context.Context, tx *sql.Tx) error {
	if db.dialect != Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", accountDataLockKey); err != nil {
		return fmt.Errorf("account data lock: %w", err)
	}
	return nil
}

// GetAccountData loads one entry; ErrNotFound if the user has none of that
// type (in that room; roomID "" is global).
func (db *DB) GetAccountData(ctx context.Context, userID, roomID, dataType string) (AccountData, error) {
	d, err := getAccountData(ctx, db.read, userID, roomID, dataType)
	if err == nil && string(d.Content) == deletedAccountData {
		return d, ErrNotFound
	}
	return d, err
}

// GlobalAccountDataOfUsers reads one type of global account data of many
// users at once, 500 per query; users without it (or whose entry was
// deleted) are left out.
func (db *DB) GlobalAccountDataOfUsers(ctx context.Context, userIDs []string, dataType string) (map[string][]byte, error) {
	out := make(map[string][]byte, len(userIDs))
	for start := 0; start < len(userIDs); start += 500 {
		chunk := userIDs[start:min(start+500, len(userIDs))]
		args := []any{dataType}
		for _, u := range chunk {
			args = append(args, u)
		}
		err := queryEach(ctx, db.read, "loading account data of users", `SELECT user_id, content FROM account_data
			WHERE data_type = $1 AND room_id = '' AND user_id IN (`+placeholders(2, len(chunk))+`)`, args, func(rows *sql.Rows) error {
			var user, content string
			if err := rows.Scan(&user, &content); err != nil {
				return err
			}
			if content != deletedAccountData {
				out[user] = []byte(content)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func getAccountData(ctx context.Context, q Reader, userID, roomID, dataType string) (AccountData, error) {
	d := AccountData{RoomID: roomID, Type: dataType}
	var content string
	err := q.QueryRowContext(ctx, `SELECT stream_pos, content FROM account_data
		WHERE user_id = $1 AND room_id = $2 AND data_type = $3`, userID, roomID, dataType).Scan(&d.StreamPos, &content)
	if errors.Is(err, sql.ErrNoRows) {
		return d, ErrNotFound
	}
	if err != nil {
		return d, fmt.Errorf("loading account data %s: %w", dataType, err)
	}
	d.Content = []byte(content)
	return d, nil
}

// PutAccountData stores content as the user's account data of that type and
// returns its new stream position.
func (db *DB) PutAccountData(ctx context.Context, userID, roomID, dataType string, content []byte) (int64, error) {
	return db.UpdateAccountData(ctx, userID, roomID, dataType, func([]byte, bool) ([]byte, error) { return content, nil })
}

// UpdateAccountData is a read-modify-write of one entry in one transaction:
// change gets the current content (found false: none yet) and returns the
// new content. Concurrent updates of the same entry take turns, so none is
// lost. An error from change aborts without writing.
func (db *DB) UpdateAccountData(ctx context.Context, userID, roomID, dataType string,
	change func(old []byte, found bool) ([]byte, error)) (int64, error) {
	var pos int64
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		if err := db.lockAccountDataStream(ctx, tx); err != nil {
			return err
		}
		old, err := getAccountData(ctx, tx, userID, roomID, dataType)
		found := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		content, err := change(old.Content, found && string(old.Content) != deletedAccountData)
		if err != nil {
			return err
		}
		pos, err = putAccountData(ctx, tx, userID, roomID, dataType, content)
		return err
	})
	return pos, err
}

// putAccountData replaces an entry, moving it to a new stream position.
func putAccountData(ctx context.Context, tx *sql.Tx, userID, roomID, dataType string, content []byte) (int64, error) {
	if _, err := tx.ExecContext(ctx, `DELETE FROM account_data WHERE user_id = $1 AND room_id = $2 AND data_type = $3`,
		userID, roomID, dataType); err != nil {
		return 0, fmt.Errorf("replacing account data %s: %w", dataType, err)
	}
	var pos int64
	err := tx.QueryRowContext(ctx, `INSERT INTO account_data (user_id, room_id, data_type, content)
		VALUES ($1, $2, $3, $4) RETURNING stream_pos`, userID, roomID, dataType, string(content)).Scan(&pos)
	if err != nil {
		return 0, fmt.Errorf("storing account data %s: %w", dataType, err)
	}
	return pos, nil
}

// DeleteAccountDataTx deletes an entry inside tx, if it exists: it becomes
// the {} tombstone at a new position (0 when there was nothing to delete).
func (db *DB) DeleteAccountDataTx(ctx context.Context, tx *sql.Tx, userID, roomID, dataType string) (int64, error) {
	if err := db.lockAccountDataStream(ctx, tx); err != nil {
		return 0, err
	}
	old, err := getAccountData(ctx, tx, userID, roomID, dataType)
	if errors.Is(err, ErrNotFound) || err == nil && string(old.Content) == deletedAccountData {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return putAccountData(ctx, tx, userID, roomID, dataType, []byte(deletedAccountData))
}

// AccountDataSinceAnd is AccountDataSince plus, in the same query, the
// user's current global account data of type also (ErrNotFound when
// there is none): sync reads m.ignored_user_list with the changes.
func (db *DB) AccountDataSinceAnd(ctx context.Context, userID string, since int64, also string) ([]AccountData, AccountData, error) {
	var out []AccountData
	cur := AccountData{Type: also}
	found := false
	err := queryEach(ctx, db.read, "reading account data", `SELECT stream_pos, room_id, data_type, content FROM account_data
		WHERE user_id = $1 AND (stream_pos > $2 OR (room_id = '' AND data_type = $3)) ORDER BY stream_pos`, []any{userID, since, also}, func(rows *sql.Rows) error {
		var d AccountData
		var content string
		if err := rows.Scan(&d.StreamPos, &d.RoomID, &d.Type, &content); err != nil {
			return err
		}
		d.Content = []byte(content)
		if d.RoomID == "" && d.Type == also {
			cur, found = d, true
		}
		if d.StreamPos <= since || since == 0 && content == deletedAccountData {
			return nil
		}
		out = append(out, d)
		return nil
	})
	if err == nil && !found {
		err = ErrNotFound
	}
	return out, cur, err
}

// AccountDataSince returns the user's account data changed after position
// since (0: all of it, without deleted entries), global and per room,
// oldest change first.
func (db *DB) AccountDataSince(ctx context.Context, userID string, since int64) ([]AccountData, error) {
	out, _, err := db.AccountDataSinceAnd(ctx, userID, since, "")
	if errors.Is(err, ErrNotFound) {
		err = nil // no entry of type "": none was asked for
	}
	return out, err
}

// MaxAccountDataPos is the latest position of the account-data stream (0
// when empty): where a sync token's account-data component starts.
func (db *DB) MaxAccountDataPos(ctx context.Context) (int64, error) {
	var pos int64
	if err := db.read.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM account_data`).Scan(&pos); err != nil {
		return 0, fmt.Errorf("reading account data position: %w", err)
	}
	return pos, nil
}
