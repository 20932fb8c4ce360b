package storage

import (
	"context"
	"database/sql"
)

// The query helpers, for query_test.go (an external test package, to open
// databases the way the other storage tests do).

func QueryEach(ctx context.Context, q Reader, what, query string, args []any, fn func(*sql.Rows) error) error {
	return queryEach(ctx, q, what, query, args, fn)
}

func QueryList[T any](ctx context.Context, q Reader, what, query string, scan func(*sql.Rows, *T) error, args ...any) ([]T, error) {
	return queryList(ctx, q, what, query, scan, args...)
}

func QueryColumn[T any](ctx context.Context, q Reader, what, query string, args ...any) ([]T, error) {
	return queryColumn[T](ctx, q, what, query, args...)
}

func QueryMap[K comparable, V any](ctx context.Context, q Reader, what, query string, args ...any) (map[K]V, error) {
	return queryMap[K, V](ctx, q, what, query, args...)
}

func OrEmpty[T any](s []T, err error) ([]T, error) { return orEmpty(s, err) }

func QuerySet[K comparable](ctx context.Context, q Reader, what, query string, args ...any) (map[K]bool, error) {
	return querySet[K](ctx, q, what, query, args...)
}
