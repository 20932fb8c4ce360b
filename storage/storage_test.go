package storage_test

import (
	"context"
	"database/sql"
	"fmt"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// Migrations run once; opening the same database again applies nothing and
// keeps the data.
func TestMigrationsAreIdempotent(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		url := hearthtest.DatabaseURL(t, b)
		db, err := storage.Open(ctx, url, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		err = db.WriteTx(ctx, func(tx *sql.Tx) error {
			return storage.InsertUser(ctx, tx, storage.User{UserID: "@a:x", Localpart: "a", CreatedTS: 1}, "A")
		})
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		db, err = storage.Open(ctx, url, storage.Options{})
		if err != nil {
			t.Fatalf("second open: %v", err)
		}
		defer db.Close()
		if ok, err := db.UserExists(ctx, "a"); err != nil || !ok {
			t.Fatalf("user lost across reopen: %v %v", ok, err)
		}
		var n int
		if err := db.Read().QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations").Scan(&n); err != nil || n == 0 {
			t.Fatalf("schema_migrations: %d %v", n, err)
		}
	})
}

// A failing transaction leaves nothing behind.
func TestWriteTxRollsBack(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		db := openDB(t, b)
		err := db.WriteTx(ctx, func(tx *sql.Tx) error {
			if err := storage.InsertUser(ctx, tx, storage.User{UserID: "@a:x", Localpart: "a", CreatedTS: 1}, ""); err != nil {
				return err
			}
			return storage.InsertUser(ctx, tx, storage.User{UserID: "@a:x", Localpart: "a", CreatedTS: 1}, "")
		})
		if err != storage.ErrConflict {
			t.Fatalf("duplicate insert: %v, want ErrConflict", err)
		}
		if ok, _ := db.UserExists(ctx, "a"); ok {
			t.Fatal("rolled-back user exists")
		}
	})
}

// openDB opens a new empty database on b, closed when the test ends.
func openDB(t *testing.T, b hearthtest.Backend) *storage.DB {
	t.Helper()
	db, err := storage.Open(context.Background(), hearthtest.DatabaseURL(t, b), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// Global account data of many users in one read: room account data of the
// same type, other types, deleted entries and users without any are left
// out, across the 500-user batches.
func TestGlobalAccountDataOfUsers(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		db, err := storage.Open(ctx, hearthtest.DatabaseURL(t, b), storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var users []string
		for i := range 1200 {
			users = append(users, fmt.Sprintf("@u%d:x", i))
		}
		put := func(user, room, typ, content string) {
			t.Helper()
			if _, err := db.PutAccountData(ctx, user, room, typ, []byte(content)); err != nil {
				t.Fatal(err)
			}
		}
		put(users[0], "", "m.push_rules", `{"a":0}`)
		put(users[700], "", "m.push_rules", `{"a":700}`)
		put(users[1199], "", "m.push_rules", `{"a":1199}`)
		put(users[1], "!r:x", "m.push_rules", `{"room":1}`)
		put(users[2], "", "m.other", `{"other":2}`)
		put(users[3], "", "m.push_rules", `{"a":3}`)
		put(users[3], "", "m.push_rules", `{}`) // deleted
		got, err := db.GlobalAccountDataOfUsers(ctx, users, "m.push_rules")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]string{users[0]: `{"a":0}`, users[700]: `{"a":700}`, users[1199]: `{"a":1199}`}
		if len(got) != len(want) {
			t.Fatalf("got %d users, want %d: %q", len(got), len(want), got)
		}
		for u, c := range want {
			if string(got[u]) != c {
				t.Errorf("%s: %s, want %s", u, got[u], c)
			}
		}
	})
}
