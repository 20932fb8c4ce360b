package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// Queries of the Synapse-compatible admin API (package admin).

// AdminUser is one row of the admin API's user list.
type AdminUser struct {
	UserID      string
	IsGuest     bool
	IsAdmin     bool
	UserType    *string
	Deactivated bool
	Erased      bool
	// ShadowBanned and Locked: set by the admin API (0027) and by
	// account locking (0022).
	ShadowBanned bool
	Locked       bool
	CreatedTS    int64
	DisplayName  *string
	AvatarURL    *string
	LastSeenTS   *int64
}

// UserQuery filters and orders the admin user list. Nil booleans do not
// filter.
type UserQuery struct {
	UserID      string // substring of the user ID
	Name        string // substring of the localpart or display name
	Guests      *bool
	Admins      *bool
	Deactivated *bool
	OrderBy     string // a key of UserOrderColumns
	Backwards   bool
	From, Limit int
}

// UserOrderColumns are the admin user list's order_by values and what
// they sort on (NULLs as the empty string or 0, so both engines order
// them alike).
var UserOrderColumns = map[string]string{
	"name":          "u.user_id",
	"is_guest":      "u.is_guest",
	"admin":         "u.is_admin",
	"user_type":     "COALESCE(u.user_type, '')",
	"deactivated":   "u.deactivated",
	"shadow_banned": "u.shadow_banned",
	"displayname":   "COALESCE(p.displayname, '')",
	"avatar_url":    "COALESCE(p.avatar_url, '')",
	"creation_ts":   "u.created_ts",
	"last_seen_ts":  "COALESCE((SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id), 0)",
	"locked":        "u.locked",
	"approved":      "u.user_id", // nor approval
}

// likeEscape makes s a LIKE pattern matching s anywhere, case-insensitively
// when the column is lowered too.
func likeEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return "%" + r.Replace(strings.ToLower(s)) + "%"
}

// ListUsers returns one page of users and the number matching q.
func (db *DB) ListUsers(ctx context.Context, q UserQuery) ([]AdminUser, int, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if q.UserID != "" {
		where = append(where, `LOWER(u.user_id) LIKE `+arg(likeEscape(q.UserID))+` ESCAPE '\'`)
	}
	if q.Name != "" {
		p1, p2 := arg(likeEscape(q.Name)), arg(likeEscape(q.Name))
		where = append(where, `(LOWER(u.localpart) LIKE `+p1+` ESCAPE '\' OR LOWER(COALESCE(p.displayname, '')) LIKE `+p2+` ESCAPE '\')`)
	}
	if q.Guests != nil {
		where = append(where, "u.is_guest = "+arg(*q.Guests))
	}
	if q.Admins != nil {
		where = append(where, "u.is_admin = "+arg(*q.Admins))
	}
	if q.Deactivated != nil {
		where = append(where, "u.deactivated = "+arg(*q.Deactivated))
	}
	cond := ""
	if len(where) > 0 {
		cond = " WHERE " + strings.Join(where, " AND ")
	}
	from := ` FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id` + cond
	var total int
	if err := db.Read().QueryRowContext(ctx, `SELECT COUNT(*)`+from, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("counting users: %w", err)
	}
	col, ok := UserOrderColumns[q.OrderBy]
	if !ok {
		col = "u.user_id"
	}
	dir := "ASC"
	if q.Backwards {
		dir = "DESC"
	}
	order := fmt.Sprintf(" ORDER BY %s %s, u.user_id %s", col, dir, dir)
	if col == "u.user_id" {
		order = " ORDER BY u.user_id " + dir
	}
	out, err := queryList(ctx, db.Read(), "listing users", `SELECT u.user_id, u.is_guest, u.is_admin, u.user_type, u.deactivated, u.erased, u.shadow_banned, u.locked,
		u.created_ts, p.displayname, p.avatar_url,
		(SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id)`+
		from+order+" LIMIT "+arg(q.Limit)+" OFFSET "+arg(q.From), func(rows *sql.Rows, u *AdminUser) error {
		var ut, dn, av sql.NullString
		var seen sql.NullInt64
		if err := rows.Scan(&u.UserID, &u.IsGuest, &u.IsAdmin, &ut, &u.Deactivated, &u.Erased, &u.ShadowBanned, &u.Locked, &u.CreatedTS, &dn, &av, &seen); err != nil {
			return err
		}
		u.UserType, u.DisplayName, u.AvatarURL = ptrString(ut), ptrString(dn), ptrString(av)
		if seen.Valid {
			u.LastSeenTS = &seen.Int64
		}
		return nil
	}, args...)
	return out, total, err
}

func ptrString(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	return &s.String
}

// GetAdminUser loads one user as the admin API shows it; ErrNotFound if
// there is no such user.
func (db *DB) GetAdminUser(ctx context.Context, userID string) (AdminUser, error) {
	var u AdminUser
	var ut, dn, av sql.NullString
	var seen sql.NullInt64
	err := db.Read().QueryRowContext(ctx, `SELECT u.user_id, u.is_guest, u.is_admin, u.user_type, u.deactivated, u.erased, u.shadow_banned, u.locked,
		u.created_ts, p.displayname, p.avatar_url,
		(SELECT MAX(d.last_seen_ts) FROM devices d WHERE d.user_id = u.user_id)
		FROM users u LEFT JOIN profiles p ON p.user_id = u.user_id WHERE u.user_id = $1`, userID).
		Scan(&u.UserID, &u.IsGuest, &u.IsAdmin, &ut, &u.Deactivated, &u.Erased, &u.ShadowBanned, &u.Locked, &u.CreatedTS, &dn, &av, &seen)
	if errors.Is(err, sql.ErrNoRows) {
		return u, ErrNotFound
	}
	if err != nil {
		return u, fmt.Errorf("loading user: %w", err)
	}
	u.UserType, u.DisplayName, u.AvatarURL = ptrString(ut), ptrString(dn), ptrString(av)
	if seen.Valid {
		u.LastSeenTS = &seen.Int64
	}
	return u, nil
}

// SetAdmin grants or revokes server admin.
func SetAdmin(ctx context.Context, tx *sql.Tx, userID string, admin bool) error {
	if _, err := tx.ExecContext(ctx, `UPDATE users SET is_admin = $1 WHERE user_id = $2`, admin, userID); err != nil {
		return fmt.Errorf("setting admin: %w", err)
	}
	return nil
}

// ReactivateUser undoes a deactivation (the admin API's PUT with
// deactivated false); the caller sets a password.
func ReactivateUser(ctx context.Context, tx *sql.Tx, userID string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE users SET deactivated = FALSE, erased = FALSE WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("reactivating user: %w", err)
	}
	return nil
}

// SetDisplayName sets a local user's display name in their profile row.
func SetDisplayName(ctx context.Context, tx *sql.Tx, userID string, name *string) error {
	if _, err := tx.ExecContext(ctx, `UPDATE profiles SET displayname = $1 WHERE user_id = $2`, name, userID); err != nil {
		return fmt.Errorf("setting display name: %w", err)
	}
	return nil
}

// Blocked rooms.

// SetRoomBlocked blocks (by is the admin) or unblocks a room.
func SetRoomBlocked(ctx context.Context, tx *sql.Tx, roomID string, blocked bool, by string) error {
	var err error
	if blocked {
		_, err = tx.ExecContext(ctx, `INSERT INTO blocked_rooms (room_id, blocked_by, blocked_ts) VALUES ($1, $2, $3)
			ON CONFLICT (room_id) DO NOTHING`, roomID, by, nowMillis())
	} else {
		_, err = tx.ExecContext(ctx, `DELETE FROM blocked_rooms WHERE room_id = $1`, roomID)
	}
	if err != nil {
		return fmt.Errorf("blocking room: %w", err)
	}
	return nil
}

// RoomBlocked reports whether a room is blocked, and by whom.
func RoomBlocked(ctx context.Context, q Reader, roomID string) (blocked bool, by string, err error) {
	err = q.QueryRowContext(ctx, `SELECT blocked_by FROM blocked_rooms WHERE room_id = $1`, roomID).Scan(&by)
	if errors.Is(err, sql.ErrNoRows) {
		return false, "", nil
	}
	if err != nil {
		return false, "", fmt.Errorf("reading blocked room: %w", err)
	}
	return true, by, nil
}

// Room deletions.

// RoomDeletion is one DELETE /_synapse/admin/v2/rooms/{roomId}.
type RoomDeletion struct {
	DeleteID    string
	RoomID      string
	Requester   string
	Block       bool
	Purge       bool
	Status      string
	Error       *string
	KickedUsers []string
	FailedUsers []string
	Aliases     []string
	CreatedTS   int64
}

// InsertRoomDeletion records a scheduled deletion.
func InsertRoomDeletion(ctx context.Context, tx *sql.Tx, d RoomDeletion) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO room_deletions (delete_id, room_id, requester, block, purge, status, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, d.DeleteID, d.RoomID, d.Requester, d.Block, d.Purge, d.Status, d.CreatedTS)
	if err != nil {
		return fmt.Errorf("recording room deletion: %w", err)
	}
	return nil
}

func jsonList(l []string) string {
	if l == nil {
		l = []string{}
	}
	b, _ := json.Marshal(l)
	return string(b)
}

// UpdateRoomDeletion records a deletion's progress.
func (db *DB) UpdateRoomDeletion(ctx context.Context, d RoomDeletion) error {
	var finished any
	if d.Status == "complete" || d.Status == "failed" {
		finished = nowMillis()
	}
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE room_deletions SET status = $1, error = $2, kicked_users = $3, failed_users = $4,
			aliases = $5, finished_ts = $6 WHERE delete_id = $7`,
			d.Status, d.Error, jsonList(d.KickedUsers), jsonList(d.FailedUsers), jsonList(d.Aliases), finished, d.DeleteID)
		if err != nil {
			return fmt.Errorf("updating room deletion: %w", err)
		}
		return nil
	})
}

func (db *DB) roomDeletions(ctx context.Context, where string, args ...any) ([]RoomDeletion, error) {
	return queryList(ctx, db.Read(), "listing room deletions", `SELECT delete_id, room_id, requester, block, purge, status, error,
		kicked_users, failed_users, aliases, created_ts FROM room_deletions WHERE `+where+` ORDER BY created_ts, delete_id`,
		func(rows *sql.Rows, d *RoomDeletion) error {
			var kicked, failed, aliases string
			var errText sql.NullString
			if err := rows.Scan(&d.DeleteID, &d.RoomID, &d.Requester, &d.Block, &d.Purge, &d.Status, &errText,
				&kicked, &failed, &aliases, &d.CreatedTS); err != nil {
				return err
			}
			d.Error = ptrString(errText)
			_ = json.Unmarshal([]byte(kicked), &d.KickedUsers)
			_ = json.Unmarshal([]byte(failed), &d.FailedUsers)
			_ = json.Unmarshal([]byte(aliases), &d.Aliases)
			return nil
		}, args...)
}

// RoomDeletion loads one deletion; ErrNotFound if there is none.
func (db *DB) RoomDeletion(ctx context.Context, deleteID string) (RoomDeletion, error) {
	ds, err := db.roomDeletions(ctx, "delete_id = $1", deleteID)
	if err != nil {
		return RoomDeletion{}, err
	}
	if len(ds) == 0 {
		return RoomDeletion{}, ErrNotFound
	}
	return ds[0], nil
}

// RoomDeletionsOfRoom lists a room's deletions, oldest first.
func (db *DB) RoomDeletionsOfRoom(ctx context.Context, roomID string) ([]RoomDeletion, error) {
	return db.roomDeletions(ctx, "room_id = $1", roomID)
}

// UnfinishedRoomDeletions lists the deletions a restart must resume.
func (db *DB) UnfinishedRoomDeletions(ctx context.Context) ([]RoomDeletion, error) {
	return db.roomDeletions(ctx, "status IN ('scheduled', 'active')")
}

// Event reports.

// EventReport is a stored report of an event, as the admin API lists it.
type EventReport struct {
	ID         int64
	ReceivedTS int64
	RoomID     string
	EventID    string
	UserID     string
	Reason     *string
	Score      *int
}

// ReportQuery filters the admin API's event report list.
type ReportQuery struct {
	RoomID, UserID string // substrings of the room and reporter IDs
	Backwards      bool   // newest first (Synapse's default)
	From, Limit    int
}

// ListEventReports returns one page of event reports (not room reports)
// and the number matching q.
func (db *DB) ListEventReports(ctx context.Context, q ReportQuery) ([]EventReport, int, error) {
	where := "event_id IS NOT NULL"
	var args []any
	if q.RoomID != "" {
		args = append(args, likeEscape(q.RoomID))
		where += fmt.Sprintf(` AND LOWER(room_id) LIKE $%d ESCAPE '\'`, len(args))
	}
	if q.UserID != "" {
		args = append(args, likeEscape(q.UserID))
		where += fmt.Sprintf(` AND LOWER(reporter) LIKE $%d ESCAPE '\'`, len(args))
	}
	var total int
	if err := db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM content_reports WHERE `+where, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("counting reports: %w", err)
	}
	dir := "ASC"
	if q.Backwards {
		dir = "DESC"
	}
	args = append(args, q.Limit, q.From)
	out, err := queryList(ctx, db.Read(), "listing reports", fmt.Sprintf(`SELECT report_id, received_ts, room_id, event_id, reporter, reason, score
		FROM content_reports WHERE %s ORDER BY received_ts %s, report_id %s LIMIT $%d OFFSET $%d`, where, dir, dir, len(args)-1, len(args)),
		func(rows *sql.Rows, r *EventReport) error {
			return rows.Scan(&r.ID, &r.ReceivedTS, &r.RoomID, &r.EventID, &r.UserID, &r.Reason, &r.Score)
		}, args...)
	return out, total, err
}

// GetEventReport loads one event report; ErrNotFound if there is none.
func (db *DB) GetEventReport(ctx context.Context, id int64) (EventReport, error) {
	var r EventReport
	err := db.Read().QueryRowContext(ctx, `SELECT report_id, received_ts, room_id, event_id, reporter, reason, score
		FROM content_reports WHERE report_id = $1 AND event_id IS NOT NULL`, id).
		Scan(&r.ID, &r.ReceivedTS, &r.RoomID, &r.EventID, &r.UserID, &r.Reason, &r.Score)
	if errors.Is(err, sql.ErrNoRows) {
		return r, ErrNotFound
	}
	if err != nil {
		return r, fmt.Errorf("loading report: %w", err)
	}
	return r, nil
}

// DeleteEventReport deletes one event report; ErrNotFound if there is none.
func (db *DB) DeleteEventReport(ctx context.Context, id int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM content_reports WHERE report_id = $1 AND event_id IS NOT NULL`, id)
		if err != nil {
			return fmt.Errorf("deleting report: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// Rooms and media.

// AllRoomIDs lists every room this server has a rooms row for.
func (db *DB) AllRoomIDs(ctx context.Context) ([]string, error) {
	return queryColumn[string](ctx, db.Read(), "listing rooms", `SELECT room_id FROM rooms ORDER BY room_id`)
}

// UserMediaOrder are the admin API's order_by values for a user's media
// and what they sort on.
var UserMediaOrder = map[string]string{
	"media_id": "media_id", "upload_name": "COALESCE(filename, '')", "created_ts": "created_ts",
	"last_access_ts": "COALESCE(uploaded_ts, 0)", "media_length": "COALESCE(size, 0)", "media_type": "COALESCE(content_type, '')",
	"quarantined_by": "quarantined", "safe_from_quarantine": "protected",
}

// ProtectedMedia is a media item and whether it is protected.
type ProtectedMedia struct {
	Media
	Protected bool
}

// UserMedia returns one page of a local user's uploads ordered by
// orderBy (a key of UserMediaOrder) then media_id, and how many there are.
func (db *DB) UserMedia(ctx context.Context, userID, orderBy string, from, limit int, backwards bool) ([]ProtectedMedia, int, error) {
	var total int
	if err := db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM media WHERE uploader = $1 AND uploaded_ts IS NOT NULL`, userID).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("counting media: %w", err)
	}
	dir := "ASC"
	if backwards {
		dir = "DESC"
	}
	col, ok := UserMediaOrder[orderBy]
	if !ok {
		col = "created_ts"
	}
	out, err := queryList(ctx, db.Read(), "listing media", `SELECT `+mediaColumns+`, protected FROM media WHERE uploader = $1 AND uploaded_ts IS NOT NULL
		ORDER BY `+col+` `+dir+`, media_id ASC LIMIT $2 OFFSET $3`, func(rows *sql.Rows, m *ProtectedMedia) (err error) {
		m.Media, err = scanMedia(rows, &m.Protected)
		return err
	}, userID, limit, from)
	return out, total, err
}
