package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Relations between events (client-server API, Forming relationships between
// events): the events table keeps content.m.relates_to's event_id and
// rel_type in relates_to and rel_type. Redacted children no longer relate
// (redaction strips m.relates_to), so every query here skips them.

const relationTimeline = `NOT outlier AND NOT rejected AND NOT soft_failed AND redacted_by IS NULL`

// RelationsQuery selects the children of some parents in one room.
type RelationsQuery struct {
	RoomID    string
	Parents   []string
	RelType   string // "" for any
	EventType string // "" for any
	// A topological boundary (depth, stream_pos): backwards returns
	// children before it, newest first; forwards children at or after it,
	// oldest first.
	Depth, Pos int64
	Backwards  bool
	Limit      int
}

// Relations pages through the children of q.Parents.
func Relations(ctx context.Context, rd Reader, q RelationsQuery) ([]Event, error) {
	if len(q.Parents) == 0 {
		return nil, nil
	}
	args := []any{q.RoomID, q.Depth, q.Pos}
	where := `room_id = $1 AND ` + relationTimeline
	if q.Backwards {
		where += ` AND (depth < $2 OR (depth = $2 AND stream_pos < $3))`
	} else {
		where += ` AND (depth > $2 OR (depth = $2 AND stream_pos >= $3))`
	}
	if q.RelType != "" {
		args = append(args, q.RelType)
		where += fmt.Sprintf(` AND rel_type = $%d`, len(args))
	}
	if q.EventType != "" {
		args = append(args, q.EventType)
		where += fmt.Sprintf(` AND type = $%d`, len(args))
	}
	where += ` AND relates_to IN (` + placeholders(len(args)+1, len(q.Parents)) + `)`
	for _, p := range q.Parents {
		args = append(args, p)
	}
	order := `depth ASC, stream_pos ASC`
	if q.Backwards {
		order = `depth DESC, stream_pos DESC`
	}
	args = append(args, q.Limit)
	return queryEvents(ctx, rd, `SELECT `+eventColumns+` FROM events WHERE `+where+` ORDER BY `+order+fmt.Sprintf(` LIMIT $%d`, len(args)), args...)
}

// ChildIDs returns the IDs of the events relating to any of parents, with
// any relation type, in one room.
func ChildIDs(ctx context.Context, q Reader, roomID string, parents []string) ([]string, error) {
	if len(parents) == 0 {
		return nil, nil
	}
	args := []any{roomID}
	for _, p := range parents {
		args = append(args, p)
	}
	return queryColumn[string](ctx, q, "listing related events", `SELECT event_id FROM events WHERE room_id = $1 AND `+relationTimeline+`
		AND relates_to IN (`+placeholders(2, len(parents))+`)`, args...)
}

// ThreadSummary is what a thread root's bundled m.thread aggregation needs,
// the same for every viewer: whether the viewer participated is whether
// Senders names them (or they sent the root).
type ThreadSummary struct {
	Count     int
	LatestPos int64
	Senders   map[string]bool // who sent the thread's events
}

// ThreadSummaries summarises the threads rooted at any of roots, counting
// their events up to stream position upTo (0: all).
func ThreadSummaries(ctx context.Context, q Reader, roots []string, upTo int64) (map[string]ThreadSummary, error) {
	out := map[string]ThreadSummary{}
	if len(roots) == 0 {
		return out, nil
	}
	args := make([]any, len(roots))
	for i, r := range roots {
		args[i] = r
	}
	bound := upToBound(&args, upTo)
	// One row per root and sender: a thread has few senders, and the
	// summary serves every viewer (rooms' bundle cache).
	err := queryEach(ctx, q, "summarising threads", `SELECT relates_to, sender, COUNT(*), MAX(stream_pos)
		FROM events WHERE rel_type = 'm.thread' AND `+relationTimeline+` AND relates_to IN (`+placeholders(1, len(roots))+`)`+bound+`
		GROUP BY relates_to, sender`, args, func(rows *sql.Rows) error {
		var root, sender string
		var count int
		var latest int64
		if err := rows.Scan(&root, &sender, &count, &latest); err != nil {
			return err
		}
		s := out[root]
		if s.Senders == nil {
			s.Senders = map[string]bool{}
		}
		s.Count += count
		s.LatestPos = max(s.LatestPos, latest)
		s.Senders[sender] = true
		out[root] = s
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// EventsAtPositions loads events by stream position.
func EventsAtPositions(ctx context.Context, q Reader, positions []int64) ([]Event, error) {
	if len(positions) == 0 {
		return nil, nil
	}
	args := make([]any, len(positions))
	for i, p := range positions {
		args[i] = p
	}
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events WHERE stream_pos IN (`+placeholders(1, len(positions))+`)`, args...)
}

// EditsAndReferences returns the m.replace and m.reference children of
// parents (the few events bundled whole or by ID) up to stream position
// upTo (0: all).
func EditsAndReferences(ctx context.Context, q Reader, parents []string, upTo int64) ([]Event, error) {
	if len(parents) == 0 {
		return nil, nil
	}
	args := make([]any, len(parents))
	for i, p := range parents {
		args[i] = p
	}
	bound := upToBound(&args, upTo)
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events WHERE rel_type IN ('m.replace', 'm.reference') AND `+relationTimeline+`
		AND relates_to IN (`+placeholders(1, len(parents))+`)`+bound+` ORDER BY stream_pos`, args...)
}

// upToBound adds upTo to args and returns the condition bounding
// stream_pos by it, or nothing for 0.
func upToBound(args *[]any, upTo int64) string {
	if upTo <= 0 {
		return ""
	}
	*args = append(*args, upTo)
	return fmt.Sprintf(` AND stream_pos <= $%d`, len(*args))
}

// ThreadRoot is a thread of a room with the position of its latest event.
type ThreadRoot struct {
	RootID    string
	LatestPos int64
}

// Threads lists a room's threads by latest activity, newest first, whose
// latest event is before stream position before (0: no bound). With
// participant set, only threads whose root or some reply they sent.
func Threads(ctx context.Context, q Reader, roomID, participant string, before int64, limit int) ([]ThreadRoot, error) {
	args := []any{roomID}
	having := ""
	if before > 0 {
		args = append(args, before)
		having = fmt.Sprintf(` HAVING MAX(t.stream_pos) < $%d`, len(args))
	}
	where := ""
	if participant != "" {
		args = append(args, participant)
		n := len(args)
		where = fmt.Sprintf(` AND (EXISTS (SELECT 1 FROM events r WHERE r.event_id = t.relates_to AND r.sender = $%d)
			OR EXISTS (SELECT 1 FROM events p WHERE p.relates_to = t.relates_to AND p.rel_type = 'm.thread' AND p.sender = $%d AND p.redacted_by IS NULL))`, n, n)
	}
	args = append(args, limit)
	return queryList(ctx, q, "listing threads", `SELECT t.relates_to, MAX(t.stream_pos) AS latest FROM events t
		WHERE t.room_id = $1 AND t.rel_type = 'm.thread' AND NOT t.outlier AND NOT t.rejected AND NOT t.soft_failed AND t.redacted_by IS NULL`+where+`
		GROUP BY t.relates_to`+having+fmt.Sprintf(` ORDER BY latest DESC LIMIT $%d`, len(args)), func(rows *sql.Rows, t *ThreadRoot) error {
		return rows.Scan(&t.RootID, &t.LatestPos)
	}, args...)
}

// EventNearTimestamp returns the room's timeline event closest to ts in one
// direction: the first at or after ts (forwards) or the last at or before
// it (backwards). ErrNotFound if there is none.
func EventNearTimestamp(ctx context.Context, q Reader, roomID string, ts int64, forwards bool) (Event, error) {
	query := `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND NOT outlier AND NOT rejected AND NOT soft_failed
		AND origin_server_ts <= $2 ORDER BY origin_server_ts DESC, stream_pos DESC LIMIT 1`
	if forwards {
		query = `SELECT ` + eventColumns + ` FROM events WHERE room_id = $1 AND NOT outlier AND NOT rejected AND NOT soft_failed
		AND origin_server_ts >= $2 ORDER BY origin_server_ts ASC, stream_pos ASC LIMIT 1`
	}
	e, err := scanEvent(q.QueryRowContext(ctx, query, roomID, ts))
	if errors.Is(err, sql.ErrNoRows) {
		return e, ErrNotFound
	}
	if err != nil {
		return e, fmt.Errorf("finding event by timestamp: %w", err)
	}
	return e, nil
}
