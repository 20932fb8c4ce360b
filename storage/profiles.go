package storage

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Profile is a local user's profile. DisplayName and AvatarURL are the two
// fields every client knows; Fields holds the others (m.tz and custom
// fields), each value as JSON.
type Profile struct {
	DisplayName *string
	AvatarURL   *string
	Fields      map[string][]byte
}

// GetProfile loads a local user's profile; ErrNotFound if there is no such user.
func (db *DB) GetProfile(ctx context.Context, userID string) (Profile, error) {
	return getProfile(ctx, db.read, userID)
}

func getProfile(ctx context.Context, q Reader, userID string) (Profile, error) {
	var p Profile
	var name, avatar sql.NullString
	err := q.QueryRowContext(ctx, `SELECT displayname, avatar_url FROM profiles WHERE user_id = $1`, userID).Scan(&name, &avatar)
	if errors.Is(err, sql.ErrNoRows) {
		return p, ErrNotFound
	}
	if err != nil {
		return p, fmt.Errorf("loading profile: %w", err)
	}
	if name.Valid {
		p.DisplayName = &name.String
	}
	if avatar.Valid {
		p.AvatarURL = &avatar.String
	}
	p.Fields = map[string][]byte{}
	err = queryEach(ctx, q, "loading profile fields", `SELECT field_key, value FROM profile_fields WHERE user_id = $1`, []any{userID},
		func(rows *sql.Rows) error {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				return err
			}
			p.Fields[k] = []byte(v)
			return nil
		})
	return p, err
}

// UpdateProfile is a read-modify-write of a user's profile in one
// transaction: change edits the current profile (and may refuse it, for
// example when it grows too large), and the result is stored. ErrNotFound
// if there is no such user.
func (db *DB) UpdateProfile(ctx context.Context, userID string, change func(p *Profile) error) (Profile, error) {
	var p Profile
	err := db.WriteTx(ctx, func(tx *sql.Tx) error {
		// Taking the row lock first (a no-op update) makes concurrent
		// changes of one profile take turns on PostgreSQL.
		res, err := tx.ExecContext(ctx, `UPDATE profiles SET displayname = displayname WHERE user_id = $1`, userID)
		if err != nil {
			return fmt.Errorf("locking profile: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrNotFound
		}
		if p, err = getProfile(ctx, tx, userID); err != nil {
			return err
		}
		old := make(map[string][]byte, len(p.Fields))
		for k, v := range p.Fields {
			old[k] = v
		}
		if err := change(&p); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE profiles SET displayname = $1, avatar_url = $2 WHERE user_id = $3`,
			p.DisplayName, p.AvatarURL, userID); err != nil {
			return fmt.Errorf("storing profile: %w", err)
		}
		for k := range old {
			if _, ok := p.Fields[k]; !ok {
				if _, err := tx.ExecContext(ctx, `DELETE FROM profile_fields WHERE user_id = $1 AND field_key = $2`, userID, k); err != nil {
					return fmt.Errorf("deleting profile field: %w", err)
				}
			}
		}
		for k, v := range p.Fields {
			if ov, ok := old[k]; ok && bytes.Equal(ov, v) {
				continue
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO profile_fields (user_id, field_key, value) VALUES ($1, $2, $3)
				ON CONFLICT (user_id, field_key) DO UPDATE SET value = excluded.value`, userID, k, string(v)); err != nil {
				return fmt.Errorf("storing profile field: %w", err)
			}
		}
		return nil
	})
	return p, err
}
