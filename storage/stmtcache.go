package storage

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"
	"reflect"
	"strings"

	"modernc.org/sqlite"
)

// SQLite statement cache.
//
// modernc.org/sqlite parses and plans every statement anew on each
// ExecContext/QueryContext, and database/sql keeps no prepared statements
// unless asked to; parsing was 10-17% of the CPU of a message send
// (docs/performance.md). cachingConnector wraps the driver so that each
// SQLite connection keeps its recently used statements prepared, keyed by
// query text, for every query in Hearth without changing any call site.
// A statement is checked out while it runs (or while its rows are open), so
// two uses on one connection at once (rows still open while the same query
// runs again in a transaction) each get their own statement.
//
// PostgreSQL needs none of this: pgx caches prepared statements per
// connection by default.

// stmtCacheSize bounds the idle prepared statements per connection; queries
// built with a variable number of placeholders make many distinct texts,
// the least recently used are finalised.
const stmtCacheSize = 128

// cachingConnector opens SQLite connections that cache their statements.
type cachingConnector struct {
	driver.Connector
}

// newCachingConnector returns the connector for a SQLite DSN.
func newCachingConnector(dsn string) (driver.Connector, error) {
	c, err := sqlite.NewConnector(dsn)
	if err != nil {
		return nil, err
	}
	return cachingConnector{c}, nil
}

func (c cachingConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &cachingConn{conn: conn, idle: map[string]*list.Element{}, lru: list.New()}, nil
}

// cachingConn is one SQLite connection with its idle prepared statements.
// database/sql uses a connection from one goroutine at a time, so it needs
// no lock.
type cachingConn struct {
	conn driver.Conn
	idle map[string]*list.Element // query → element of lru holding *cachedStmt
	lru  *list.List               // front: most recently returned
}

type cachedStmt struct {
	query string
	stmt  driver.Stmt
}

// checkout returns a prepared statement for query, taken out of the cache
// (or newly prepared); checkin puts it back.
func (c *cachingConn) checkout(ctx context.Context, query string) (driver.Stmt, error) {
	if e, ok := c.idle[query]; ok {
		delete(c.idle, query)
		c.lru.Remove(e)
		return e.Value.(*cachedStmt).stmt, nil
	}
	return c.conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *cachingConn) checkin(query string, s driver.Stmt) {
	if _, ok := c.idle[query]; ok || c.conn == nil {
		_ = s.Close() // a second copy of a statement in use twice at once
		return
	}
	c.idle[query] = c.lru.PushFront(&cachedStmt{query: query, stmt: s})
	if c.lru.Len() > stmtCacheSize {
		old := c.lru.Remove(c.lru.Back()).(*cachedStmt)
		delete(c.idle, old.query)
		_ = old.stmt.Close()
	}
}

// cacheable reports whether a query can be kept prepared: a script of
// several statements (migrations, the write probe) is run as it is.
func cacheable(query string) bool {
	return !strings.Contains(query, ";")
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if !cacheable(query) {
		return c.conn.(driver.ExecerContext).ExecContext(ctx, query, args)
	}
	s, err := c.checkout(ctx, query)
	if err != nil {
		return nil, err
	}
	res, err := s.(driver.StmtExecContext).ExecContext(ctx, args)
	c.checkin(query, s)
	return res, err
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	if !cacheable(query) {
		return c.conn.(driver.QueryerContext).QueryContext(ctx, query, args)
	}
	s, err := c.checkout(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := s.(driver.StmtQueryContext).QueryContext(ctx, args)
	if err != nil {
		c.checkin(query, s)
		return nil, err
	}
	return &cachedRows{Rows: rows, done: func() { c.checkin(query, s) }}, nil
}

func (c *cachingConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (c *cachingConn) Prepare(query string) (driver.Stmt, error) { return c.conn.Prepare(query) }

func (c *cachingConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *cachingConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	return c.conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
}

// Close finalises the cached statements first: SQLite keeps a connection
// with unfinalised statements open.
func (c *cachingConn) Close() error {
	var errs []error
	for e := c.lru.Front(); e != nil; e = e.Next() {
		errs = append(errs, e.Value.(*cachedStmt).stmt.Close())
	}
	c.idle, c.lru = map[string]*list.Element{}, list.New()
	errs = append(errs, c.conn.Close())
	c.conn = nil
	return errors.Join(errs...)
}

func (c *cachingConn) Ping(ctx context.Context) error {
	return c.conn.(driver.Pinger).Ping(ctx)
}

func (c *cachingConn) ResetSession(ctx context.Context) error {
	return c.conn.(driver.SessionResetter).ResetSession(ctx)
}

func (c *cachingConn) IsValid() bool {
	return c.conn.(driver.Validator).IsValid()
}

// cachedRows returns its statement to the cache when closed; the column
// type methods pass through to the driver's rows.
type cachedRows struct {
	driver.Rows
	done func()
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	if r.done != nil {
		r.done()
		r.done = nil
	}
	return err
}

func (r *cachedRows) ColumnTypeDatabaseTypeName(i int) string {
	return r.Rows.(driver.RowsColumnTypeDatabaseTypeName).ColumnTypeDatabaseTypeName(i)
}

func (r *cachedRows) ColumnTypeLength(i int) (int64, bool) {
	return r.Rows.(driver.RowsColumnTypeLength).ColumnTypeLength(i)
}

func (r *cachedRows) ColumnTypeNullable(i int) (bool, bool) {
	return r.Rows.(driver.RowsColumnTypeNullable).ColumnTypeNullable(i)
}

func (r *cachedRows) ColumnTypePrecisionScale(i int) (int64, int64, bool) {
	return r.Rows.(driver.RowsColumnTypePrecisionScale).ColumnTypePrecisionScale(i)
}

func (r *cachedRows) ColumnTypeScanType(i int) reflect.Type {
	return r.Rows.(driver.RowsColumnTypeScanType).ColumnTypeScanType(i)
}
