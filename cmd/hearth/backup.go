package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/hearth-matrix/hearth/backup"
)

// backup --to DIR: a consistent copy of the installation, taken while the
// server runs (see package backup).
func backupCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("backup", flag.ContinueOnError)
	fset.SetOutput(stderr)
	configPath, applyFlags := configFlags(fset)
	to := fset.String("to", "", "directory to write the backup into (new or empty)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *to == "" {
		return fmt.Errorf("--to DIR is required")
	}
	if *configPath == "" && os.Getenv("HEARTH_CONFIG") == "" {
		// Back up an installation that exists, never a fresh one that
		// loading the config would create.
		dir := dataDirOf(fset)
		if _, err := os.Stat(filepath.Join(dir, "hearth.yaml")); errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("no installation in %s (no hearth.yaml): give --data-dir DIR or --config FILE", dir)
		}
	}
	cfg, err := loadConfig(*configPath, applyFlags, newLogger(stderr, "warn", "text"))
	if err != nil {
		return err
	}
	_, err = backup.Backup(ctx, cfg, *to, stdout)
	return err
}

// restore --from DIR --data-dir DIR [--database-url URL]: checks a backup
// against its manifest and restores it into an empty data directory.
func restoreCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("restore", flag.ContinueOnError)
	fset.SetOutput(stderr)
	from := fset.String("from", "", "backup directory written by hearth backup")
	dataDir := fset.String("data-dir", "", "data directory to restore into (new or empty)")
	dbURL := fset.String("database-url", "", "PostgreSQL database to restore into (empty), for a PostgreSQL backup")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if *from == "" || *dataDir == "" {
		return fmt.Errorf("--from DIR and --data-dir DIR are required")
	}
	return backup.Restore(ctx, *from, *dataDir, *dbURL, stdout)
}

// dataDirOf is the data directory the parsed flags (or the environment, or
// the default) name.
func dataDirOf(fset *flag.FlagSet) string {
	if f := fset.Lookup("data-dir"); f != nil && f.Value.String() != "" {
		return f.Value.String()
	}
	if d := os.Getenv("HEARTH_DATA_DIR"); d != "" {
		return d
	}
	return "./hearth-data"
}
