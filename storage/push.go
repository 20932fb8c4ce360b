package storage

import (
	"context"
	"database/sql"
	"fmt"
	"maps"
	"math"
	"strings"
)

// Push notifications: notifications, pushers, the per-pusher delivery queue
// and the evaluation progress (migration 0007).

// Notification is one recipient's own outcome for an event, stored where
// it differs from their rule group's (see PushAction), or one of the rows
// listed by GET /notifications.
type Notification struct {
	UserID    string
	RoomID    string
	EventID   string
	StreamPos int64
	ThreadID  string // "main" or the thread root
	Notify    bool
	Highlight bool
	// GroupNotify and GroupHighlight are what the recipient's group row
	// counted for them (false when they were in no group's range).
	GroupNotify, GroupHighlight bool
	Actions                     string // JSON
	TS                          int64
}

// InsertNotification records a recipient's own outcome; one that exists
// is kept.
func InsertNotification(ctx context.Context, tx *sql.Tx, n Notification) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO notifications (user_id, room_id, event_id, stream_pos, thread_id, notify, highlight,
			group_notify, group_highlight, actions, ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT (user_id, event_id) DO NOTHING`,
		n.UserID, n.RoomID, n.EventID, n.StreamPos, n.ThreadID, n.Notify, n.Highlight, n.GroupNotify, n.GroupHighlight, n.Actions, n.TS)
	if err != nil {
		return fmt.Errorf("storing notification: %w", err)
	}
	return nil
}

// ReadPositions returns, per receipt thread ("" for unthreaded, "main", or
// a thread root), the stream position of the event the user's latest
// m.read or m.read.private receipt in the room points at.
func ReadPositions(ctx context.Context, q Reader, userID, roomID string) (map[string]int64, error) {
	return queryMap[string, int64](ctx, q, "loading read positions", `SELECT r.thread_id, MAX(e.stream_pos) FROM receipts r JOIN events e ON e.event_id = r.event_id
		WHERE r.room_id = $1 AND r.user_id = $2 AND r.receipt_type IN ('m.read', 'm.read.private') GROUP BY r.thread_id`, roomID, userID)
}

// PushAction is the outcome of one rule group's rules for an event that
// notifies: it stands for every member of the group in the room (whose
// epoch covers the event) except the sender.
type PushAction struct {
	RoomID    string
	GroupID   int64
	StreamPos int64
	EventID   string
	ThreadID  string
	Sender    string
	Highlight bool
	Actions   string
	TS        int64
}

// InsertPushAction records a group's notifying outcome for an event.
func InsertPushAction(ctx context.Context, tx *sql.Tx, a PushAction) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO push_actions (room_id, group_id, stream_pos, event_id, thread_id, sender, highlight, actions, ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (room_id, group_id, stream_pos) DO NOTHING`,
		a.RoomID, a.GroupID, a.StreamPos, a.EventID, a.ThreadID, a.Sender, a.Highlight, a.Actions, a.TS)
	if err != nil {
		return fmt.Errorf("storing push action: %w", err)
	}
	return nil
}

// PushEpoch is a range (Since, Until] of stream positions in which a
// member's notifications in a room are those of a rule group; Until is 0
// while open.
type PushEpoch struct {
	RoomID       string
	Since, Until int64
	GroupID      int64
}

// OpenPushEpochs returns the group of every member with an open range in
// the room.
func OpenPushEpochs(ctx context.Context, q Reader, roomID string) (map[string]int64, error) {
	return queryMap[string, int64](ctx, q, "loading push epochs", `SELECT user_id, group_id FROM push_epochs
		WHERE room_id = $1 AND until_pos IS NULL`, roomID)
}

// OpenPushEpoch starts a member's range in a room after since.
func OpenPushEpoch(ctx context.Context, tx *sql.Tx, userID, roomID string, since, groupID int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO push_epochs (user_id, room_id, since_pos, until_pos, group_id) VALUES ($1, $2, $3, NULL, $4)
		ON CONFLICT (user_id, room_id, since_pos) DO UPDATE SET until_pos = NULL, group_id = excluded.group_id`, userID, roomID, since, groupID)
	if err != nil {
		return fmt.Errorf("opening push epoch: %w", err)
	}
	return nil
}

// ClosePushEpoch ends a member's open range in a room at until; a range
// that would be empty is removed.
func ClosePushEpoch(ctx context.Context, tx *sql.Tx, userID, roomID string, until int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM push_epochs WHERE user_id = $1 AND room_id = $2 AND until_pos IS NULL AND since_pos >= $3`,
		userID, roomID, until); err != nil {
		return fmt.Errorf("closing push epoch: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `UPDATE push_epochs SET until_pos = $3 WHERE user_id = $1 AND room_id = $2 AND until_pos IS NULL`,
		userID, roomID, until); err != nil {
		return fmt.Errorf("closing push epoch: %w", err)
	}
	return nil
}

// ThreadCount is a number of notifications and of highlights in a thread.
type ThreadCount struct {
	Thread           string
	Notif, Highlight int
}

// GroupCounts counts a group's notifying rows in a room with positions in
// (after, upTo] (upTo 0: no bound) per thread, leaving out the events of
// sender; thread "" counts every thread.
func GroupCounts(ctx context.Context, q Reader, roomID string, groupID int64, sender string, after, upTo int64, thread string) ([]ThreadCount, error) {
	if upTo == 0 {
		upTo = math.MaxInt64
	}
	return queryList(ctx, q, "counting notifications", `SELECT thread_id, COUNT(*), SUM(CASE WHEN highlight THEN 1 ELSE 0 END) FROM push_actions
		WHERE room_id = $1 AND group_id = $2 AND stream_pos > $3 AND stream_pos <= $4 AND sender <> $5 AND ($6 = '' OR thread_id = $6)
		GROUP BY thread_id`, func(rows *sql.Rows, c *ThreadCount) error {
		return rows.Scan(&c.Thread, &c.Notif, &c.Highlight)
	}, roomID, groupID, after, upTo, sender, thread)
}

// UnreadRows is what a member's unread counts in a room are made of, read
// in one query (UnreadInputs): the cost of the counts in a sync is one
// round trip, plus one per range and thread a threaded receipt covers.
type UnreadRows struct {
	// Read is ReadPositions.
	Read map[string]int64
	// Epochs are the member's ranges that end after the unthreaded read
	// position.
	Epochs []PushEpoch
	// Groups counts, per thread, the rows of the member's groups within
	// their ranges, after the unthreaded read position and at or before
	// upTo, leaving out the member's own events (GroupCounts summed over
	// Epochs).
	Groups []ThreadCount
	// Own are the member's own rows after the unthreaded read position
	// (the fields counting needs).
	Own []Notification
	// Summaries are PushSummaries.
	Summaries []PushSummary
	// Deletions is the push_deletions count (pushDeletionsStream), read
	// with the rest.
	Deletions int64
}

// UnreadInputs reads a member's UnreadRows in a room; upTo 0 is no bound.
// Groups counts only rows after after (0: all), for a caller that counted
// those before and keeps the sum (see pushDeletionsStream).
func UnreadInputs(ctx context.Context, q Reader, userID, roomID string, after, upTo int64) (UnreadRows, error) {
	if upTo == 0 {
		upTo = math.MaxInt64
	}
	out := UnreadRows{Read: map[string]int64{}}
	// One row per part, told apart by the first column; fl is the
	// unthreaded read position. The group rows' lower bound is one
	// expression (the greatest of three), so that it bounds the index
	// range and only the rows after it are read; CROSS JOIN keeps SQLite
	// from reading push_actions before what the bound is made of.
	const query = `WITH fl AS (SELECT COALESCE(MAX(e.stream_pos), 0) AS pos FROM receipts r JOIN events e ON e.event_id = r.event_id
			WHERE r.room_id = $2 AND r.user_id = $1 AND r.receipt_type IN ('m.read', 'm.read.private') AND r.thread_id = '')
		SELECT 0, r.thread_id, MAX(e.stream_pos), 0, 0, 0, 0 FROM receipts r JOIN events e ON e.event_id = r.event_id
			WHERE r.room_id = $2 AND r.user_id = $1 AND r.receipt_type IN ('m.read', 'm.read.private') GROUP BY r.thread_id
		UNION ALL
		SELECT 1, '', ep.since_pos, COALESCE(ep.until_pos, 0), ep.group_id, 0, 0 FROM push_epochs ep CROSS JOIN fl
			WHERE ep.user_id = $1 AND ep.room_id = $2 AND (ep.until_pos IS NULL OR ep.until_pos > fl.pos)
		UNION ALL
		SELECT 2, a.thread_id, COUNT(*), SUM(CASE WHEN a.highlight THEN 1 ELSE 0 END), 0, 0, 0
			FROM push_epochs ep CROSS JOIN fl CROSS JOIN push_actions a
			WHERE ep.user_id = $1 AND ep.room_id = $2 AND a.room_id = ep.room_id AND a.group_id = ep.group_id
				AND a.stream_pos > CASE WHEN ep.since_pos >= fl.pos AND ep.since_pos >= $4 THEN ep.since_pos WHEN fl.pos >= $4 THEN fl.pos ELSE $4 END
				AND (ep.until_pos IS NULL OR a.stream_pos <= ep.until_pos) AND a.stream_pos <= $3 AND a.sender <> $1
			GROUP BY a.thread_id
		UNION ALL
		SELECT 3, n.thread_id, n.stream_pos, CASE WHEN n.notify THEN 1 ELSE 0 END, CASE WHEN n.highlight THEN 1 ELSE 0 END,
				CASE WHEN n.group_notify THEN 1 ELSE 0 END, CASE WHEN n.group_highlight THEN 1 ELSE 0 END
			FROM notifications n CROSS JOIN fl WHERE n.user_id = $1 AND n.room_id = $2 AND n.stream_pos > fl.pos
		UNION ALL
		SELECT 4, thread_id, notif, highlight, upto_pos, read_pos, thread_read_pos FROM push_summaries WHERE user_id = $1 AND room_id = $2
		UNION ALL
		SELECT 5, '', position, 0, 0, 0, 0 FROM stream_heads WHERE stream = '` + pushDeletionsStream + `'`
	err := queryEach(ctx, q, "loading unread counts", query, []any{userID, roomID, upTo, after}, func(rows *sql.Rows) error {
		var kind int
		var thread string
		var a, b, c, d, e int64
		if err := rows.Scan(&kind, &thread, &a, &b, &c, &d, &e); err != nil {
			return err
		}
		switch kind {
		case 0:
			out.Read[thread] = a
		case 1:
			out.Epochs = append(out.Epochs, PushEpoch{RoomID: roomID, Since: a, Until: b, GroupID: c})
		case 2:
			out.Groups = append(out.Groups, ThreadCount{Thread: thread, Notif: int(a), Highlight: int(b)})
		case 3:
			out.Own = append(out.Own, Notification{UserID: userID, RoomID: roomID, StreamPos: a, ThreadID: thread,
				Notify: b != 0, Highlight: c != 0, GroupNotify: d != 0, GroupHighlight: e != 0})
		case 4:
			out.Summaries = append(out.Summaries, PushSummary{Thread: thread, Notif: int(a), Highlight: int(b), UpTo: c, ReadPos: d, ThreadReadPos: e})
		case 5:
			out.Deletions = a
		}
		return nil
	})
	return out, err
}

// pushDeletionsStream names the stream_heads row that counts the
// transactions that deleted push_actions rows (rotation, purges). Rows are
// otherwise only ever added, with their event, at its stream position; so
// a count of a range of positions that were all committed stays exact
// while this number does not move, and a reader may add the rows after
// the range to it (UnreadRows.Deletions, push's count cache).
const pushDeletionsStream = "push_deletions"

// bumpPushDeletions moves the push_deletions count in a transaction that deletes
// push_actions rows.
func bumpPushDeletions(ctx context.Context, tx *sql.Tx) error {
	if _, err := tx.ExecContext(ctx, `INSERT INTO stream_heads (stream, position) VALUES ($1, 1)
		ON CONFLICT (stream) DO UPDATE SET position = stream_heads.position + 1`, pushDeletionsStream); err != nil {
		return fmt.Errorf("counting push row deletions: %w", err)
	}
	return nil
}

// RoomsWithNotifications lists the rooms where the user may have
// notifications: open ranges and rooms with rows of their own.
func RoomsWithNotifications(ctx context.Context, q Reader, userID string) ([]string, error) {
	return queryColumn[string](ctx, q, "listing rooms with notifications", `SELECT room_id FROM push_epochs WHERE user_id = $1
		UNION SELECT room_id FROM notifications WHERE user_id = $1 AND notify`, userID)
}

// ThreadSubscribers lists the users subscribed to a thread (MSC4306).
func ThreadSubscribers(ctx context.Context, q Reader, roomID, threadID string) ([]string, error) {
	return queryColumn[string](ctx, q, "listing thread subscribers", `SELECT user_id FROM thread_subscriptions
		WHERE room_id = $1 AND thread_id = $2 AND subscribed`, roomID, threadID)
}

// ListNotifications returns up to limit of the user's notifications with
// positions below before (0: from the newest), newest first: the rows of
// the user's groups within the user's ranges, except the events where the
// user has a row of their own, and the user's own notifying rows.
func ListNotifications(ctx context.Context, q Reader, userID string, before int64, limit int, onlyHighlight bool) ([]Notification, error) {
	if before == 0 {
		before = math.MaxInt64
	}
	hl := ""
	if onlyHighlight {
		hl = " AND highlight"
	}
	query := `SELECT stream_pos, room_id, event_id, thread_id, highlight, actions, ts FROM (
		SELECT a.stream_pos, a.room_id, a.event_id, a.thread_id, a.highlight, a.actions, a.ts
		FROM push_epochs e JOIN push_actions a ON a.room_id = e.room_id AND a.group_id = e.group_id
			AND a.stream_pos > e.since_pos AND (e.until_pos IS NULL OR a.stream_pos <= e.until_pos)
		WHERE e.user_id = $1 AND a.sender <> $1 AND a.stream_pos < $2` + strings.ReplaceAll(hl, "highlight", "a.highlight") + `
			AND NOT EXISTS (SELECT 1 FROM notifications n WHERE n.user_id = $1 AND n.event_id = a.event_id)
		UNION ALL
		SELECT stream_pos, room_id, event_id, thread_id, highlight, actions, ts FROM notifications
		WHERE user_id = $1 AND notify AND stream_pos < $2` + hl + `
	) AS ns ORDER BY stream_pos DESC LIMIT $3`
	return queryList(ctx, q, "listing notifications", query, func(rows *sql.Rows, n *Notification) error {
		n.UserID, n.Notify = userID, true
		return rows.Scan(&n.StreamPos, &n.RoomID, &n.EventID, &n.ThreadID, &n.Highlight, &n.Actions, &n.TS)
	}, userID, before, limit)
}

// Pusher is one pusher (POST /pushers/set).
type Pusher struct {
	ID                int64
	UserID            string
	DeviceID          string
	Kind              string
	AppID             string
	PushKey           string
	PushKeyTS         int64
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	Data              string // JSON object
	SentID            int64  // push_queue id delivered up to
}

const pusherColumns = `id, user_id, device_id, kind, app_id, pushkey, pushkey_ts, app_display_name, device_display_name, profile_tag, lang, data, sent_id`

func queryPushers(ctx context.Context, q Reader, query string, args ...any) ([]Pusher, error) {
	return queryList(ctx, q, "loading pushers", query, func(rows *sql.Rows, p *Pusher) error {
		return rows.Scan(&p.ID, &p.UserID, &p.DeviceID, &p.Kind, &p.AppID, &p.PushKey, &p.PushKeyTS, &p.AppDisplayName,
			&p.DeviceDisplayName, &p.ProfileTag, &p.Lang, &p.Data, &p.SentID)
	}, args...)
}

// PushersOfUser lists a user's pushers in creation order.
func PushersOfUser(ctx context.Context, q Reader, userID string) ([]Pusher, error) {
	return queryPushers(ctx, q, `SELECT `+pusherColumns+` FROM pushers WHERE user_id = $1 ORDER BY id`, userID)
}

// GetPusher loads one pusher by ID, or ErrNotFound.
func GetPusher(ctx context.Context, q Reader, id int64) (Pusher, error) {
	ps, err := queryPushers(ctx, q, `SELECT `+pusherColumns+` FROM pushers WHERE id = $1`, id)
	if err != nil {
		return Pusher{}, err
	}
	if len(ps) == 0 {
		return Pusher{}, ErrNotFound
	}
	return ps[0], nil
}

// PutPusher creates or updates the user's pusher with p's app ID and
// pushkey (an update keeps its ID and queue position; a new pusher starts
// after everything queued so far). Unless keepOthers
// (the request's append), pushers of other users with the same app ID
// and pushkey are removed.
func PutPusher(ctx context.Context, tx *sql.Tx, p Pusher, keepOthers bool) error {
	if !keepOthers {
		if err := deletePushersWhere(ctx, tx, `app_id = $1 AND pushkey = $2 AND user_id <> $3`, p.AppID, p.PushKey, p.UserID); err != nil {
			return err
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO pushers (user_id, device_id, kind, app_id, pushkey, pushkey_ts, app_display_name,
			device_display_name, profile_tag, lang, data, sent_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11,
			(SELECT COALESCE(MAX(id), 0) FROM push_queue))
		ON CONFLICT (user_id, app_id, pushkey) DO UPDATE SET device_id = excluded.device_id, kind = excluded.kind,
			pushkey_ts = excluded.pushkey_ts, app_display_name = excluded.app_display_name,
			device_display_name = excluded.device_display_name, profile_tag = excluded.profile_tag,
			lang = excluded.lang, data = excluded.data`,
		p.UserID, p.DeviceID, p.Kind, p.AppID, p.PushKey, p.PushKeyTS, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang, p.Data)
	if err != nil {
		return fmt.Errorf("storing pusher: %w", err)
	}
	return bumpPusherVersion(ctx, tx, p.UserID)
}

// bumpPusherVersion moves the user's pusher_versions row, so caches of
// the user's pushers reload (every insert, update or delete of a pusher).
func bumpPusherVersion(ctx context.Context, tx *sql.Tx, userID string) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO pusher_versions (user_id, version) VALUES ($1, 1)
		ON CONFLICT (user_id) DO UPDATE SET version = pusher_versions.version + 1`, userID)
	if err != nil {
		return fmt.Errorf("moving pusher version: %w", err)
	}
	return nil
}

// PusherVersions returns the pusher_versions of those of the users that
// have ever had a pusher (one row each, whatever their number of pushers).
func PusherVersions(ctx context.Context, q Reader, userIDs []string) (map[string]int64, error) {
	out := map[string]int64{}
	for len(userIDs) > 0 {
		chunk := userIDs[:min(len(userIDs), 500)]
		userIDs = userIDs[len(chunk):]
		args := make([]any, len(chunk))
		for i, u := range chunk {
			args[i] = u
		}
		versions, err := queryMap[string, int64](ctx, q, "loading pusher versions", `SELECT user_id, version FROM pusher_versions WHERE user_id IN (`+placeholders(1, len(chunk))+`)`, args...)
		if err != nil {
			return nil, err
		}
		maps.Copy(out, versions)
	}
	return out, nil
}

// HTTPPusherData returns the data (JSON) of the user's http pushers (the
// ones that deliver to a push gateway) by pusher ID.
func HTTPPusherData(ctx context.Context, q Reader, userID string) (map[int64]string, error) {
	return queryMap[int64, string](ctx, q, "listing pushers", `SELECT id, data FROM pushers WHERE user_id = $1 AND kind = 'http'`, userID)
}

// DeletePusher removes the user's pusher with the app ID and pushkey, and
// its queue; a pusher that does not exist is no error.
func DeletePusher(ctx context.Context, tx *sql.Tx, userID, appID, pushKey string) error {
	return deletePushersWhere(ctx, tx, `user_id = $1 AND app_id = $2 AND pushkey = $3`, userID, appID, pushKey)
}

// DeletePusherByID removes one pusher and its queue.
func DeletePusherByID(ctx context.Context, tx *sql.Tx, id int64) error {
	return deletePushersWhere(ctx, tx, `id = $1`, id)
}

// DeleteDevicePushers removes the pushers the given devices set.
func DeleteDevicePushers(ctx context.Context, tx *sql.Tx, userID string, deviceIDs []string) error {
	if len(deviceIDs) == 0 {
		return nil
	}
	args := []any{userID}
	for _, d := range deviceIDs {
		args = append(args, d)
	}
	return deletePushersWhere(ctx, tx, `user_id = $1 AND device_id IN (`+placeholders(2, len(deviceIDs))+`)`, args...)
}

func deletePushersWhere(ctx context.Context, tx *sql.Tx, where string, args ...any) error {
	users, err := queryColumn[string](ctx, tx, "finding pushers", `SELECT DISTINCT user_id FROM pushers WHERE `+where, args...)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM pushers WHERE `+where, args...); err != nil {
		return fmt.Errorf("deleting pushers: %w", err)
	}
	for _, u := range users {
		if err := TrimPushQueue(ctx, tx, u); err != nil {
			return err
		}
		if err := bumpPusherVersion(ctx, tx, u); err != nil {
			return err
		}
		// The badge is kept for users with pushers only; a user who sets
		// one again gets a recount.
		if _, err := tx.ExecContext(ctx, `DELETE FROM push_badges WHERE user_id = $1
			AND NOT EXISTS (SELECT 1 FROM pushers WHERE user_id = $1)`, u); err != nil {
			return fmt.Errorf("dropping push badge: %w", err)
		}
	}
	return nil
}

// TrimPushQueue deletes the user's queued pushes every remaining pusher
// has delivered (all of them when none remains).
func TrimPushQueue(ctx context.Context, tx *sql.Tx, userID string) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM push_queue WHERE user_id = $1 AND id <=
		COALESCE((SELECT MIN(sent_id) FROM pushers WHERE user_id = $1), (SELECT MAX(id) FROM push_queue))`, userID)
	if err != nil {
		return fmt.Errorf("trimming push queue: %w", err)
	}
	return nil
}

// SetPusherSent records that a pusher delivered the queue up to id.
func SetPusherSent(ctx context.Context, tx *sql.Tx, pusherID, id int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE pushers SET sent_id = $1 WHERE id = $2 AND sent_id < $1`, id, pusherID)
	return err
}

// PushBadge is the unread count last queued for the user; ok is false
// when none is stored (the user has had no pusher since).
func PushBadge(ctx context.Context, q Reader, userID string) (badge int64, ok bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT badge FROM push_badges WHERE user_id = $1`, userID).Scan(&badge)
	if err == sql.ErrNoRows {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("loading push badge: %w", err)
	}
	return badge, true, nil
}

// SetPushBadge records the unread count last queued for the user.
func SetPushBadge(ctx context.Context, tx *sql.Tx, userID string, badge int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO push_badges (user_id, badge) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET badge = excluded.badge`, userID, badge)
	return err
}

// QueuedPush is one notification (or badge update) waiting for a user's
// gateways.
type QueuedPush struct {
	ID        int64
	UserID    string
	RoomID    string
	StreamPos int64
	ThreadID  string
	Body      string
	Actions   string
	NotBefore int64
}

// pushQueueLockKey orders push_queue inserts across processes (see
// LockPushQueue).
const pushQueueLockKey = 7460122

// LockPushQueue makes transactions that queue pushes take turns across
// processes sharing one PostgreSQL, until tx ends: a pusher's position is
// a push_queue ID, so IDs must become visible in order, or a delivery
// could move past a row committed late with a lower ID.
func (db *DB) LockPushQueue(ctx context.Context, tx *sql.Tx) error {
	if db.dialect != Postgres {
		return nil
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", pushQueueLockKey); err != nil {
		return fmt.Errorf("locking the push queue: %w", err)
	}
	return nil
}

// EnqueuePush adds a push to the user's queue.
func EnqueuePush(ctx context.Context, tx *sql.Tx, p QueuedPush) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO push_queue (user_id, room_id, stream_pos, thread_id, body, actions, not_before)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, p.UserID, p.RoomID, p.StreamPos, p.ThreadID, p.Body, p.Actions, p.NotBefore)
	if err != nil {
		return fmt.Errorf("queueing push: %w", err)
	}
	return nil
}

// NextPushes returns the oldest of the user's queued pushes after id.
func NextPushes(ctx context.Context, q Reader, userID string, after int64, limit int) ([]QueuedPush, error) {
	return queryList(ctx, q, "loading push queue", `SELECT id, user_id, room_id, stream_pos, thread_id, body, actions, not_before FROM push_queue
		WHERE user_id = $1 AND id > $2 ORDER BY id LIMIT $3`, func(rows *sql.Rows, p *QueuedPush) error {
		return rows.Scan(&p.ID, &p.UserID, &p.RoomID, &p.StreamPos, &p.ThreadID, &p.Body, &p.Actions, &p.NotBefore)
	}, userID, after, limit)
}

// PushersWithQueue lists the http pushers that have undelivered pushes,
// as pusher ID to user ID.
func PushersWithQueue(ctx context.Context, q Reader) (map[int64]string, error) {
	return queryMap[int64, string](ctx, q, "listing push queues", `SELECT p.id, p.user_id FROM pushers p WHERE p.kind = 'http' AND EXISTS
		(SELECT 1 FROM push_queue q WHERE q.user_id = p.user_id AND q.id > p.sent_id)`)
}

// PushProgress is the last event position whose notifications were
// recorded; ok is false before the first.
func PushProgress(ctx context.Context, q Reader) (pos int64, ok bool, err error) {
	err = q.QueryRowContext(ctx, `SELECT stream_pos FROM push_progress WHERE id = 1`).Scan(&pos)
	if err == sql.ErrNoRows {
		return 0, false, nil
	}
	return pos, err == nil, err
}

// SetPushProgress moves the evaluation progress forward (never back).
func SetPushProgress(ctx context.Context, tx *sql.Tx, pos int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO push_progress (id, stream_pos) VALUES (1, $1)
		ON CONFLICT (id) DO UPDATE SET stream_pos = excluded.stream_pos WHERE push_progress.stream_pos < excluded.stream_pos`, pos)
	return err
}

// EventIDsAfter lists the IDs of events with positions after pos, in
// stream order, at most limit.
func EventIDsAfter(ctx context.Context, q Reader, pos int64, limit int) ([]string, error) {
	return queryColumn[string](ctx, q, "listing events", `SELECT event_id FROM events WHERE stream_pos > $1 AND NOT outlier ORDER BY stream_pos LIMIT $2`, pos, limit)
}

// PushSummary is what rotation took out of a member's rows in a thread.
type PushSummary struct {
	Thread                 string
	Notif, Highlight       int
	UpTo                   int64
	ReadPos, ThreadReadPos int64
}

// PushSummaries returns a member's summaries in a room.
func PushSummaries(ctx context.Context, q Reader, userID, roomID string) ([]PushSummary, error) {
	return queryList(ctx, q, "loading push summaries", `SELECT thread_id, notif, highlight, upto_pos, read_pos, thread_read_pos
		FROM push_summaries WHERE user_id = $1 AND room_id = $2`, func(rows *sql.Rows, s *PushSummary) error {
		return rows.Scan(&s.Thread, &s.Notif, &s.Highlight, &s.UpTo, &s.ReadPos, &s.ThreadReadPos)
	}, userID, roomID)
}

// PutPushSummary stores a member's summary in a thread of a room.
func PutPushSummary(ctx context.Context, tx *sql.Tx, userID, roomID string, s PushSummary) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO push_summaries (user_id, room_id, thread_id, notif, highlight, upto_pos, read_pos, thread_read_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, room_id, thread_id) DO UPDATE SET notif = excluded.notif,
		highlight = excluded.highlight, upto_pos = excluded.upto_pos, read_pos = excluded.read_pos, thread_read_pos = excluded.thread_read_pos`,
		userID, roomID, s.Thread, s.Notif, s.Highlight, s.UpTo, s.ReadPos, s.ThreadReadPos)
	if err != nil {
		return fmt.Errorf("storing push summary: %w", err)
	}
	return nil
}

// PushRotationCutoff is the newest position of a notifying row older than
// ts (ms) that rotation would take out, and the rooms with such rows; 0
// when there is none.
func PushRotationCutoff(ctx context.Context, q Reader, ts int64) (int64, []string, error) {
	var pos sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(stream_pos) FROM push_actions WHERE ts < $1 AND NOT highlight`, ts).Scan(&pos); err != nil {
		return 0, nil, fmt.Errorf("finding rotation cutoff: %w", err)
	}
	var own sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(stream_pos) FROM notifications WHERE ts < $1 AND NOT highlight AND NOT group_highlight`, ts).Scan(&own); err != nil {
		return 0, nil, fmt.Errorf("finding rotation cutoff: %w", err)
	}
	cutoff := max(pos.Int64, own.Int64)
	if cutoff == 0 {
		return 0, nil, nil
	}
	rooms, err := queryColumn[string](ctx, q, "finding rooms to rotate", `SELECT DISTINCT room_id FROM push_actions WHERE stream_pos <= $1 AND NOT highlight
		UNION SELECT DISTINCT room_id FROM notifications WHERE stream_pos <= $1 AND NOT highlight AND NOT group_highlight`, cutoff)
	return cutoff, rooms, err
}

// PushRotationUsers lists the members whose counts in a room rows at or
// before cutoff may hold.
func PushRotationUsers(ctx context.Context, q Reader, roomID string, cutoff int64) ([]string, error) {
	return queryColumn[string](ctx, q, "finding members to rotate", `SELECT user_id FROM push_epochs WHERE room_id = $1 AND since_pos < $2
		UNION SELECT user_id FROM notifications WHERE room_id = $1 AND stream_pos <= $2`, roomID, cutoff)
}

// DeletePushRows deletes a room's rows at or before cutoff except
// highlights (and a member's own row on an event their group highlights).
func DeletePushRows(ctx context.Context, tx *sql.Tx, roomID string, cutoff int64) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM push_actions WHERE room_id = $1 AND stream_pos <= $2 AND NOT highlight`, roomID, cutoff); err != nil {
		return fmt.Errorf("rotating push rows: %w", err)
	}
	if err := bumpPushDeletions(ctx, tx); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM notifications WHERE room_id = $1 AND stream_pos <= $2 AND NOT highlight AND NOT group_highlight`, roomID, cutoff); err != nil {
		return fmt.Errorf("rotating notifications: %w", err)
	}
	return nil
}
