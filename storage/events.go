package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Room is a rooms row: the head of a room's DAG.
type Room struct {
	RoomID          string
	Version         string
	Extremities     []string
	MaxDepth        int64
	CurrentSnapshot int64
	Published       bool
	CreatedTS       int64
}

// Event is an events row. JSON is the full PDU; the other columns are what
// queries filter and order by.
type Event struct {
	StreamPos      int64
	EventID        string
	RoomID         string
	Type           string
	StateKey       *string
	Sender         string
	Depth          int64
	OriginTS       int64
	Membership     *string
	SnapshotBefore int64
	SnapshotAfter  int64
	Rejected       bool
	SoftFailed     bool
	Outlier        bool
	RedactedBy     *string
	RelatesTo      *string
	RelType        *string
	PrevContent    *string
	PrevSender     *string
	ReplacesState  *string
	SenderDevice   *string
	TxnID          *string
	JSON           []byte
}

// StateKey is a (type, state_key) pair.
type StateKey struct{ Type, StateKey string }

// InsertRoom creates the rooms row of a new room.
func InsertRoom(ctx context.Context, tx *sql.Tx, r Room) error {
	ext, _ := json.Marshal(r.Extremities)
	_, err := tx.ExecContext(ctx, `INSERT INTO rooms (room_id, room_version, extremities, max_depth, current_snapshot, published, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, r.RoomID, r.Version, string(ext), r.MaxDepth, r.CurrentSnapshot, r.Published, r.CreatedTS)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	if err != nil {
		return fmt.Errorf("inserting room: %w", err)
	}
	return nil
}

const roomColumns = `room_id, room_version, extremities, max_depth, current_snapshot, published, created_ts`

func scanRoom(row *sql.Row) (Room, error) {
	var r Room
	var ext string
	err := row.Scan(&r.RoomID, &r.Version, &ext, &r.MaxDepth, &r.CurrentSnapshot, &r.Published, &r.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("loading room: %w", err)
	}
	if err := json.Unmarshal([]byte(ext), &r.Extremities); err != nil {
		return r, fmt.Errorf("room %s extremities: %w", r.RoomID, err)
	}
	return r, nil
}

// GetRoom loads a room's head.
func GetRoom(ctx context.Context, q Reader, roomID string) (Room, error) {
	return scanRoom(q.QueryRowContext(ctx, `SELECT `+roomColumns+` FROM rooms WHERE room_id = $1`, roomID))
}

// LockRoom loads a room's head inside a write transaction, locking the row
// on PostgreSQL so that processes sharing the database take turns on a room.
// (SQLite's single writer already serialises all write transactions.)
func (db *DB) LockRoom(ctx context.Context, tx *sql.Tx, roomID string) (Room, error) {
	q := `SELECT ` + roomColumns + ` FROM rooms WHERE room_id = $1`
	if db.dialect == Postgres {
		q += " FOR UPDATE"
	}
	return scanRoom(tx.QueryRowContext(ctx, q, roomID))
}

// UpdateRoomHead records new extremities, depth and current state.
func UpdateRoomHead(ctx context.Context, tx *sql.Tx, roomID string, extremities []string, maxDepth, snapshot int64) error {
	ext, _ := json.Marshal(extremities)
	_, err := tx.ExecContext(ctx, `UPDATE rooms SET extremities = $1, max_depth = $2, current_snapshot = $3 WHERE room_id = $4`,
		string(ext), maxDepth, snapshot, roomID)
	if err != nil {
		return fmt.Errorf("updating room head: %w", err)
	}
	return nil
}

// SetRoomPublished sets the room's visibility in the public directory.
func (db *DB) SetRoomPublished(ctx context.Context, roomID string, published bool) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE rooms SET published = $1 WHERE room_id = $2`, published, roomID)
		return err
	})
}

// LockEventStream serialises event inserts across processes sharing one
// PostgreSQL, so stream positions become visible in order and a reader
// never skips an event committed late with a lower position.
func (db *DB) LockEventStream(ctx context.Context, tx *sql.Tx) error {
	if db.dialect != Postgres {
		return nil
	}
	_, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7460120)")
	return err
}

// InsertEvent stores an event and returns its stream position.
func InsertEvent(ctx context.Context, tx *sql.Tx, e Event) (int64, error) {
	var pos int64
	err := tx.QueryRowContext(ctx, `INSERT INTO events (event_id, room_id, type, state_key, sender, depth, origin_server_ts,
		membership, snapshot_before, snapshot_after, rejected, soft_failed, outlier, relates_to, rel_type,
		prev_content, prev_sender, replaces_state, sender_device, txn_id, json)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)
		RETURNING stream_pos`,
		e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginTS, e.Membership,
		e.SnapshotBefore, e.SnapshotAfter, e.Rejected, e.SoftFailed, e.Outlier, e.RelatesTo, e.RelType,
		e.PrevContent, e.PrevSender, e.ReplacesState, e.SenderDevice, e.TxnID, string(e.JSON)).Scan(&pos)
	if isUniqueViolation(err) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("inserting event: %w", err)
	}
	return pos, nil
}

// InsertOutliers stores events outside the timeline (a joined room's
// state and auth chain), many rows per statement, skipping any event
// already stored: with ON CONFLICT in SQL, as another transaction may be
// storing the same auth event at the same time and PostgreSQL aborts a
// transaction on a unique violation.
func InsertOutliers(ctx context.Context, tx *sql.Tx, evs []Event) error {
	const cols, perStmt = 20, 10 // 200 parameters: see InsertSnapshot
	for start := 0; start < len(evs); start += perStmt {
		chunk := evs[start:min(start+perStmt, len(evs))]
		var b strings.Builder
		b.WriteString(`INSERT INTO events (event_id, room_id, type, state_key, sender, depth, origin_server_ts,
			membership, snapshot_before, snapshot_after, rejected, soft_failed, relates_to, rel_type,
			prev_content, prev_sender, replaces_state, sender_device, txn_id, json, outlier) VALUES `)
		args := make([]any, 0, len(chunk)*cols)
		for i, e := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(" + placeholders(i*cols+1, cols) + ", TRUE)")
			args = append(args, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginTS, e.Membership,
				e.SnapshotBefore, e.SnapshotAfter, e.Rejected, e.SoftFailed, e.RelatesTo, e.RelType,
				e.PrevContent, e.PrevSender, e.ReplacesState, e.SenderDevice, e.TxnID, string(e.JSON))
		}
		b.WriteString(" ON CONFLICT (event_id) DO NOTHING")
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("inserting outliers: %w", err)
		}
	}
	return nil
}

// MarkRedacted records that redaction redacts eventID.
func MarkRedacted(ctx context.Context, tx *sql.Tx, eventID, redactionID string) error {
	_, err := tx.ExecContext(ctx, `UPDATE events SET redacted_by = $1 WHERE event_id = $2 AND redacted_by IS NULL`, redactionID, eventID)
	return err
}

const eventColumns = `stream_pos, event_id, room_id, type, state_key, sender, depth, origin_server_ts, membership,
	snapshot_before, snapshot_after, rejected, soft_failed, outlier, redacted_by, relates_to, rel_type,
	prev_content, prev_sender, replaces_state, sender_device, txn_id, json`

type scanner interface{ Scan(dest ...any) error }

func scanEvent(s scanner) (Event, error) {
	var e Event
	var js string
	err := s.Scan(&e.StreamPos, &e.EventID, &e.RoomID, &e.Type, &e.StateKey, &e.Sender, &e.Depth, &e.OriginTS, &e.Membership,
		&e.SnapshotBefore, &e.SnapshotAfter, &e.Rejected, &e.SoftFailed, &e.Outlier, &e.RedactedBy, &e.RelatesTo, &e.RelType,
		&e.PrevContent, &e.PrevSender, &e.ReplacesState, &e.SenderDevice, &e.TxnID, &js)
	e.JSON = []byte(js)
	return e, err
}

func queryEvents(ctx context.Context, q Reader, query string, args ...any) ([]Event, error) {
	return queryList(ctx, q, "querying events", query, func(rows *sql.Rows, e *Event) (err error) {
		*e, err = scanEvent(rows)
		return err
	}, args...)
}

// GetEvent loads one event by ID.
func GetEvent(ctx context.Context, q Reader, eventID string) (Event, error) {
	e, err := scanEvent(q.QueryRowContext(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = $1`, eventID))
	if errors.Is(err, sql.ErrNoRows) {
		return e, ErrNotFound
	}
	if err != nil {
		return e, fmt.Errorf("loading event: %w", err)
	}
	return e, nil
}

// GetEvents loads the events with the given IDs that exist, in no order.
func GetEvents(ctx context.Context, q Reader, eventIDs []string) ([]Event, error) {
	if len(eventIDs) == 0 {
		return nil, nil
	}
	var out []Event
	// Chunk to stay under both engines' parameter limits.
	for start := 0; start < len(eventIDs); start += 500 {
		chunk := eventIDs[start:min(start+500, len(eventIDs))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		evs, err := queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events WHERE event_id IN (`+placeholders(1, len(chunk))+`)`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

// placeholders returns "$from, $from+1, ..." n times.
func placeholders(from, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "$%d", from+i)
	}
	return b.String()
}

// RoomEventsTopological pages through a room's timeline (non-outlier,
// non-rejected, non-soft-failed events) in topological order, (depth,
// stream_pos). A position is a boundary between events: backwards returns
// events before (depth, pos), newest first; forwards returns events at or
// after it, oldest first.
func RoomEventsTopological(ctx context.Context, q Reader, roomID string, depth, pos, stream int64, backwards bool, limit int) ([]Event, error) {
	if stream != 0 {
		// From a point in the stream (see rooms.TopoToken.Stream): the
		// events persisted before it (backwards) or from it on, in
		// topological order.
		if backwards {
			return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
				WHERE room_id = $1 AND NOT outlier AND NOT rejected AND NOT soft_failed AND stream_pos < $2
				ORDER BY depth DESC, stream_pos DESC LIMIT $3`, roomID, stream, limit)
		}
		return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
			WHERE room_id = $1 AND NOT outlier AND NOT rejected AND NOT soft_failed AND stream_pos >= $2
			ORDER BY depth ASC, stream_pos ASC LIMIT $3`, roomID, stream, limit)
	}
	if backwards {
		return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
			WHERE room_id = $1 AND NOT outlier AND NOT rejected AND NOT soft_failed
			AND (depth < $2 OR (depth = $2 AND stream_pos < $3))
			ORDER BY depth DESC, stream_pos DESC LIMIT $4`, roomID, depth, pos, limit)
	}
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND NOT outlier AND NOT rejected AND NOT soft_failed
		AND (depth > $2 OR (depth = $2 AND stream_pos >= $3))
		ORDER BY depth ASC, stream_pos ASC LIMIT $4`, roomID, depth, pos, limit)
}

// RoomEventsStream returns a room's timeline events with stream positions in
// (from, to], newest first, at most limit.
func RoomEventsStream(ctx context.Context, q Reader, roomID string, from, to int64, limit int) ([]Event, error) {
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND stream_pos > $2 AND stream_pos <= $3 AND NOT outlier AND NOT rejected AND NOT soft_failed
		ORDER BY stream_pos DESC LIMIT $4`, roomID, from, to, limit)
}

// MaxStreamPos is the highest stream position persisted.
func MaxStreamPos(ctx context.Context, q Reader) (int64, error) {
	var pos int64
	err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(stream_pos), 0) FROM events`).Scan(&pos)
	return pos, err
}

// InsertSnapshot stores a state snapshot: the full state when parent is 0,
// else the entries that differ from parent.
func InsertSnapshot(ctx context.Context, tx *sql.Tx, roomID string, parent int64, chainLen int, entries map[StateKey]string) (int64, error) {
	var parentArg any
	if parent != 0 {
		parentArg = parent
	}
	var id int64
	if err := tx.QueryRowContext(ctx, `INSERT INTO state_snapshots (room_id, parent_id, chain_len) VALUES ($1, $2, $3) RETURNING snapshot_id`,
		roomID, parentArg, chainLen).Scan(&id); err != nil {
		return 0, fmt.Errorf("inserting snapshot: %w", err)
	}
	// Many rows per statement: a full copy of a big room's state has tens
	// of thousands of entries. Not more: the SQLite driver looks each
	// numbered parameter up in a list, which costs the square of their
	// number per statement (about 200 is the sweet spot).
	const cols, perStmt = 4, 50
	args := make([]any, 0, min(len(entries), perStmt)*cols)
	flush := func() error {
		if len(args) == 0 {
			return nil
		}
		var b strings.Builder
		b.WriteString(`INSERT INTO state_snapshot_entries (snapshot_id, type, state_key, event_id) VALUES `)
		for i := 0; i < len(args)/cols; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(" + placeholders(i*cols+1, cols) + ")")
		}
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("inserting snapshot entries: %w", err)
		}
		args = args[:0]
		return nil
	}
	for k, ev := range entries {
		if args = append(args, id, k.Type, k.StateKey, ev); len(args) == perStmt*cols {
			if err := flush(); err != nil {
				return 0, err
			}
		}
	}
	if err := flush(); err != nil {
		return 0, err
	}
	return id, nil
}

// SnapshotInfo is a snapshot's place in its delta chain.
type SnapshotInfo struct {
	Parent   int64
	ChainLen int
}

// LoadSnapshot assembles the full state of a snapshot by applying its delta
// chain from the full snapshot at its root down to itself, in one query.
func LoadSnapshot(ctx context.Context, q Reader, snapshotID int64) (map[StateKey]string, SnapshotInfo, error) {
	state := map[StateKey]string{}
	var info SnapshotInfo
	if snapshotID == 0 {
		return state, info, nil
	}
	var parent sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT parent_id, chain_len FROM state_snapshots WHERE snapshot_id = $1`, snapshotID).
		Scan(&parent, &info.ChainLen); err != nil {
		return nil, info, fmt.Errorf("loading snapshot %d: %w", snapshotID, err)
	}
	info.Parent = parent.Int64
	err := queryEach(ctx, q, fmt.Sprintf("loading snapshot chain %d", snapshotID), `WITH RECURSIVE chain(id, parent, lvl) AS (
			SELECT snapshot_id, parent_id, 0 FROM state_snapshots WHERE snapshot_id = $1
			UNION ALL
			SELECT s.snapshot_id, s.parent_id, c.lvl + 1 FROM state_snapshots s JOIN chain c ON s.snapshot_id = c.parent
		)
		SELECT e.type, e.state_key, e.event_id FROM chain c JOIN state_snapshot_entries e ON e.snapshot_id = c.id
		ORDER BY c.lvl DESC`, []any{snapshotID}, func(rows *sql.Rows) error {
		var k StateKey
		var ev string
		if err := rows.Scan(&k.Type, &k.StateKey, &ev); err != nil {
			return err
		}
		state[k] = ev
		return nil
	})
	if err != nil {
		return nil, info, err
	}
	return state, info, nil
}

// SnapshotChain lists a snapshot and its ancestors, nearest first, to the
// full copy at its root, with the snapshot's own info: a reader holding
// one of the ancestors need load only the deltas after it
// (ApplySnapshotDeltas).
func SnapshotChain(ctx context.Context, q Reader, snapshotID int64) ([]int64, SnapshotInfo, error) {
	var chain []int64
	var info SnapshotInfo
	err := queryEach(ctx, q, fmt.Sprintf("loading snapshot chain %d", snapshotID), `WITH RECURSIVE chain(id, parent, len, lvl) AS (
			SELECT snapshot_id, parent_id, chain_len, 0 FROM state_snapshots WHERE snapshot_id = $1
			UNION ALL
			SELECT s.snapshot_id, s.parent_id, s.chain_len, c.lvl + 1 FROM state_snapshots s JOIN chain c ON s.snapshot_id = c.parent
		)
		SELECT id, parent, len FROM chain ORDER BY lvl`, []any{snapshotID}, func(rows *sql.Rows) error {
		var id int64
		var parent sql.NullInt64
		var n int
		if err := rows.Scan(&id, &parent, &n); err != nil {
			return err
		}
		if len(chain) == 0 {
			info = SnapshotInfo{Parent: parent.Int64, ChainLen: n}
		}
		chain = append(chain, id)
		return nil
	})
	if err == nil && len(chain) == 0 {
		err = fmt.Errorf("loading snapshot %d: %w", snapshotID, sql.ErrNoRows)
	}
	return chain, info, err
}

// ApplySnapshotDeltas applies the entries of the snapshots deltas (a part
// of a SnapshotChain, nearest first) to state, the farthest first, as
// LoadSnapshot does.
func ApplySnapshotDeltas(ctx context.Context, q Reader, deltas []int64, state map[StateKey]string) error {
	if len(deltas) == 0 {
		return nil
	}
	order := make(map[int64]int, len(deltas))
	args := make([]any, len(deltas))
	for i, id := range deltas {
		order[id], args[i] = i, id
	}
	type entry struct {
		at int
		k  StateKey
		ev string
	}
	var entries []entry
	err := queryEach(ctx, q, "loading snapshot deltas", `SELECT snapshot_id, type, state_key, event_id FROM state_snapshot_entries
		WHERE snapshot_id IN (`+placeholders(1, len(deltas))+`)`, args, func(rows *sql.Rows) error {
		var id int64
		var e entry
		if err := rows.Scan(&id, &e.k.Type, &e.k.StateKey, &e.ev); err != nil {
			return err
		}
		e.at = order[id]
		entries = append(entries, e)
		return nil
	})
	if err != nil {
		return err
	}
	sort.SliceStable(entries, func(i, j int) bool { return entries[i].at > entries[j].at })
	for _, e := range entries {
		state[e.k] = e.ev
	}
	return nil
}

// SnapshotEntries returns the entries of a snapshot for the given keys
// only (absent keys are left out): the lookups of history visibility at
// an event need two entries of a state that may have thousands.
func SnapshotEntries(ctx context.Context, q Reader, snapshotID int64, keys ...StateKey) (map[StateKey]string, error) {
	out := map[StateKey]string{}
	if snapshotID == 0 || len(keys) == 0 {
		return out, nil
	}
	args := []any{snapshotID}
	var conds []string
	for _, k := range keys {
		conds = append(conds, fmt.Sprintf("(e.type = $%d AND e.state_key = $%d)", len(args)+1, len(args)+2))
		args = append(args, k.Type, k.StateKey)
	}
	err := queryEach(ctx, q, fmt.Sprintf("loading snapshot entries %d", snapshotID), `WITH RECURSIVE chain(id, parent, lvl) AS (
			SELECT snapshot_id, parent_id, 0 FROM state_snapshots WHERE snapshot_id = $1
			UNION ALL
			SELECT s.snapshot_id, s.parent_id, c.lvl + 1 FROM state_snapshots s JOIN chain c ON s.snapshot_id = c.parent
		)
		SELECT e.type, e.state_key, e.event_id FROM chain c JOIN state_snapshot_entries e ON e.snapshot_id = c.id
		WHERE `+strings.Join(conds, " OR ")+`
		ORDER BY c.lvl DESC`, args, func(rows *sql.Rows) error {
		var k StateKey
		var ev string
		if err := rows.Scan(&k.Type, &k.StateKey, &ev); err != nil {
			return err
		}
		out[k] = ev
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// SetCurrentState replaces one entry of a room's materialised current state.
func SetCurrentState(ctx context.Context, tx *sql.Tx, roomID string, k StateKey, eventID string, membership *string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO current_state (room_id, type, state_key, event_id, membership) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership`,
		roomID, k.Type, k.StateKey, eventID, membership)
	if err != nil {
		return fmt.Errorf("updating current state: %w", err)
	}
	return nil
}

// CurrentStateEntry is one row of SetCurrentStates.
type CurrentStateEntry struct {
	Key        StateKey
	EventID    string
	Membership *string
}

// SetCurrentStates is SetCurrentState for many keys (each at most once),
// many rows per statement: a joined or resynced big room sets tens of
// thousands at once.
func SetCurrentStates(ctx context.Context, tx *sql.Tx, roomID string, entries []CurrentStateEntry) error {
	const cols, perStmt = 5, 40 // 200 parameters: see InsertSnapshot
	for start := 0; start < len(entries); start += perStmt {
		chunk := entries[start:min(start+perStmt, len(entries))]
		var b strings.Builder
		b.WriteString(`INSERT INTO current_state (room_id, type, state_key, event_id, membership) VALUES `)
		args := make([]any, 0, len(chunk)*cols)
		for i, e := range chunk {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(" + placeholders(i*cols+1, cols) + ")")
			args = append(args, roomID, e.Key.Type, e.Key.StateKey, e.EventID, e.Membership)
		}
		b.WriteString(` ON CONFLICT (room_id, type, state_key) DO UPDATE SET event_id = excluded.event_id, membership = excluded.membership`)
		if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
			return fmt.Errorf("updating current state: %w", err)
		}
	}
	return nil
}

// DeleteCurrentState removes an entry (state resolution may drop one).
func DeleteCurrentState(ctx context.Context, tx *sql.Tx, roomID string, k StateKey) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM current_state WHERE room_id = $1 AND type = $2 AND state_key = $3`, roomID, k.Type, k.StateKey)
	return err
}

// Membership is a user's current membership of a room.
type Membership struct {
	RoomID     string
	UserID     string
	Membership string
	EventID    string
}

// RoomsOfUser lists the rooms where the user's current membership is one of
// the given values.
func RoomsOfUser(ctx context.Context, q Reader, userID string, memberships ...string) ([]Membership, error) {
	args := []any{userID}
	for _, m := range memberships {
		args = append(args, m)
	}
	return queryList(ctx, q, "listing rooms of user", `SELECT room_id, membership, event_id FROM current_state
		WHERE type = 'm.room.member' AND state_key = $1 AND membership IN (`+placeholders(2, len(memberships))+`)`, func(rows *sql.Rows, m *Membership) error {
		m.UserID = userID
		return rows.Scan(&m.RoomID, &m.Membership, &m.EventID)
	}, args...)
}

// JoinedHere reports whether a room has a joined member of server and,
// when it has none, whether it has one of another server, without listing
// the members.
func JoinedHere(ctx context.Context, q Reader, roomID, server string) (local, remote bool, err error) {
	if local, err = ServerJoinedNow(ctx, q, roomID, server); err != nil || local {
		return local, false, err
	}
	remote, err = serverJoined(ctx, q, roomID, server, false)
	return false, remote, err
}

// MembersOfRoom lists the current memberships of a room.
func MembersOfRoom(ctx context.Context, q Reader, roomID string) ([]Membership, error) {
	return queryList(ctx, q, "listing members", `SELECT state_key, membership, event_id FROM current_state
		WHERE room_id = $1 AND type = 'm.room.member'`, func(rows *sql.Rows, m *Membership) error {
		m.RoomID = roomID
		var ms sql.NullString
		if err := rows.Scan(&m.UserID, &ms, &m.EventID); err != nil {
			return err
		}
		m.Membership = ms.String
		return nil
	}, roomID)
}

// RoomSnapshot returns a room's current state snapshot.
func RoomSnapshot(ctx context.Context, q Reader, roomID string) (int64, error) {
	var snap int64
	err := q.QueryRowContext(ctx, `SELECT current_snapshot FROM rooms WHERE room_id = $1`, roomID).Scan(&snap)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("reading room snapshot: %w", err)
	}
	return snap, nil
}

// JoinedAtSnapshot returns a room's joined members with its current
// snapshot, read in one statement so the two agree; ErrNotFound when
// there is no such room.
func JoinedAtSnapshot(ctx context.Context, q Reader, roomID string) (snapshot int64, joined []string, err error) {
	found := false
	err = queryEach(ctx, q, "listing joined members", `SELECT r.current_snapshot, cs.state_key FROM rooms r
		LEFT JOIN current_state cs ON cs.room_id = r.room_id AND cs.type = 'm.room.member' AND cs.membership = 'join'
		WHERE r.room_id = $1`, []any{roomID}, func(rows *sql.Rows) error {
		var user sql.NullString
		if err := rows.Scan(&snapshot, &user); err != nil {
			return err
		}
		found = true
		if user.Valid {
			joined = append(joined, user.String)
		}
		return nil
	})
	if err == nil && !found {
		err = ErrNotFound
	}
	return snapshot, joined, err
}

// LookupTxn returns the event ID a client transaction produced, if any.
func LookupTxn(ctx context.Context, q Reader, userID, deviceID, scope, txnID string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT event_id FROM client_txns WHERE user_id = $1 AND device_id = $2 AND scope = $3 AND txn_id = $4`,
		userID, deviceID, scope, txnID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return id, err
}

// InsertTxn records the event a client transaction produced.
func InsertTxn(ctx context.Context, tx *sql.Tx, userID, deviceID, scope, txnID, eventID string, ts int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO client_txns (user_id, device_id, scope, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5, $6)`,
		userID, deviceID, scope, txnID, eventID, ts)
	if isUniqueViolation(err) {
		return ErrConflict
	}
	return err
}

// RoomsWithEventsBetween returns which of the given rooms have timeline
// events with stream positions in (from, to].
func RoomsWithEventsBetween(ctx context.Context, q Reader, from, to int64) (map[string]bool, error) {
	return querySet[string](ctx, q, "rooms with new events", `SELECT DISTINCT room_id FROM events WHERE stream_pos > $1 AND stream_pos <= $2`, from, to)
}

// RoomsWithEventsAndMembersBetween is RoomsWithEventsBetween, and whether
// any of those events is an m.room.member event (sync looks for
// membership changes only then).
func RoomsWithEventsAndMembersBetween(ctx context.Context, q Reader, from, to int64) (map[string]bool, bool, error) {
	out, members := map[string]bool{}, false
	err := queryEach(ctx, q, "rooms with new events", `SELECT room_id, MAX(CASE WHEN type = 'm.room.member' THEN 1 ELSE 0 END) FROM events
		WHERE stream_pos > $1 AND stream_pos <= $2 GROUP BY room_id`, []any{from, to}, func(rows *sql.Rows) error {
		var room string
		var m int
		if err := rows.Scan(&room, &m); err != nil {
			return err
		}
		out[room], members = true, members || m == 1
		return nil
	})
	return out, members, err
}

// SnapshotAtStream returns the state snapshot of a room after its last
// event at or before stream position pos (0 if none).
func SnapshotAtStream(ctx context.Context, q Reader, roomID string, pos int64) (int64, error) {
	var snap int64
	err := q.QueryRowContext(ctx, `SELECT snapshot_after FROM events WHERE room_id = $1 AND stream_pos <= $2 AND NOT outlier AND NOT rejected
		ORDER BY stream_pos DESC LIMIT 1`, roomID, pos).Scan(&snap)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return snap, err
}

// IsForgotten reports whether the user forgot the room.
func IsForgotten(ctx context.Context, q Reader, userID, roomID string) (bool, error) {
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, userID, roomID).Scan(&n)
	return n > 0, err
}

// DeleteOutlier removes an outlier copy of an event that is now being
// persisted into the timeline.
func DeleteOutlier(ctx context.Context, tx *sql.Tx, eventID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM events WHERE event_id = $1 AND outlier`, eventID)
	return err
}

// PutRemoteInvite records the stripped state of an invite to a room we are
// not in.
func PutRemoteInvite(ctx context.Context, tx *sql.Tx, roomID, userID, eventID string, stripped []byte) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO remote_invites (room_id, user_id, event_id, stripped_state) VALUES ($1, $2, $3, $4)
		ON CONFLICT (room_id, user_id) DO UPDATE SET event_id = excluded.event_id, stripped_state = excluded.stripped_state`,
		roomID, userID, eventID, string(stripped))
	return err
}

// RemoteInviteState returns the stored stripped state of an invite.
func RemoteInviteState(ctx context.Context, q Reader, roomID, userID string) ([]byte, error) {
	var s string
	err := q.QueryRowContext(ctx, `SELECT stripped_state FROM remote_invites WHERE room_id = $1 AND user_id = $2`, roomID, userID).Scan(&s)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(s), err
}

// CurrentMembership returns a user's membership of a room from the
// materialised current state ("" if none).
func CurrentMembership(ctx context.Context, q Reader, roomID, userID string) (membership, eventID string, err error) {
	var m sql.NullString
	err = q.QueryRowContext(ctx, `SELECT membership, event_id FROM current_state WHERE room_id = $1 AND type = 'm.room.member' AND state_key = $2`,
		roomID, userID).Scan(&m, &eventID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", nil
	}
	return m.String, eventID, err
}

// EarliestTimelineEvents returns a room's first timeline events in
// topological order, at most limit: where backwards pagination ends.
func EarliestTimelineEvents(ctx context.Context, q Reader, roomID string, limit int) ([]Event, error) {
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE room_id = $1 AND NOT outlier AND NOT rejected AND NOT soft_failed
		ORDER BY depth ASC, stream_pos ASC LIMIT $2`, roomID, limit)
}

// InsertHistoricalEvent stores an event fetched from the room's past
// (backfill) below every stream position in use: negative, decreasing, so
// topological pagination finds it by depth while sync, which reads forward
// from positive positions, never reports it as new. The caller holds
// LockEventStream.
func InsertHistoricalEvent(ctx context.Context, tx *sql.Tx, e Event) (int64, error) {
	var lowest int64
	if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MIN(stream_pos), 0) FROM events`).Scan(&lowest); err != nil {
		return 0, fmt.Errorf("lowest stream position: %w", err)
	}
	pos := min(lowest, 0) - 1
	_, err := tx.ExecContext(ctx, `INSERT INTO events (stream_pos, event_id, room_id, type, state_key, sender, depth, origin_server_ts,
		membership, snapshot_before, snapshot_after, rejected, soft_failed, outlier, relates_to, rel_type,
		prev_content, prev_sender, replaces_state, sender_device, txn_id, json)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`,
		pos, e.EventID, e.RoomID, e.Type, e.StateKey, e.Sender, e.Depth, e.OriginTS, e.Membership,
		e.SnapshotBefore, e.SnapshotAfter, e.Rejected, e.SoftFailed, e.Outlier, e.RelatesTo, e.RelType,
		e.PrevContent, e.PrevSender, e.ReplacesState, e.SenderDevice, e.TxnID, string(e.JSON))
	if isUniqueViolation(err) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, fmt.Errorf("inserting historical event: %w", err)
	}
	return pos, nil
}

// ServerJoinedNow reports whether a user of server is joined to the room.
func ServerJoinedNow(ctx context.Context, q Reader, roomID, server string) (bool, error) {
	return serverJoined(ctx, q, roomID, server, true)
}

// serverJoined reports whether a room has a joined member of server (of
// another server: !of), stopping at the first.
func serverJoined(ctx context.Context, q Reader, roomID, server string, of bool) (bool, error) {
	suffix := ":" + server
	cond := `substr(state_key, length(state_key) - $2 + 1) = $3`
	if !of {
		cond = `NOT (` + cond + `)`
	}
	var n int
	err := q.QueryRowContext(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM current_state WHERE room_id = $1 AND type = 'm.room.member'
		AND membership = 'join' AND `+cond+` LIMIT 1) x`, roomID, len(suffix), suffix).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("checking if %s is in %s: %w", server, roomID, err)
	}
	return n > 0, nil
}

// EventJSON is an event's stored JSON, and whether it was redacted since
// (the JSON is then the original's, to be redacted by the reader).
type EventJSON struct {
	EventID  string
	JSON     []byte
	Redacted bool
}

// GetEventJSONs reads the stored JSON of events, in no particular order;
// missing IDs are left out. Only the columns needed to send events on as
// they are (a big room's state to another server), not the whole row.
func GetEventJSONs(ctx context.Context, q Reader, eventIDs []string) ([]EventJSON, error) {
	var out []EventJSON
	for start := 0; start < len(eventIDs); start += 500 {
		chunk := eventIDs[start:min(start+500, len(eventIDs))]
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		err := queryEach(ctx, q, "reading events' JSON", `SELECT event_id, json, redacted_by IS NOT NULL FROM events WHERE event_id IN (`+placeholders(1, len(chunk))+`)`, args, func(rows *sql.Rows) error {
			var e EventJSON
			if err := rows.Scan(&e.EventID, &e.JSON, &e.Redacted); err != nil {
				return err
			}
			out = append(out, e)
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}
