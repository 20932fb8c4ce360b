package media

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// fileStore keeps media bytes on disk, named by their SHA-256, so the same
// bytes uploaded twice are stored once. A file appears under its final name
// only complete and fsynced (written to a temporary name in the same
// directory tree, then renamed), so a crash never leaves a half file that
// could be served.
//
// Files are shared by every media row and thumbnail with the same hash; a
// file is removed when the last row pointing at it goes. Placing a file and
// inserting its row, and deleting a row and checking whether its file is
// still used, both run under the hash's lock, so a delete never removes a
// file an upload is about to reference. That lock is per process: several
// processes on one PostgreSQL sharing a media directory could race a delete
// against an identical upload (a later sweep job would close that gap).
type fileStore struct {
	root  string
	locks [64]sync.Mutex
}

const tempPrefix = ".tmp-"

func newFileStore(root string) (*fileStore, error) {
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("creating media directory: %w", err)
	}
	f := &fileStore{root: root}
	f.removeStaleTemps()
	return f, nil
}

// removeStaleTemps deletes temporary files left by a crash. Only old ones:
// another process sharing the directory may be writing the young ones.
func (f *fileStore) removeStaleTemps() {
	entries, err := os.ReadDir(f.root)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), tempPrefix) {
			continue
		}
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > time.Hour {
			_ = os.Remove(filepath.Join(f.root, e.Name()))
		}
	}
}

// path is where the file with this hex SHA-256 lives: two levels of
// fan-out keep directories small.
func (f *fileStore) path(sha string) string {
	return filepath.Join(f.root, sha[:2], sha[2:4], sha)
}

// tempFile is received content not yet placed under its hash.
type tempFile struct {
	path string
	sha  string
	size int64
}

func (t tempFile) discard() { _ = os.Remove(t.path) }

// errTooLarge says the content exceeded the limit; reading stopped there.
var errTooLarge = errors.New("content too large")

// receive streams r into a temporary file, hashing as it goes, and stops
// with errTooLarge as soon as more than limit bytes arrive.
func (f *fileStore) receive(r io.Reader, limit int64) (tempFile, error) {
	var rb [12]byte
	_, _ = rand.Read(rb[:])
	t := tempFile{path: filepath.Join(f.root, tempPrefix+hex.EncodeToString(rb[:]))}
	out, err := os.OpenFile(t.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return t, fmt.Errorf("creating temporary media file: %w", err)
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), io.LimitReader(r, limit+1))
	if err == nil && n > limit {
		err = errTooLarge
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.discard()
		return t, err
	}
	t.sha, t.size = hex.EncodeToString(h.Sum(nil)), n
	return t, nil
}

// lock takes the lock of a hash and returns its unlock.
func (f *fileStore) lock(sha string) func() {
	h := fnv.New32a()
	h.Write([]byte(sha))
	m := &f.locks[h.Sum32()%uint32(len(f.locks))]
	m.Lock()
	return m.Unlock
}

// place moves a received file under its hash, or drops it when that file
// exists already. The caller holds the hash's lock.
func (f *fileStore) place(t tempFile) error {
	dst := f.path(t.sha)
	if _, err := os.Stat(dst); err == nil {
		t.discard()
		return nil
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.discard()
		return fmt.Errorf("creating media directory: %w", err)
	}
	if err := os.Rename(t.path, dst); err != nil {
		t.discard()
		return fmt.Errorf("placing media file: %w", err)
	}
	// The rename is durable only once the directory is synced.
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

func (f *fileStore) open(sha string) (*os.File, error) {
	return os.Open(f.path(sha))
}

// remove deletes a file; the caller holds the lock and checked no row uses it.
func (f *fileStore) remove(sha string) error {
	if err := os.Remove(f.path(sha)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing media file: %w", err)
	}
	return nil
}
