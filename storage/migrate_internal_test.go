package storage

import (
	"strings"
	"testing"
	"testing/fstest"
)

// Migration files: per-engine pairs, gaps in the numbers, and the
// mistakes loadMigrations refuses.
func TestLoadMigrations(t *testing.T) {
	file := func(s string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(s)} }
	ok := fstest.MapFS{
		"migrations/0001_a.sql":          file("A"),
		"migrations/0002_b.sql":          file("B"),
		"migrations/0021_c.sqlite.sql":   file("C-sqlite"),
		"migrations/0021_c.postgres.sql": file("C-postgres"),
	}
	for _, d := range []Dialect{SQLite, Postgres} {
		migs, err := loadMigrations(ok, d)
		if err != nil {
			t.Fatalf("%s: %v", d, err)
		}
		var got []string
		for _, m := range migs {
			got = append(got, m.name+"="+m.sql)
		}
		want := "a=A b=B c=C-" + d.String()
		if strings.Join(got, " ") != want || migs[2].version != 21 {
			t.Fatalf("%s: %v, want %s", d, got, want)
		}
	}
	for name, fsys := range map[string]fstest.MapFS{
		"one engine only":   {"migrations/0003_x.sqlite.sql": file("")},
		"pair and shared":   {"migrations/0003_x.sqlite.sql": file(""), "migrations/0003_x.postgres.sql": file(""), "migrations/0003_x.sql": file("")},
		"unknown engine":    {"migrations/0003_x.mysql.sql": file("")},
		"number used twice": {"migrations/0003_x.sql": file(""), "migrations/0003_y.sql": file("")},
		"no number":         {"migrations/x.sql": file("")},
	} {
		if _, err := loadMigrations(fsys, SQLite); err == nil {
			t.Errorf("%s: loaded", name)
		}
	}
	// The embedded migrations load on both engines.
	for _, d := range []Dialect{SQLite, Postgres} {
		if _, err := loadMigrations(migrationFiles, d); err != nil {
			t.Fatalf("embedded, %s: %v", d, err)
		}
	}
}
