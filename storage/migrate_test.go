package storage_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// Migration numbers may have gaps (branches reserve numbers): a migration
// below the highest applied one that is not yet recorded still runs, as
// when a branch's 0020 reached a database before another branch's 0018.
func TestMigrationBelowAppliedRuns(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		url := hearthtest.DatabaseURL(t, b)
		db, err := storage.Open(ctx, url, storage.Options{})
		if err != nil {
			t.Fatal(err)
		}
		// Unapply 0017 while 0020 stays applied.
		err = db.WriteTx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "DROP TABLE openid_tokens"); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, "DELETE FROM schema_migrations WHERE version = 17")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		db, err = storage.Open(ctx, url, storage.Options{})
		if err != nil {
			t.Fatalf("reopen: %v", err)
		}
		defer db.Close()
		var n int
		if err := db.Read().QueryRowContext(ctx, "SELECT COUNT(*) FROM openid_tokens").Scan(&n); err != nil {
			t.Fatalf("0017 was not applied again: %v", err)
		}
		if err := db.Read().QueryRowContext(ctx, "SELECT COUNT(*) FROM schema_migrations WHERE version = 17").Scan(&n); err != nil || n != 1 {
			t.Fatalf("0017 not recorded: %d %v", n, err)
		}
	})
}
