package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// More queries of the Synapse-compatible admin API (package admin):
// memberships, account data, counts, shadow-bans, rate limit overrides,
// media protection and statistics (migration 0027).

// MembershipsOf maps every room with a membership event of userID to
// that membership (current state).
func (db *DB) MembershipsOf(ctx context.Context, userID string) (map[string]string, error) {
	return queryMap[string, string](ctx, db.Read(), "listing memberships", `SELECT room_id, COALESCE(membership, '')
		FROM current_state WHERE type = 'm.room.member' AND state_key = $1`, userID)
}

// AllAccountData lists every account data entry of userID (room ”
// is global).
func (db *DB) AllAccountData(ctx context.Context, userID string) ([]AccountData, error) {
	return queryList(ctx, db.Read(), "listing account data", `SELECT room_id, data_type, content FROM account_data
		WHERE user_id = $1 ORDER BY stream_pos`, func(rows *sql.Rows, d *AccountData) error {
		return rows.Scan(&d.RoomID, &d.Type, &d.Content)
	}, userID)
}

// SentInviteCount counts the invites userID sent to others since fromTS.
func (db *DB) SentInviteCount(ctx context.Context, userID string, fromTS int64) (int, error) {
	var n int
	err := db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE sender = $1 AND type = 'm.room.member'
		AND membership = 'invite' AND state_key <> $1 AND origin_server_ts >= $2 AND NOT rejected`, userID, fromTS).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting invites: %w", err)
	}
	return n, nil
}

// JoinedRoomCountEver counts the rooms userID has ever joined.
func (db *DB) JoinedRoomCountEver(ctx context.Context, userID string) (int, error) {
	var n int
	err := db.Read().QueryRowContext(ctx, `SELECT COUNT(DISTINCT room_id) FROM events WHERE type = 'm.room.member'
		AND state_key = $1 AND membership = 'join' AND NOT rejected`, userID).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("counting joined rooms: %w", err)
	}
	return n, nil
}

// SetShadowBanned sets or clears userID's shadow-ban.
func SetShadowBanned(ctx context.Context, tx *sql.Tx, userID string, banned bool) error {
	_, err := tx.ExecContext(ctx, `UPDATE users SET shadow_banned = $1 WHERE user_id = $2`, banned, userID)
	if err != nil {
		return fmt.Errorf("setting shadow-ban: %w", err)
	}
	return nil
}

// RatelimitOverride is a user's own message rate limit.
type RatelimitOverride struct {
	MessagesPerSecond int64
	BurstCount        int64
}

// GetRatelimitOverride returns userID's override, or ErrNotFound.
func (db *DB) GetRatelimitOverride(ctx context.Context, userID string) (RatelimitOverride, error) {
	var o RatelimitOverride
	err := db.Read().QueryRowContext(ctx, `SELECT messages_per_second, burst_count FROM ratelimit_overrides WHERE user_id = $1`, userID).
		Scan(&o.MessagesPerSecond, &o.BurstCount)
	if errors.Is(err, sql.ErrNoRows) {
		return o, ErrNotFound
	}
	if err != nil {
		return o, fmt.Errorf("reading rate limit override: %w", err)
	}
	return o, nil
}

// SetRatelimitOverride sets (o non-nil) or removes userID's override.
func SetRatelimitOverride(ctx context.Context, tx *sql.Tx, userID string, o *RatelimitOverride) error {
	if _, err := tx.ExecContext(ctx, `DELETE FROM ratelimit_overrides WHERE user_id = $1`, userID); err != nil {
		return fmt.Errorf("removing rate limit override: %w", err)
	}
	if o == nil {
		return nil
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO ratelimit_overrides (user_id, messages_per_second, burst_count) VALUES ($1, $2, $3)`,
		userID, o.MessagesPerSecond, o.BurstCount)
	if err != nil {
		return fmt.Errorf("storing rate limit override: %w", err)
	}
	return nil
}

// SetMediaProtected protects a media item from quarantine and from
// deletion by date or size; ErrNotFound when there is no such media.
func (db *DB) SetMediaProtected(ctx context.Context, serverName, mediaID string, protected bool) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE media SET protected = $1 WHERE server_name = $2 AND media_id = $3`, protected, serverName, mediaID)
		if err != nil {
			return fmt.Errorf("protecting media: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// MediaProtected reports whether a media item is protected.
func (db *DB) MediaProtected(ctx context.Context, serverName, mediaID string) (bool, error) {
	var p bool
	err := db.Read().QueryRowContext(ctx, `SELECT protected FROM media WHERE server_name = $1 AND media_id = $2`, serverName, mediaID).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return false, ErrNotFound
	}
	if err != nil {
		return false, fmt.Errorf("reading media protection: %w", err)
	}
	return p, nil
}

// MediaRef names one media item.
type MediaRef struct{ ServerName, MediaID string }

// MediaOfUploader lists the media userID uploaded, unprotected ones only
// when unprotectedOnly.
func (db *DB) MediaOfUploader(ctx context.Context, userID string, unprotectedOnly bool) ([]MediaRef, error) {
	return queryList(ctx, db.Read(), "listing media of a user", `SELECT server_name, media_id FROM media
		WHERE uploader = $1 AND (NOT protected OR NOT $2) ORDER BY created_ts`, func(rows *sql.Rows, m *MediaRef) error {
		return rows.Scan(&m.ServerName, &m.MediaID)
	}, userID, unprotectedOnly)
}

// OldMedia lists media of serverName created before beforeTS, at least
// sizeGT bytes, not protected; local (uploaded here) when local, else
// cached remote media. keepProfiles leaves out media used as a profile
// avatar.
func (db *DB) OldMedia(ctx context.Context, serverName string, local bool, beforeTS, sizeGT int64, keepProfiles bool) ([]MediaRef, error) {
	q := `SELECT server_name, media_id FROM media m WHERE created_ts < $1 AND COALESCE(size, 0) >= $2 AND NOT protected`
	args := []any{beforeTS, sizeGT}
	if local {
		q += ` AND server_name = $3 AND uploader IS NOT NULL`
	} else {
		q += ` AND server_name <> $3 AND uploader IS NULL`
	}
	args = append(args, serverName)
	if keepProfiles {
		q += ` AND NOT EXISTS (SELECT 1 FROM profiles p WHERE p.avatar_url = 'mxc://' || m.server_name || '/' || m.media_id)`
	}
	return queryList(ctx, db.Read(), "listing old media", q+` ORDER BY created_ts`, func(rows *sql.Rows, m *MediaRef) error {
		return rows.Scan(&m.ServerName, &m.MediaID)
	}, args...)
}

// RoomEventJSON returns the JSON of every event of roomID (for the mxc://
// URIs in them).
func (db *DB) RoomEventJSON(ctx context.Context, roomID string) ([]string, error) {
	return queryColumn[string](ctx, db.Read(), "reading room events", `SELECT json FROM events WHERE room_id = $1 AND NOT rejected AND redacted_by IS NULL`, roomID)
}

// UserMediaStats is one uploader's media count and bytes.
type UserMediaStats struct {
	UserID      string
	DisplayName string
	MediaCount  int64
	MediaLength int64
}

// UserMediaStatsQuery filters and orders the media statistics.
type UserMediaStatsQuery struct {
	FromTS, UntilTS int64 // UntilTS 0: no bound
	SearchTerm      string
	OrderBy         string // a key of UserMediaStatsOrder
	Backwards       bool
	From, Limit     int
}

// UserMediaStatsOrder are the order_by values of the media statistics.
var UserMediaStatsOrder = map[string]string{
	"user_id": "uploader", "displayname": "displayname", "media_length": "media_length", "media_count": "media_count",
}

// MediaStatsByUser returns one page of per-uploader media statistics and
// the number of uploaders matching q.
func (db *DB) MediaStatsByUser(ctx context.Context, q UserMediaStatsQuery) ([]UserMediaStats, int, error) {
	where := `m.uploader IS NOT NULL AND m.created_ts >= $1`
	args := []any{q.FromTS}
	if q.UntilTS > 0 {
		args = append(args, q.UntilTS)
		where += fmt.Sprintf(` AND m.created_ts <= $%d`, len(args))
	}
	if q.SearchTerm != "" {
		args = append(args, likeEscape(q.SearchTerm), likeEscape(q.SearchTerm))
		where += fmt.Sprintf(` AND (LOWER(m.uploader) LIKE $%d ESCAPE '\' OR LOWER(COALESCE(p.displayname, '')) LIKE $%d ESCAPE '\')`, len(args)-1, len(args))
	}
	inner := `SELECT m.uploader, COALESCE(p.displayname, '') AS displayname, COUNT(*) AS media_count, COALESCE(SUM(m.size), 0) AS media_length
		FROM media m LEFT JOIN profiles p ON p.user_id = m.uploader WHERE ` + where + ` GROUP BY m.uploader, p.displayname`
	var total int
	if err := db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM (`+inner+`) s`, args...).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("counting media statistics: %w", err)
	}
	dir := "ASC"
	if q.Backwards {
		dir = "DESC"
	}
	col := UserMediaStatsOrder[q.OrderBy]
	args = append(args, q.Limit, q.From)
	out, err := queryList(ctx, db.Read(), "media statistics", `SELECT * FROM (`+inner+`) s ORDER BY `+col+` `+dir+`, uploader ASC
		LIMIT $`+fmt.Sprint(len(args)-1)+` OFFSET $`+fmt.Sprint(len(args)), func(rows *sql.Rows, s *UserMediaStats) error {
		return rows.Scan(&s.UserID, &s.DisplayName, &s.MediaCount, &s.MediaLength)
	}, args...)
	return out, total, err
}

// RoomSize is the bytes of events a room holds.
type RoomSize struct {
	RoomID string
	Bytes  int64
}

// LargestRooms returns the ten rooms holding the most event bytes.
func (db *DB) LargestRooms(ctx context.Context) ([]RoomSize, error) {
	return orEmpty(queryList(ctx, db.Read(), "measuring rooms", `SELECT room_id, SUM(LENGTH(json)) AS size FROM events
		GROUP BY room_id ORDER BY size DESC, room_id LIMIT 10`, func(rows *sql.Rows, s *RoomSize) error {
		return rows.Scan(&s.RoomID, &s.Bytes)
	}))
}

// UserReportRow is a stored user report with its ID and time.
type UserReportRow struct {
	ID int64
	UserReport
	ReceivedTS int64
}

// ListUserReports returns a page of user reports (filtered by reported
// user or reporter when set) and the number matching.
func (db *DB) ListUserReports(ctx context.Context, userID, reporter string, backwards bool, from, limit int) ([]UserReportRow, int, error) {
	where := `($1 = '' OR user_id = $1) AND ($2 = '' OR reporter = $2)`
	var total int
	if err := db.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM user_reports WHERE `+where, userID, reporter).Scan(&total); err != nil {
		return nil, 0, fmt.Errorf("counting user reports: %w", err)
	}
	dir := "ASC"
	if backwards {
		dir = "DESC"
	}
	out, err := queryList(ctx, db.Read(), "listing user reports", `SELECT report_id, user_id, reporter, reason, received_ts FROM user_reports
		WHERE `+where+` ORDER BY received_ts `+dir+`, report_id `+dir+` LIMIT $3 OFFSET $4`, scanUserReport, userID, reporter, limit, from)
	return out, total, err
}

func scanUserReport(rows *sql.Rows, r *UserReportRow) error {
	return rows.Scan(&r.ID, &r.UserID, &r.Reporter, &r.Reason, &r.ReceivedTS)
}

// GetUserReport returns one user report, or ErrNotFound.
func (db *DB) GetUserReport(ctx context.Context, id int64) (UserReportRow, error) {
	l, err := queryList(ctx, db.Read(), "reading user report", `SELECT report_id, user_id, reporter, reason, received_ts FROM user_reports
		WHERE report_id = $1`, scanUserReport, id)
	if err != nil {
		return UserReportRow{}, err
	}
	if len(l) == 0 {
		return UserReportRow{}, ErrNotFound
	}
	return l[0], nil
}

// DeleteUserReport removes one user report; ErrNotFound when absent.
func (db *DB) DeleteUserReport(ctx context.Context, id int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM user_reports WHERE report_id = $1`, id)
		if err != nil {
			return fmt.Errorf("deleting user report: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		return nil
	})
}

// SetDeviceTokensExpiry makes the access tokens of one device expire at
// expiresTS (the admin API's login as a user, valid_until_ms).
func SetDeviceTokensExpiry(ctx context.Context, tx *sql.Tx, userID, deviceID string, expiresTS int64) error {
	_, err := tx.ExecContext(ctx, `UPDATE access_tokens SET expires_ts = $1 WHERE user_id = $2 AND device_id = $3`, expiresTS, userID, deviceID)
	if err != nil {
		return fmt.Errorf("setting token expiry: %w", err)
	}
	return nil
}

// AllowCrossSigningReplacement lets userID replace their cross-signing
// keys without user-interactive auth until untilTS.
func (db *DB) AllowCrossSigningReplacement(ctx context.Context, userID string, untilTS int64) error {
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO cross_signing_replacement (user_id, until_ts) VALUES ($1, $2)
			ON CONFLICT (user_id) DO UPDATE SET until_ts = $2`, userID, untilTS)
		if err != nil {
			return fmt.Errorf("allowing cross-signing replacement: %w", err)
		}
		return nil
	})
}

// CrossSigningReplaceableUntil is when userID's leave to replace their
// cross-signing keys without user-interactive auth ends (0: none).
func (db *DB) CrossSigningReplaceableUntil(ctx context.Context, userID string) (int64, error) {
	var ts int64
	err := db.Read().QueryRowContext(ctx, `SELECT until_ts FROM cross_signing_replacement WHERE user_id = $1`, userID).Scan(&ts)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading cross-signing replacement: %w", err)
	}
	return ts, nil
}
