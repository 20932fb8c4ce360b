// Package importdendrite moves a Dendrite installation into a new Hearth
// one (hearth import dendrite): identity, accounts, devices with their
// access tokens, rooms with their event DAG and state, end-to-end
// encryption keys, and media. Dendrite's databases are only read (SQLite
// opened read-only, PostgreSQL in a READ ONLY transaction) and its files
// only copied from; everything is written through Hearth's storage layer
// in one transaction, so a failed import leaves nothing behind and can be
// run again.
package importdendrite

import (
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/hearth-matrix/hearth/serverkey"
)

// dendriteConfig is what the import needs of dendrite.yaml (config
// version 2, as Dendrite v0.13 writes it).
type dendriteConfig struct {
	Version int `yaml:"version"`
	Global  struct {
		ServerName     string `yaml:"server_name"`
		PrivateKey     string `yaml:"private_key"`
		OldPrivateKeys []struct {
			PrivateKey string `yaml:"private_key"`
			PublicKey  string `yaml:"public_key"`
			KeyID      string `yaml:"key_id"`
			ExpiredAt  int64  `yaml:"expired_at"`
		} `yaml:"old_private_keys"`
	} `yaml:"global"`
	AppServiceAPI struct {
		ConfigFiles []string `yaml:"config_files"`
	} `yaml:"app_service_api"`
	MediaAPI struct {
		BasePath string `yaml:"base_path"`
	} `yaml:"media_api"`

	// dir is where relative paths are resolved: Dendrite resolves them
	// against its working directory, which the import takes to be the
	// config file's directory unless told otherwise.
	dir string
	// databases are the distinct connection strings the config names
	// (global.database and each component's own), in a stable order.
	databases []string
}

func loadConfig(path, dir string) (*dendriteConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading Dendrite config: %w", err)
	}
	var c dendriteConfig
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("Dendrite config %s: %w", path, err)
	}
	if c.Global.ServerName == "" {
		return nil, fmt.Errorf("Dendrite config %s names no global.server_name", path)
	}
	if dir == "" {
		dir = filepath.Dir(path)
	}
	c.dir = dir
	// Every "connection_string" anywhere in the file is a database of one
	// component (global.database, sync_api.database, user_api.account_database, ...).
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch t := v.(type) {
		case map[string]any:
			if cs, ok := t["connection_string"].(string); ok && cs != "" && !seen[cs] {
				seen[cs] = true
				c.databases = append(c.databases, cs)
			}
			keys := make([]string, 0, len(t))
			for k := range t {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				walk(t[k])
			}
		case []any:
			for _, e := range t {
				walk(e)
			}
		}
	}
	walk(raw)
	if len(c.databases) == 0 {
		return nil, fmt.Errorf("Dendrite config %s names no database (connection_string)", path)
	}
	return &c, nil
}

// path resolves a path of the config.
func (c *dendriteConfig) path(p string) string {
	if p == "" || filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(c.dir, p)
}

// signingKey reads global.private_key: a PEM file whose MATRIX PRIVATE KEY
// block carries the key ID, the format Hearth's key file has too.
func (c *dendriteConfig) signingKey() (serverkey.Key, error) {
	if c.Global.PrivateKey == "" {
		return serverkey.Key{}, fmt.Errorf("Dendrite config names no global.private_key")
	}
	return readKey(c.path(c.Global.PrivateKey))
}

func readKey(path string) (serverkey.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return serverkey.Key{}, fmt.Errorf("reading Dendrite signing key: %w", err)
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return serverkey.Key{}, fmt.Errorf("%s holds no MATRIX PRIVATE KEY block", path)
		}
		if block.Type == "MATRIX PRIVATE KEY" {
			k, err := serverkey.Parse(pem.EncodeToMemory(block))
			if err != nil {
				return k, fmt.Errorf("%s: %w", path, err)
			}
			return k, nil
		}
	}
}

// sqlitePath turns a Dendrite SQLite connection string ("file:x.db",
// "file:///abs/x.db") into a file path; ok is false for PostgreSQL.
func (c *dendriteConfig) sqlitePath(cs string) (string, bool) {
	if strings.HasPrefix(cs, "postgres://") || strings.HasPrefix(cs, "postgresql://") || strings.Contains(cs, "host=") {
		return "", false
	}
	p := strings.TrimPrefix(cs, "file:")
	p = strings.TrimPrefix(p, "//")
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	return c.path(p), true
}
