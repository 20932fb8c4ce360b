// Package serverkey loads and creates the server's ed25519 signing key, the
// key every event and federation request Hearth sends is signed with.
package serverkey

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// Key is the server's signing key with its key id ("ed25519:...").
type Key struct {
	ID      gomatrixserverlib.KeyID
	Private ed25519.PrivateKey
}

// Public returns the public half.
func (k Key) Public() ed25519.PublicKey { return k.Private.Public().(ed25519.PublicKey) }

// PublicBase64 is the public key as the key API publishes it.
func (k Key) PublicBase64() spec.Base64Bytes { return spec.Base64Bytes(k.Public()) }

const pemType = "MATRIX PRIVATE KEY"

// validKeyID is the spec's key id grammar: algorithm ":" [a-zA-Z0-9_]+.
var validKeyID = regexp.MustCompile(`^ed25519:[a-zA-Z0-9_]+$`)

// LoadOrCreate reads the key at path, creating a new one (and its directory)
// if the file does not exist. The file is a PEM block holding the 32-byte
// seed with a Key-ID header, readable by the owner only.
func LoadOrCreate(path string) (k Key, created bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		k, err = Generate()
		if err != nil {
			return k, false, err
		}
		if err := Save(path, k); err != nil {
			return k, false, err
		}
		return k, true, nil
	}
	if err != nil {
		return k, false, fmt.Errorf("reading signing key: %w", err)
	}
	k, err = Parse(b)
	if err != nil {
		return k, false, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, false, nil
}

// Generate makes a new key with id "ed25519:" + random characters.
func Generate() (Key, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return Key{}, fmt.Errorf("generating signing key: %w", err)
	}
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	var idb [6]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return Key{}, err
	}
	id := make([]byte, len(idb))
	for i, c := range idb {
		id[i] = alphabet[int(c)%len(alphabet)]
	}
	return Key{ID: gomatrixserverlib.KeyID("ed25519:" + string(id)), Private: priv}, nil
}

// Save writes k to path atomically (temp file, then rename).
func Save(path string, k Key) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("creating key directory: %w", err)
	}
	block := &pem.Block{Type: pemType, Headers: map[string]string{"Key-ID": string(k.ID)}, Bytes: k.Private.Seed()}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("writing signing key: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing signing key: %w", err)
	}
	return nil
}

// Parse reads a key file's contents.
func Parse(b []byte) (Key, error) {
	block, _ := pem.Decode(b)
	if block == nil || block.Type != pemType {
		return Key{}, fmt.Errorf("not a %s PEM block", pemType)
	}
	id := block.Headers["Key-ID"]
	if !validKeyID.MatchString(id) {
		return Key{}, fmt.Errorf("Key-ID %q is not ed25519:[a-zA-Z0-9_]+", id)
	}
	if len(block.Bytes) != ed25519.SeedSize {
		return Key{}, fmt.Errorf("key seed is %d bytes, want %d", len(block.Bytes), ed25519.SeedSize)
	}
	return Key{ID: gomatrixserverlib.KeyID(id), Private: ed25519.NewKeyFromSeed(block.Bytes)}, nil
}
