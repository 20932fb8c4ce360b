package storage

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"strings"
)

// SnapshotSQLite writes a consistent copy of the SQLite database at path
// to dest with VACUUM INTO: one read transaction, so a server writing
// meanwhile neither waits for it nor leaves half a write in the copy.
func SnapshotSQLite(ctx context.Context, path, dest string) error {
	path = strings.TrimPrefix(path, "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		return fmt.Errorf("opening %s: %w", path, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	// The source must exist: opening would otherwise create an empty one.
	var tables int
	if err := db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table'`).Scan(&tables); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if tables == 0 {
		return fmt.Errorf("%s holds no Hearth database (wrong --data-dir or database_url?)", path)
	}
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, dest); err != nil {
		return fmt.Errorf("snapshot of %s into %s: %w", path, dest, err)
	}
	return nil
}

// SplitSearchPath removes a search_path parameter from a PostgreSQL DSN
// (pgx sends it as a session setting; libpq tools do not know it) and
// returns the DSN without it and the schema.
func SplitSearchPath(dsn string) (string, string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", "", fmt.Errorf("database URL: %w", err)
	}
	q := u.Query()
	schema := q.Get("search_path")
	q.Del("search_path")
	u.RawQuery = q.Encode()
	return u.String(), schema, nil
}

// EnsureSchema creates the schema a DSN's search_path names, if any and if
// missing: pg_restore of a one-schema dump expects it to exist.
func EnsureSchema(ctx context.Context, dsn string) error {
	base, schema, err := SplitSearchPath(dsn)
	if err != nil || schema == "" {
		return err
	}
	for _, r := range schema {
		if !(r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return fmt.Errorf("search_path %q: only lower-case letters, digits and _ are supported", schema)
		}
	}
	db, err := sql.Open("pgx", base)
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, "CREATE SCHEMA IF NOT EXISTS "+schema); err != nil {
		return fmt.Errorf("creating schema %s: %w", schema, err)
	}
	return nil
}
