// Package backup makes and restores a consistent copy of a Hearth
// installation while the server runs: the database, the media store, the
// signing keys and the config, with a manifest of every file's size and
// SHA-256 so that a damaged backup is refused by name, not restored.
package backup

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/storage"
)

// ManifestFile names the manifest inside a backup directory.
const ManifestFile = "manifest.json"

// Database files inside a backup: a SQLite snapshot or a pg_dump archive.
const (
	sqliteFile   = "database.sqlite"
	postgresFile = "database.pgdump"
)

// Manifest describes a backup.
type Manifest struct {
	Format     int       `json:"format"` // 1
	Created    time.Time `json:"created"`
	ServerName string    `json:"server_name"`
	Database   string    `json:"database"` // "sqlite" or "postgres"
	Files      []File    `json:"files"`
}

// File is one file of a backup, by its slash-separated path in it.
type File struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Backup copies the installation cfg describes into dir, which must not
// exist or be empty. The database is copied first, as one consistent
// snapshot (SQLite's VACUUM INTO; pg_dump for PostgreSQL); media files are
// content-addressed and never change once written, so every file the
// snapshot refers to is still there when the media store is copied after
// it. progress gets a line per step.
func Backup(ctx context.Context, cfg config.Config, dir string, progress io.Writer) (Manifest, error) {
	m := Manifest{Format: 1, Created: time.Now().UTC(), ServerName: cfg.ServerName, Database: "sqlite"}
	if err := emptyDir(dir); err != nil {
		return m, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return m, fmt.Errorf("creating %s: %w", dir, err)
	}
	fmt.Fprintln(progress, "database: taking a snapshot")
	if storage.IsPostgres(cfg.DatabaseURL) {
		m.Database = "postgres"
		if err := pgDump(ctx, cfg.DatabaseURL, filepath.Join(dir, postgresFile)); err != nil {
			return m, err
		}
	} else if err := storage.SnapshotSQLite(ctx, cfg.DatabaseURL, filepath.Join(dir, sqliteFile)); err != nil {
		return m, err
	}
	// The files that make the installation what it is besides its
	// database: the config, the signing key and the keys it replaced (other
	// servers check old events with them).
	for _, f := range []struct{ src, dst string }{
		{filepath.Join(cfg.DataDir, "hearth.yaml"), "hearth.yaml"},
		{cfg.SigningKeyPath, "signing.key"},
		{filepath.Join(cfg.DataDir, "old_signing_keys.json"), "old_signing_keys.json"},
	} {
		if err := copyFile(f.src, filepath.Join(dir, f.dst)); errors.Is(err, fs.ErrNotExist) && f.dst != "signing.key" {
			continue
		} else if err != nil {
			return m, err
		}
		fmt.Fprintln(progress, "copied", f.dst)
	}
	media := filepath.Join(cfg.DataDir, "media")
	n, err := copyTree(media, filepath.Join(dir, "media"))
	if err != nil {
		return m, err
	}
	fmt.Fprintf(progress, "media: copied %d files\n", n)
	fmt.Fprintln(progress, "manifest: hashing every file")
	if m.Files, err = hashTree(dir); err != nil {
		return m, err
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	if err := writeSynced(filepath.Join(dir, ManifestFile), b); err != nil {
		return m, err
	}
	fmt.Fprintf(progress, "backup complete: %d files in %s\n", len(m.Files), dir)
	return m, nil
}

// Verify checks every file of the backup in dir against its manifest and
// returns the manifest. A missing, extra or changed file is an error that
// names it.
func Verify(dir string) (Manifest, error) {
	var m Manifest
	b, err := os.ReadFile(filepath.Join(dir, ManifestFile))
	if err != nil {
		return m, fmt.Errorf("reading the manifest (is %s a Hearth backup?): %w", dir, err)
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Format != 1 {
		return m, fmt.Errorf("%s is not a manifest this version reads (format %d): %v", ManifestFile, m.Format, err)
	}
	got, err := hashTree(dir)
	if err != nil {
		return m, err
	}
	want := map[string]File{}
	for _, f := range m.Files {
		want[f.Path] = f
	}
	for _, f := range got {
		w, ok := want[f.Path]
		switch {
		case !ok:
			return m, fmt.Errorf("backup damaged: %s is not in the manifest", f.Path)
		case w != f:
			return m, fmt.Errorf("backup damaged: %s fails its checksum (size %d, want %d)", f.Path, f.Size, w.Size)
		}
		delete(want, f.Path)
	}
	for p := range want {
		return m, fmt.Errorf("backup damaged: %s is missing", p)
	}
	return m, nil
}

// Restore checks the backup in dir and restores it into dataDir, which
// must not exist or be empty. A PostgreSQL backup is restored into the
// empty database databaseURL names (pg_restore); a SQLite one becomes
// dataDir/hearth.db unless databaseURL names another file. The restored
// config points at the restored data directory and database.
func Restore(ctx context.Context, dir, dataDir, databaseURL string, progress io.Writer) error {
	m, err := Verify(dir)
	if err != nil {
		return err
	}
	fmt.Fprintf(progress, "backup of %s from %s: %d files verified\n", m.ServerName, m.Created.Format(time.RFC3339), len(m.Files))
	if err := emptyDir(dataDir); err != nil {
		return err
	}
	if dataDir, err = filepath.Abs(dataDir); err != nil {
		return err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dataDir, err)
	}
	switch m.Database {
	case "postgres":
		if !storage.IsPostgres(databaseURL) {
			return fmt.Errorf("this backup holds a PostgreSQL database: give --database-url postgres://... of an empty database")
		}
		fmt.Fprintln(progress, "database: pg_restore")
		if err := pgRestore(ctx, filepath.Join(dir, postgresFile), databaseURL); err != nil {
			return err
		}
	default:
		if databaseURL == "" || storage.IsPostgres(databaseURL) {
			if storage.IsPostgres(databaseURL) {
				return fmt.Errorf("this backup holds a SQLite database; `hearth migrate-db` moves one to PostgreSQL")
			}
			databaseURL = filepath.Join(dataDir, "hearth.db")
		}
		if err := copyFile(filepath.Join(dir, sqliteFile), databaseURL); err != nil {
			return err
		}
		fmt.Fprintln(progress, "database: restored", databaseURL)
	}
	for _, f := range m.Files {
		if f.Path == sqliteFile || f.Path == postgresFile || f.Path == "hearth.yaml" {
			continue
		}
		if err := copyFile(filepath.Join(dir, filepath.FromSlash(f.Path)), filepath.Join(dataDir, filepath.FromSlash(f.Path))); err != nil {
			return err
		}
	}
	if err := restoreConfig(filepath.Join(dir, "hearth.yaml"), dataDir, databaseURL); err != nil {
		return err
	}
	fmt.Fprintf(progress, "restored into %s: start the server with --data-dir %s\n", dataDir, dataDir)
	return nil
}

// restoreConfig writes the backed-up config with the paths of the restored
// installation (the backup may be restored on another machine).
func restoreConfig(src, dataDir, databaseURL string) error {
	cfg, err := config.Load(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // started from flags alone: nothing to restore
	}
	if err != nil {
		return err
	}
	cfg.DataDir, cfg.SigningKeyPath, cfg.DatabaseURL = dataDir, "", databaseURL
	if !storage.IsPostgres(databaseURL) && databaseURL == filepath.Join(dataDir, "hearth.db") {
		cfg.DatabaseURL = "" // the default, relative to the data directory
	}
	b, err := cfg.Marshal()
	if err != nil {
		return err
	}
	return writeSynced(filepath.Join(dataDir, "hearth.yaml"), b)
}

// emptyDir fails unless dir does not exist or is an empty directory.
func emptyDir(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		return fmt.Errorf("%s is not empty: give a new or empty directory", dir)
	}
	return nil
}

func pgDump(ctx context.Context, dsn, dest string) error {
	if _, err := exec.LookPath("pg_dump"); err != nil {
		return fmt.Errorf("backing up PostgreSQL needs pg_dump on the PATH (Debian: apt-get install postgresql-client)")
	}
	args, err := pgArgs(dsn)
	if err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "pg_dump", append([]string{"--format=custom", "--no-owner", "--file=" + dest}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_dump: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func pgRestore(ctx context.Context, src, dsn string) error {
	if _, err := exec.LookPath("pg_restore"); err != nil {
		return fmt.Errorf("restoring PostgreSQL needs pg_restore on the PATH (Debian: apt-get install postgresql-client)")
	}
	args, err := pgArgs(dsn)
	if err != nil {
		return err
	}
	if err := storage.EnsureSchema(ctx, dsn); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "pg_restore", append([]string{"--no-owner", "--exit-on-error", "--single-transaction"}, append(args, src)...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("pg_restore (into an empty database?): %v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// pgArgs turns a DSN into pg_dump/pg_restore arguments. A search_path
// parameter (which pgx takes but libpq does not) becomes --schema for
// pg_dump and is given to both as the session's search path.
func pgArgs(dsn string) ([]string, error) {
	base, schema, err := storage.SplitSearchPath(dsn)
	if err != nil {
		return nil, err
	}
	args := []string{"--dbname=" + base}
	if schema != "" {
		args = []string{"--dbname=" + base + sep(base) + "options=-csearch_path%3D" + schema, "--schema=" + schema}
	}
	return args, nil
}

func sep(dsn string) string {
	if strings.Contains(dsn, "?") {
		return "&"
	}
	return "?"
}

// copyTree copies the regular files below src into dst; a missing src
// copies nothing.
func copyTree(src, dst string) (int, error) {
	n := 0
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == src {
			return fs.SkipAll
		}
		if err != nil || d.IsDir() {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") || strings.HasSuffix(d.Name(), ".tmp") {
			return nil // an upload still being written: not yet in the database
		}
		n++
		return copyFile(path, filepath.Join(dst, rel))
	})
	return n, err
}

// copyFile copies src to dst (creating its directory) and syncs it.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
		return err
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("copying %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// hashTree lists every file below dir but the manifest, with its size and
// SHA-256, sorted by path.
func hashTree(dir string) ([]File, error) {
	var files []File
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if rel == ManifestFile {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return fmt.Errorf("reading %s: %w", rel, err)
		}
		files = append(files, File{Path: rel, Size: n, SHA256: hex.EncodeToString(h.Sum(nil))})
		return nil
	})
	slices.SortFunc(files, func(a, b File) int { return strings.Compare(a.Path, b.Path) })
	return files, err
}
