package storage

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one numbered schema change, NNNN_name.sql, or, where the
// two engines need different SQL (full-text search), a pair of files
// NNNN_name.sqlite.sql and NNNN_name.postgres.sql of which each engine
// runs its own.
type migration struct {
	version int
	name    string
	sql     string
}

// dialectWords are the only spellings that differ between the two engines'
// schemas; migrations use the left-hand words.
var dialectWords = map[Dialect]*strings.Replacer{
	SQLite: strings.NewReplacer(
		"SERIAL_PK", "INTEGER PRIMARY KEY AUTOINCREMENT",
		"BYTES", "BLOB",
	),
	Postgres: strings.NewReplacer(
		"SERIAL_PK", "BIGSERIAL PRIMARY KEY",
		"BYTES", "BYTEA",
	),
}

// loadMigrations returns d's migrations in order. Numbers must be unique
// but may have gaps (a number is reserved on a branch before it merges);
// a number with a file for one engine must have one for the other.
func loadMigrations(fsys fs.FS, d Dialect) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, err
	}
	var out []migration
	perDialect := map[int]map[string]bool{}
	generic := map[int]bool{}
	for _, e := range entries {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", e.Name())
		}
		if base, engine, ok := strings.Cut(name, "."); ok {
			if engine != SQLite.String() && engine != Postgres.String() {
				return nil, fmt.Errorf("migration %s: unknown engine %q", e.Name(), engine)
			}
			if perDialect[v] == nil {
				perDialect[v] = map[string]bool{}
			}
			perDialect[v][engine] = true
			if engine != d.String() {
				continue
			}
			name = base
		} else {
			generic[v] = true
		}
		b, err := fs.ReadFile(fsys, "migrations/"+e.Name())
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: name, sql: string(b)})
	}
	for v, engines := range perDialect {
		if generic[v] || len(engines) != 2 {
			return nil, fmt.Errorf("migration %04d: needs one file for every engine or one for both", v)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].version < out[j].version })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("migration number %d is used twice", out[i].version)
		}
	}
	return out, nil
}

// migrate applies every migration not yet recorded, in one transaction. Several Hearth processes may start at once on one PostgreSQL:
// an advisory lock makes them take turns.
func (db *DB) migrate(ctx context.Context) error {
	migs, err := loadMigrations(migrationFiles, db.dialect)
	if err != nil {
		return err
	}
	return db.WriteTx(ctx, func(tx *sql.Tx) error {
		if db.dialect == Postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(7460118)"); err != nil {
				return fmt.Errorf("migration lock: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("creating schema_migrations: %w", err)
		}
		applied, err := appliedMigrations(ctx, tx)
		if err != nil {
			return err
		}
		known := map[int]bool{}
		for _, m := range migs {
			known[m.version] = true
		}
		for v := range applied {
			if !known[v] {
				return fmt.Errorf("the database has schema migration %d, which this hearth does not know: run a newer hearth", v)
			}
		}
		// Every migration not yet applied, in order: one merged from a
		// branch may have a lower number than one already applied.
		for _, m := range migs {
			if applied[m.version] {
				continue
			}
			for _, stmt := range splitStatements(dialectWords[db.dialect].Replace(m.sql)) {
				if _, err := tx.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migration %04d_%s: %w", m.version, m.name, err)
				}
			}
			if _, err := tx.ExecContext(ctx, "INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)",
				m.version, m.name, time.Now().UnixMilli()); err != nil {
				return fmt.Errorf("recording migration %d: %w", m.version, err)
			}
		}
		return nil
	})
}

// appliedMigrations are the versions recorded in schema_migrations.
func appliedMigrations(ctx context.Context, tx *sql.Tx) (map[int]bool, error) {
	return querySet[int](ctx, tx, "reading schema version", "SELECT version FROM schema_migrations")
}

// splitStatements splits a migration on semicolons at line ends. Migrations
// hold no procedural code, so this is enough.
func splitStatements(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ";\n") {
		var lines []string
		for _, l := range strings.Split(part, "\n") {
			if t := strings.TrimSpace(l); t != "" && !strings.HasPrefix(t, "--") {
				lines = append(lines, l)
			}
		}
		if st := strings.TrimSuffix(strings.TrimSpace(strings.Join(lines, "\n")), ";"); st != "" {
			out = append(out, st)
		}
	}
	return out
}
