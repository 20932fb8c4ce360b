package storage

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
)

// Copying a SQLite installation into PostgreSQL (hearth migrate-db). Both
// schemas come from the same migrations, so the tables and columns match
// by name; the copy and its verification run in one PostgreSQL
// transaction, so an interrupted run leaves the target empty and can simply
// be run again, and a committed one was verified.

// TableCopy is what was copied of one table and how it was checked.
type TableCopy struct {
	Table    string
	Rows     int64
	Checksum string // of the rows' values, independent of their order
}

// CopySQLiteToPostgres copies every table of the SQLite database at
// sqlitePath into the PostgreSQL database dsn, which must hold no Hearth
// data (its schema is created or brought up to date first), then checks
// each table's row count and checksum on both sides. The source is opened
// read-only. progress gets a line per table.
func CopySQLiteToPostgres(ctx context.Context, sqlitePath, dsn string, progress io.Writer) ([]TableCopy, error) {
	src, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(sqlitePath, "file:")+"?mode=ro&_pragma=busy_timeout(10000)")
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", sqlitePath, err)
	}
	defer src.Close()
	src.SetMaxOpenConns(1)
	srcVersion, err := schemaVersion(ctx, src)
	if err != nil {
		return nil, fmt.Errorf("reading %s (is it a Hearth database?): %w", sqlitePath, err)
	}
	// Opening runs the migrations: the target gets the same schema.
	dst, err := Open(ctx, dsn, Options{MaxConns: 2})
	if err != nil {
		return nil, err
	}
	defer dst.Close()
	dstVersion, err := schemaVersion(ctx, dst.write)
	if err != nil {
		return nil, err
	}
	if srcVersion != dstVersion {
		return nil, fmt.Errorf("the SQLite database is at schema version %d, this binary's is %d: start the server on it once (or use the matching binary) first", srcVersion, dstVersion)
	}
	tables, err := copyableTables(ctx, src, dst.write)
	if err != nil {
		return nil, err
	}
	// A target with users, rooms or events is another installation (or
	// a finished migration): never write over it. Rows the migrations
	// themselves seed (stream heads) are replaced by the source's below.
	for _, t := range []string{"users", "rooms", "events"} {
		var n int64
		if err := dst.write.QueryRowContext(ctx, `SELECT count(*) FROM `+t).Scan(&n); err != nil {
			return nil, fmt.Errorf("checking %s in the target: %w", t, err)
		}
		if n > 0 {
			return nil, fmt.Errorf("the target database is not empty (%s has %d rows): migrate into a new database", t, n)
		}
	}
	var out []TableCopy
	// One snapshot of the source: a read transaction across every table.
	stx, err := src.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer stx.Rollback()
	err = dst.WriteTx(ctx, func(tx *sql.Tx) error {
		for i, t := range tables {
			cols, types, err := targetColumns(ctx, tx, t)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `DELETE FROM `+t); err != nil {
				return fmt.Errorf("clearing %s: %w", t, err)
			}
			c, err := copyTable(ctx, stx, tx, t, cols, types)
			if err != nil {
				return fmt.Errorf("copying %s: %w", t, err)
			}
			fmt.Fprintf(progress, "[%d/%d] %s: %d rows\n", i+1, len(tables), t, c.Rows)
			out = append(out, c)
		}
		n, err := dst.reindexSearch(ctx, stx, tx)
		if err != nil {
			return err
		}
		fmt.Fprintf(progress, "search index rebuilt: %d events\n", n)
		if err := resetSequences(ctx, tx); err != nil {
			return err
		}
		// Check what is about to be committed against the source.
		for _, c := range out {
			cols, types, err := targetColumns(ctx, tx, c.Table)
			if err != nil {
				return err
			}
			got, err := tableChecksum(ctx, tx, c.Table, cols, types)
			if err != nil {
				return err
			}
			if got.Rows != c.Rows || got.Checksum != c.Checksum {
				return fmt.Errorf("verification failed for %s: %d rows (checksum %s) in PostgreSQL, %d (%s) in SQLite", c.Table, got.Rows, got.Checksum, c.Rows, c.Checksum)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w (nothing was committed: the target is as it was, and migrate-db can be run again)", err)
	}
	fmt.Fprintf(progress, "verified: %d tables, row counts and checksums match\n", len(out))
	return out, nil
}

func schemaVersion(ctx context.Context, q Reader) (int, error) {
	var v int
	err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// copyableTables are the SQLite tables that exist in the target too, but
// for the migrations table (the target has its own) and SQLite's internals
// and full-text index tables, which the target keeps its own way.
func copyableTables(ctx context.Context, src *sql.DB, dst Reader) ([]string, error) {
	names, err := queryColumn[string](ctx, src, "listing SQLite tables", `SELECT name FROM sqlite_master WHERE type = 'table'
		AND name NOT LIKE 'sqlite_%' AND name <> 'schema_migrations' AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name`)
	if err != nil {
		return nil, err
	}
	virtual, err := queryColumn[string](ctx, src, "listing SQLite virtual tables", `SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL TABLE%'`)
	if err != nil {
		return nil, err
	}
	target, err := querySet[string](ctx, dst, "listing PostgreSQL tables", `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, n := range names {
		shadow := false
		for _, v := range virtual {
			shadow = shadow || strings.HasPrefix(n, v+"_")
		}
		if !shadow && target[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

// targetColumns are a PostgreSQL table's columns that take values (not
// generated ones), with their data types.
func targetColumns(ctx context.Context, q Reader, table string) ([]string, []string, error) {
	var cols, types []string
	err := queryEach(ctx, q, "listing columns of "+table, `SELECT column_name, data_type FROM information_schema.columns
		WHERE table_schema = current_schema() AND table_name = $1 AND is_generated = 'NEVER' ORDER BY ordinal_position`, []any{table},
		func(rows *sql.Rows) error {
			var c, t string
			if err := rows.Scan(&c, &t); err != nil {
				return err
			}
			cols, types = append(cols, c), append(types, t)
			return nil
		})
	return cols, types, err
}

const copyBatch = 500

// copyTable copies one table in multi-row INSERTs and returns its count
// and checksum as read from the source.
func copyTable(ctx context.Context, src *sql.Tx, dst *sql.Tx, table string, cols, types []string) (TableCopy, error) {
	c := TableCopy{Table: table}
	var sum uint64
	batch := make([]any, 0, copyBatch*len(cols))
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		n := len(batch) / len(cols)
		var b strings.Builder
		b.WriteString(`INSERT INTO ` + table + ` (` + strings.Join(quoteAll(cols), ", ") + `) VALUES `)
		for r := range n {
			if r > 0 {
				b.WriteString(", ")
			}
			b.WriteByte('(')
			for i := range cols {
				if i > 0 {
					b.WriteString(", ")
				}
				b.WriteString("$" + strconv.Itoa(r*len(cols)+i+1))
			}
			b.WriteByte(')')
		}
		_, err := dst.ExecContext(ctx, b.String(), batch...)
		batch = batch[:0]
		return err
	}
	err := queryEach(ctx, src, "reading "+table, `SELECT `+strings.Join(quoteAll(cols), ", ")+` FROM `+table, nil, func(rows *sql.Rows) error {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		for i, t := range types {
			vals[i] = toPostgres(vals[i], t)
		}
		sum += rowHash(vals, types)
		c.Rows++
		batch = append(batch, vals...)
		if len(batch) >= copyBatch*len(cols) {
			return flush()
		}
		return nil
	})
	if err != nil {
		return c, err
	}
	if err := flush(); err != nil {
		return c, err
	}
	c.Checksum = strconv.FormatUint(sum, 16)
	return c, nil
}

// tableChecksum reads a table back and sums its rows' hashes.
func tableChecksum(ctx context.Context, q Reader, table string, cols, types []string) (TableCopy, error) {
	c := TableCopy{Table: table}
	var sum uint64
	err := queryEach(ctx, q, "checking "+table, `SELECT `+strings.Join(quoteAll(cols), ", ")+` FROM `+table, nil, func(rows *sql.Rows) error {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		sum += rowHash(vals, types)
		c.Rows++
		return nil
	})
	c.Checksum = strconv.FormatUint(sum, 16)
	return c, err
}

// toPostgres converts a SQLite value for a PostgreSQL column: booleans are
// integers in SQLite.
func toPostgres(v any, pgType string) any {
	if pgType == "boolean" {
		if n, ok := v.(int64); ok {
			return n != 0
		}
	}
	return v
}

// rowHash is the first 8 bytes of SHA-256 over the row's values written
// the same way from either database; tables sum their rows' hashes, so the
// checksum does not depend on the order rows come in.
func rowHash(vals []any, types []string) uint64 {
	h := sha256.New()
	for i, v := range vals {
		var s string
		switch x := v.(type) {
		case nil:
			s = "\x00N"
		case bool:
			s = "i" + map[bool]string{true: "1", false: "0"}[x]
		case int64:
			if types[i] == "boolean" {
				s = "i" + map[bool]string{true: "1", false: "0"}[x != 0]
			} else {
				s = "i" + strconv.FormatInt(x, 10)
			}
		case float64:
			s = "f" + strconv.FormatFloat(x, 'g', -1, 64)
		case []byte:
			s = "b" + string(x)
		case string:
			s = "b" + x
		case time.Time:
			s = "t" + x.UTC().Format(time.RFC3339Nano)
		default:
			s = fmt.Sprintf("?%v", x)
		}
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	return binary.BigEndian.Uint64(h.Sum(nil)[:8])
}

// resetSequences moves every serial column's sequence past the copied
// rows, so the next insert does not collide with them.
func resetSequences(ctx context.Context, tx *sql.Tx) error {
	type serial struct{ table, column, seq string }
	var serials []serial
	err := queryEach(ctx, tx, "listing sequences", `SELECT table_name, column_name, pg_get_serial_sequence(quote_ident(table_name), column_name)
		FROM information_schema.columns WHERE table_schema = current_schema() AND column_default LIKE 'nextval(%'`, nil,
		func(rows *sql.Rows) error {
			var s serial
			var seq sql.NullString
			if err := rows.Scan(&s.table, &s.column, &seq); err != nil {
				return err
			}
			if seq.Valid {
				s.seq = seq.String
				serials = append(serials, s)
			}
			return nil
		})
	if err != nil {
		return err
	}
	for _, s := range serials {
		if _, err := tx.ExecContext(ctx, `SELECT setval($1, GREATEST((SELECT COALESCE(MAX(`+quote(s.column)+`), 0) FROM `+s.table+`), 1))`, s.seq); err != nil {
			return fmt.Errorf("moving sequence %s: %w", s.seq, err)
		}
	}
	return nil
}

func quote(ident string) string { return `"` + strings.ReplaceAll(ident, `"`, `""`) + `"` }

func quoteAll(idents []string) []string {
	out := make([]string, len(idents))
	for i, s := range idents {
		out[i] = quote(s)
	}
	return out
}

// reindexSearch fills the target's full-text index from the events of the
// source: the two databases keep it in different shapes (FTS5 against a
// tsvector), so it is rebuilt through IndexForSearch rather than copied.
func (db *DB) reindexSearch(ctx context.Context, src Reader, tx *sql.Tx) (int, error) {
	n := 0
	err := queryEach(ctx, src, "reading events to index", `SELECT stream_pos, event_id, room_id, type, sender, json
		FROM events WHERE type IN ('m.room.message', 'm.room.name', 'm.room.topic')
		AND NOT outlier AND NOT rejected AND NOT soft_failed AND redacted_by IS NULL ORDER BY stream_pos`, nil,
		func(rows *sql.Rows) error {
			var e Event
			var js string
			if err := rows.Scan(&e.StreamPos, &e.EventID, &e.RoomID, &e.Type, &e.Sender, &js); err != nil {
				return err
			}
			e.JSON = []byte(js)
			n++
			return db.IndexForSearch(ctx, tx, e)
		})
	return n, err
}
