package storage_test

import (
	"context"
	"database/sql"
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
		db, err := storage.Open(ctx, hearthtest.DatabaseURL(t, b), storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		err = db.WriteTx(ctx, func(tx *sql.Tx) error {
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
