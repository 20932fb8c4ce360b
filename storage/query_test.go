package storage_test

import (
	"context"
	"database/sql"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// Three rows, (1, 'c'), (2, 'b'), (3, 'a'), that a query orders.
const queryTestRows = `WITH t(n, s) AS (VALUES (1, 'c'), (2, 'b'), (3, 'a')) `

type queryTestRow struct {
	N int64
	S string
}

func scanQueryTestRow(rows *sql.Rows, r *queryTestRow) error { return rows.Scan(&r.N, &r.S) }

// The query helpers return rows in query order, nil slices and empty maps
// for no rows, and run inside transactions as well as on the pool.
func TestQueryHelpersResults(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		db := openDB(t, b)
		q := db.Read()

		list, err := storage.QueryList(ctx, q, "listing", queryTestRows+`SELECT n, s FROM t WHERE n >= $1 ORDER BY s`, scanQueryTestRow, 2)
		if want := []queryTestRow{{3, "a"}, {2, "b"}}; err != nil || !reflect.DeepEqual(list, want) {
			t.Errorf("queryList = %v, %v; want %v", list, err, want)
		}
		col, err := storage.QueryColumn[string](ctx, q, "listing", queryTestRows+`SELECT s FROM t ORDER BY n DESC`)
		if want := []string{"a", "b", "c"}; err != nil || !reflect.DeepEqual(col, want) {
			t.Errorf("queryColumn = %v, %v; want %v", col, err, want)
		}
		m, err := storage.QueryMap[string, int64](ctx, q, "mapping", queryTestRows+`SELECT s, n FROM t`)
		if want := map[string]int64{"a": 3, "b": 2, "c": 1}; err != nil || !reflect.DeepEqual(m, want) {
			t.Errorf("queryMap = %v, %v; want %v", m, err, want)
		}
		set, err := storage.QuerySet[string](ctx, q, "collecting", queryTestRows+`SELECT s FROM t WHERE n <= $1`, 2)
		if want := map[string]bool{"c": true, "b": true}; err != nil || !reflect.DeepEqual(set, want) {
			t.Errorf("querySet = %v, %v; want %v", set, err, want)
		}
		var seen []int64
		err = storage.QueryEach(ctx, q, "walking", queryTestRows+`SELECT n FROM t ORDER BY s DESC`, nil, func(rows *sql.Rows) error {
			var n int64
			err := rows.Scan(&n)
			seen = append(seen, n)
			return err
		})
		if want := []int64{1, 2, 3}; err != nil || !reflect.DeepEqual(seen, want) {
			t.Errorf("queryEach saw %v, %v; want %v", seen, err, want)
		}

		// No rows: nil slices (orEmpty makes them empty), empty maps.
		none := queryTestRows + `SELECT n, s FROM t WHERE n > $1`
		if list, err := storage.QueryList(ctx, q, "listing", none, scanQueryTestRow, 3); err != nil || list != nil {
			t.Errorf("queryList of nothing = %#v, %v; want nil", list, err)
		}
		if col, err := storage.OrEmpty(storage.QueryColumn[int64](ctx, q, "listing", queryTestRows+`SELECT n FROM t WHERE n > 3`)); err != nil || col == nil || len(col) != 0 {
			t.Errorf("orEmpty(queryColumn) of nothing = %#v, %v; want empty", col, err)
		}
		if m, err := storage.QueryMap[int64, string](ctx, q, "mapping", none, 3); err != nil || m == nil || len(m) != 0 {
			t.Errorf("queryMap of nothing = %#v, %v; want empty map", m, err)
		}
		if set, err := storage.QuerySet[int64](ctx, q, "collecting", queryTestRows+`SELECT n FROM t WHERE n > 3`); err != nil || set == nil || len(set) != 0 {
			t.Errorf("querySet of nothing = %#v, %v; want empty map", set, err)
		}

		// A transaction is a Reader too.
		err = db.WriteTx(ctx, func(tx *sql.Tx) error {
			for _, lp := range []string{"b", "a", "c"} {
				if err := storage.InsertUser(ctx, tx, storage.User{UserID: "@" + lp + ":x", Localpart: lp, CreatedTS: 1}, ""); err != nil {
					return err
				}
			}
			got, err := storage.QueryColumn[string](ctx, tx, "listing users", `SELECT localpart FROM users ORDER BY localpart DESC`)
			if want := []string{"c", "b", "a"}; err == nil && !reflect.DeepEqual(got, want) {
				t.Errorf("queryColumn in a transaction = %v; want %v", got, want)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	})
}

// Every error the helpers return names the query (what), keeps the cause
// for errors.Is, and an error met while stepping through the rows
// (rows.Err) is returned, not lost.
func TestQueryHelpersErrors(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		db := openDB(t, b)
		q := db.Read()
		wantWhat := func(t *testing.T, helper string, err error, what string) {
			t.Helper()
			if err == nil || !strings.HasPrefix(err.Error(), what+": ") {
				t.Errorf("%s: error %v, want one starting %q", helper, err, what+": ")
			}
		}

		// The query fails.
		_, err := storage.QueryList(ctx, q, "listing nothing", `SELECT n FROM no_such_table`, func(*sql.Rows, *int64) error { return nil })
		wantWhat(t, "queryList", err, "listing nothing")
		_, err = storage.QueryColumn[int64](ctx, q, "listing column", `SELECT n FROM no_such_table`)
		wantWhat(t, "queryColumn", err, "listing column")
		_, err = storage.QueryMap[int64, int64](ctx, q, "mapping nothing", `SELECT n, n FROM no_such_table`)
		wantWhat(t, "queryMap", err, "mapping nothing")
		_, err = storage.QuerySet[int64](ctx, q, "collecting nothing", `SELECT n FROM no_such_table`)
		wantWhat(t, "querySet", err, "collecting nothing")
		err = storage.QueryEach(ctx, q, "walking nothing", `SELECT n FROM no_such_table`, nil, func(*sql.Rows) error { return nil })
		wantWhat(t, "queryEach", err, "walking nothing")

		// A row does not scan.
		_, err = storage.QueryColumn[int64](ctx, q, "scanning", queryTestRows+`SELECT s FROM t`)
		wantWhat(t, "queryColumn scan", err, "scanning")
		if list, err := storage.QueryList(ctx, q, "scanning", queryTestRows+`SELECT s, n FROM t`, scanQueryTestRow); list != nil {
			t.Errorf("queryList returned %v with error %v", list, err)
		}
		_, err = storage.QueryMap[string, int64](ctx, q, "scanning map", queryTestRows+`SELECT n, s FROM t`)
		wantWhat(t, "queryMap scan", err, "scanning map")

		// The callback fails.
		stop := errors.New("stop")
		calls := 0
		err = storage.QueryEach(ctx, q, "walking", queryTestRows+`SELECT n FROM t`, nil, func(*sql.Rows) error { calls++; return stop })
		wantWhat(t, "queryEach callback", err, "walking")
		if !errors.Is(err, stop) || calls != 1 {
			t.Errorf("queryEach callback error: %v after %d calls, want stop after 1", err, calls)
		}

		// The third row fails while being computed, after two good rows:
		// only rows.Err reports it.
		failing := queryTestRows + `SELECT CASE WHEN n < 3 THEN n ELSE abs(-9223372036854775807 - 1) END FROM t`
		if db.Dialect() == storage.Postgres {
			failing = queryTestRows + `SELECT 6 / (3 - n) FROM t`
		}
		var seen int
		err = storage.QueryEach(ctx, q, "stepping", failing, nil, func(*sql.Rows) error { seen++; return nil })
		wantWhat(t, "queryEach rows.Err", err, "stepping")
		if seen != 2 {
			t.Errorf("queryEach saw %d rows before the failing one, want 2 (the error should come from rows.Err)", seen)
		}
		col, err := storage.QueryColumn[int64](ctx, q, "stepping column", failing)
		wantWhat(t, "queryColumn rows.Err", err, "stepping column")
		if col != nil {
			t.Errorf("queryColumn returned %v with error %v", col, err)
		}
	})
}
