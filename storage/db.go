// Package storage is Hearth's database: one set of SQL for SQLite and
// PostgreSQL, with a small dialect layer for the few places they differ.
//
// SQLite runs in WAL mode with one writer connection (SQLite allows one writer
// at a time anyway; queueing in Go is cheaper than busy-waiting in SQLite) and
// a pool of readers. PostgreSQL uses one pool for both.
package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// Dialect names the SQL engine behind a DB.
type Dialect int

const (
	SQLite Dialect = iota
	Postgres
)

func (d Dialect) String() string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite"
}

// Options tune how a database is opened.
type Options struct {
	// Synchronous is SQLite's PRAGMA synchronous: "normal" (default) or "full".
	Synchronous string
	// MaxConns bounds the PostgreSQL pool or the SQLite reader pool.
	MaxConns int
}

// DB is an open database with its dialect. It is safe for concurrent use.
type DB struct {
	dialect Dialect
	dsn     string  // PostgreSQL: for session connections (see cluster.go)
	write   *sql.DB // SQLite: exactly one connection
	read    *sql.DB // SQLite: read-only pool; PostgreSQL: same as write

	hooksMu     sync.Mutex
	afterCommit map[*sql.Tx][]func()

	// txObserver, when set, is told how long each write transaction took
	// from BEGIN to COMMIT (or rollback), for the metrics.
	txObserver atomic.Pointer[func(d time.Duration, committed bool)]
}

// ObserveWriteTx sets a function told of every write transaction's
// duration and outcome (the server's metrics).
func (db *DB) ObserveWriteTx(fn func(d time.Duration, committed bool)) { db.txObserver.Store(&fn) }

// PoolStats are the connection pool statistics of the writer and of the
// readers (the same pool on PostgreSQL).
func (db *DB) PoolStats() (write, read sql.DBStats) { return db.write.Stats(), db.read.Stats() }

// IsPostgres reports whether a database URL names PostgreSQL.
func IsPostgres(dbURL string) bool {
	return strings.HasPrefix(dbURL, "postgres://") || strings.HasPrefix(dbURL, "postgresql://")
}

// Open opens (creating if needed) the database at dbURL, a SQLite file path
// or a postgres:// DSN, and runs pending migrations.
func Open(ctx context.Context, dbURL string, opts Options) (*DB, error) {
	if opts.MaxConns <= 0 {
		opts.MaxConns = 8
	}
	var db *DB
	var err error
	if IsPostgres(dbURL) {
		db, err = openPostgres(ctx, dbURL, opts)
	} else {
		db, err = openSQLite(ctx, dbURL, opts)
	}
	if err != nil {
		return nil, err
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

func openPostgres(ctx context.Context, dsn string, opts Options) (*DB, error) {
	pool, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("opening PostgreSQL: %w", err)
	}
	pool.SetMaxOpenConns(opts.MaxConns)
	pool.SetMaxIdleConns(opts.MaxConns)
	pool.SetConnMaxIdleTime(5 * time.Minute)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.PingContext(pctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("cannot reach PostgreSQL at %s (is it running, and are the credentials right?): %w", redactDSN(dsn), err)
	}
	return &DB{dialect: Postgres, dsn: dsn, write: pool, read: pool}, nil
}

// redactDSN hides the password of a DSN for error messages and logs.
func redactDSN(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return "(unparsable DSN)"
	}
	return u.Redacted()
}

func openSQLite(ctx context.Context, path string, opts Options) (*DB, error) {
	path = strings.TrimPrefix(path, "file:")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("creating database directory: %w", err)
		}
	}
	sync := "NORMAL"
	if opts.Synchronous == "full" {
		sync = "FULL"
	}
	common := "_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(" + sync + ")"
	// _txlock=immediate takes the write lock at BEGIN, so a transaction never
	// fails half-way with SQLITE_BUSY when it first writes.
	writeConn, err := newCachingConnector("file:" + path + "?_pragma=journal_mode(WAL)&_txlock=immediate&" + common)
	if err != nil {
		return nil, fmt.Errorf("opening SQLite database %s: %w", path, err)
	}
	write := sql.OpenDB(writeConn)
	write.SetMaxOpenConns(1)
	write.SetMaxIdleConns(1)
	write.SetConnMaxLifetime(0)
	write.SetConnMaxIdleTime(0)
	if err := write.PingContext(ctx); err != nil {
		write.Close()
		return nil, fmt.Errorf("opening SQLite database %s (is the directory writable?): %w", path, err)
	}
	// Probe a write now so a read-only file or directory fails at start.
	if _, err := write.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS hearth_write_probe (x INTEGER); DROP TABLE hearth_write_probe"); err != nil {
		write.Close()
		return nil, fmt.Errorf("SQLite database %s is not writable (check permissions of the file and its directory): %w", path, err)
	}
	readConn, err := newCachingConnector("file:" + path + "?_pragma=query_only(1)&" + common)
	if err != nil {
		write.Close()
		return nil, fmt.Errorf("opening SQLite readers: %w", err)
	}
	read := sql.OpenDB(readConn)
	read.SetMaxOpenConns(opts.MaxConns)
	read.SetMaxIdleConns(opts.MaxConns)
	return &DB{dialect: SQLite, write: write, read: read}, nil
}

// Dialect reports the engine.
func (db *DB) Dialect() Dialect { return db.dialect }

// Close closes all connections.
func (db *DB) Close() error {
	err := db.write.Close()
	if db.read != db.write {
		err = errors.Join(err, db.read.Close())
	}
	return err
}

// Reader is what read-only queries run on: the pool or a transaction.
type Reader interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Read returns the pool for read-only queries.
func (db *DB) Read() Reader { return db.read }

// WriteTx runs fn in a transaction and commits it; any error rolls back, so
// a failed request never leaves a partial write.
func (db *DB) WriteTx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := db.write.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	if obs := db.txObserver.Load(); obs != nil {
		// From BEGIN on: the time spent waiting for SQLite's one writer
		// connection is not the transaction's.
		start := time.Now()
		defer func() { (*obs)(time.Since(start), err == nil) }()
	}
	err = fn(tx)
	db.hooksMu.Lock()
	hooks := db.afterCommit[tx]
	delete(db.afterCommit, tx)
	db.hooksMu.Unlock()
	if err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	for _, h := range hooks {
		h()
	}
	return nil
}

// AfterCommit runs fn once tx (begun by WriteTx) has committed, and never if
// it rolls back: the place to wake readers about what tx wrote.
func (db *DB) AfterCommit(tx *sql.Tx, fn func()) {
	db.hooksMu.Lock()
	defer db.hooksMu.Unlock()
	if db.afterCommit == nil {
		db.afterCommit = map[*sql.Tx][]func(){}
	}
	db.afterCommit[tx] = append(db.afterCommit[tx], fn)
}

// Ping checks the database answers (the health endpoint uses it).
func (db *DB) Ping(ctx context.Context) error {
	return db.read.PingContext(ctx)
}

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// ErrConflict is returned when a unique row already exists.
var ErrConflict = errors.New("already exists")

// isUniqueViolation reports whether err is a unique-constraint failure in
// either dialect.
func isUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint failed") || // SQLite
		strings.Contains(s, "SQLSTATE 23505") // PostgreSQL
}

func nowMillis() int64 { return time.Now().UnixMilli() }
