package storage

import (
	"context"
	"database/sql"
	"fmt"
)

// The query helpers: every multi-row query in storage reads its rows
// through queryEach, which closes them, checks rows.Err and wraps every
// error with what names the query ("loading receipts: ..."). Results come
// in query order. A query with no rows gives a nil slice (wrap it in
// orEmpty where callers expect an empty one) and an empty map.

// queryEach runs a query and calls fn for each row, in order.
func queryEach(ctx context.Context, q Reader, what, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// queryList runs a query and returns one value per row, which scan fills
// from the row.
func queryList[T any](ctx context.Context, q Reader, what, query string, scan func(*sql.Rows, *T) error, args ...any) ([]T, error) {
	var out []T
	err := queryEach(ctx, q, what, query, args, func(rows *sql.Rows) error {
		var v T
		if err := scan(rows, &v); err != nil {
			return err
		}
		out = append(out, v)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// queryColumn runs a query of one column and returns its values.
func queryColumn[T any](ctx context.Context, q Reader, what, query string, args ...any) ([]T, error) {
	return queryList(ctx, q, what, query, func(rows *sql.Rows, v *T) error { return rows.Scan(v) }, args...)
}

// queryMap runs a query of two columns, key and value, into a map.
func queryMap[K comparable, V any](ctx context.Context, q Reader, what, query string, args ...any) (map[K]V, error) {
	out := map[K]V{}
	err := queryEach(ctx, q, what, query, args, func(rows *sql.Rows) error {
		var k K
		var v V
		if err := rows.Scan(&k, &v); err != nil {
			return err
		}
		out[k] = v
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// querySet runs a query of one column into the set of its values.
func querySet[K comparable](ctx context.Context, q Reader, what, query string, args ...any) (map[K]bool, error) {
	out := map[K]bool{}
	err := queryEach(ctx, q, what, query, args, func(rows *sql.Rows) error {
		var k K
		if err := rows.Scan(&k); err != nil {
			return err
		}
		out[k] = true
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// orEmpty turns the nil slice of a query that found nothing into an empty
// one, for results whose callers tell the two apart (JSON [] versus null).
func orEmpty[T any](s []T, err error) ([]T, error) {
	if s == nil && err == nil {
		return []T{}, nil
	}
	return s, err
}
