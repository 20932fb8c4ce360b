package importdendrite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"sort"
	"strings"

	_ "github.com/jackc/pgx/v5/stdlib" // PostgreSQL sources
	_ "modernc.org/sqlite"             // SQLite sources
)

// source is Dendrite's databases, read only. A table is found in whichever
// database holds it: Dendrite may keep one database for everything or one
// per component.
type source struct {
	dbs     []*sourceDB
	tables  map[string]*sourceDB
	missing []string // SQLite files the config names that do not exist
}

type sourceDB struct {
	name string // the connection string without its password
	pg   bool
	db   *sql.DB
	// q is where queries go: the database (SQLite, opened mode=ro) or a
	// READ ONLY transaction (PostgreSQL), so no statement can write.
	q interface {
		QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
		QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	}
	tx      *sql.Tx
	columns map[string][]string // table -> columns
}

func openSource(ctx context.Context, c *dendriteConfig) (*source, error) {
	s := &source{tables: map[string]*sourceDB{}}
	for _, cs := range c.databases {
		d := &sourceDB{columns: map[string][]string{}}
		if p, ok := c.sqlitePath(cs); ok {
			if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
				// A component that never stored anything (mscs with no MSC
				// enabled) leaves no file.
				s.missing = append(s.missing, p)
				continue
			} else if err != nil {
				s.close()
				return nil, fmt.Errorf("Dendrite database %s: %w", cs, err)
			}
			db, err := sql.Open("sqlite", "file:"+p+"?mode=ro&_pragma=busy_timeout(5000)")
			if err != nil {
				s.close()
				return nil, err
			}
			d.name, d.db, d.q = p, db, db
		} else {
			db, err := sql.Open("pgx", cs)
			if err != nil {
				s.close()
				return nil, err
			}
			tx, err := db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
			if err != nil {
				db.Close()
				s.close()
				return nil, fmt.Errorf("Dendrite database %s: %w", redact(cs), err)
			}
			d.name, d.pg, d.db, d.tx, d.q = redact(cs), true, db, tx, tx
		}
		s.dbs = append(s.dbs, d)
		if err := d.listTables(ctx); err != nil {
			s.close()
			return nil, err
		}
		for t := range d.columns {
			if _, dup := s.tables[t]; !dup {
				s.tables[t] = d
			}
		}
	}
	return s, nil
}

func redact(cs string) string {
	u, err := url.Parse(cs)
	if err != nil || u.User == nil {
		return cs
	}
	u.User = url.User(u.User.Username())
	return u.String()
}

func (d *sourceDB) listTables(ctx context.Context) error {
	var q string
	if d.pg {
		q = `SELECT table_name, column_name FROM information_schema.columns
			WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`
	} else {
		q = `SELECT m.name, p.name FROM sqlite_master m, pragma_table_info(m.name) p
			WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid`
	}
	rows, err := d.q.QueryContext(ctx, q)
	if err != nil {
		return fmt.Errorf("listing the tables of %s: %w", d.name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var t, col string
		if err := rows.Scan(&t, &col); err != nil {
			return err
		}
		d.columns[t] = append(d.columns[t], col)
	}
	return rows.Err()
}

func (s *source) close() {
	for _, d := range s.dbs {
		if d.tx != nil {
			_ = d.tx.Rollback()
		}
		d.db.Close()
	}
}

func (s *source) has(table string) bool { _, ok := s.tables[table]; return ok }

// hasColumn reports whether a table has a column (older Dendrite
// versions lack some).
func (s *source) hasColumn(table, col string) bool {
	d, ok := s.tables[table]
	if !ok {
		return false
	}
	for _, c := range d.columns[table] {
		if c == col {
			return true
		}
	}
	return false
}

// each runs a query on the database holding table, calling fn per row. A
// missing table is no rows. In the query, ARR(col) stands for a column
// that is a JSON array in SQLite and an array in PostgreSQL; it reads as
// JSON text either way.
func (s *source) each(ctx context.Context, table, query string, fn func(*sql.Rows) error, args ...any) error {
	d, ok := s.tables[table]
	if !ok {
		return nil
	}
	query = expandArrays(query, d.pg)
	rows, err := d.q.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("reading %s: %w", table, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return fmt.Errorf("reading %s: %w", table, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading %s: %w", table, err)
	}
	return nil
}

// count is the number of rows of a table (0 when missing).
func (s *source) count(ctx context.Context, table string) (int64, error) {
	d, ok := s.tables[table]
	if !ok {
		return 0, nil
	}
	var n int64
	err := d.q.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n)
	return n, err
}

func expandArrays(q string, pg bool) string {
	for {
		i := strings.Index(q, "ARR(")
		if i < 0 {
			return q
		}
		j := strings.IndexByte(q[i:], ')')
		col := q[i+4 : i+j]
		repl := col
		if pg {
			repl = "COALESCE(array_to_json(" + col + ")::text, '[]')"
		}
		q = q[:i] + repl + q[i+j+1:]
	}
}

// nids decodes a JSON array of numeric IDs.
func nids(s string) ([]int64, error) {
	var out []int64
	if s == "" || s == "null" {
		return nil, nil
	}
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, fmt.Errorf("decoding %q: %w", s, err)
	}
	return out, nil
}

// tableNames lists every table of every source database.
func (s *source) tableNames() []string {
	var out []string
	for t := range s.tables {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}
