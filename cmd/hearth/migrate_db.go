package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/hearth-matrix/hearth/storage"
)

// migrate-db --to postgres://...: copies the installation's SQLite
// database into an empty PostgreSQL database, table by table, and checks
// every table's row count and checksum. The SQLite file is only read.
func migrateDB(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("migrate-db", flag.ContinueOnError)
	fset.SetOutput(stderr)
	configPath, applyFlags := configFlags(fset)
	to := fset.String("to", "", "DSN of the empty PostgreSQL database to copy into (postgres://...)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if !storage.IsPostgres(*to) {
		return fmt.Errorf("--to postgres://user:password@host/database is required")
	}
	cfg, err := loadConfig(*configPath, applyFlags, newLogger(stderr, "warn", "text"))
	if err != nil {
		return err
	}
	if storage.IsPostgres(cfg.DatabaseURL) {
		return fmt.Errorf("this installation already uses PostgreSQL")
	}
	if _, err := storage.CopySQLiteToPostgres(ctx, cfg.DatabaseURL, *to, stdout); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "done: set database_url to the PostgreSQL DSN in %s/hearth.yaml (or start with --database-url) and keep the data directory: it holds the signing key and media\n", cfg.DataDir)
	return nil
}
