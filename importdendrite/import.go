package importdendrite

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/serverkey"
	"github.com/hearth-matrix/hearth/storage"
)

// Options are the command's flags.
type Options struct {
	// DendriteConfig is the path of dendrite.yaml.
	DendriteConfig string
	// DendriteDir is Dendrite's working directory, against which the
	// config's relative paths are resolved; empty: the config's directory.
	DendriteDir string
	// DataDir is the new Hearth data directory (created when missing).
	DataDir string
	// DatabaseURL is the Hearth database; empty: SQLite in DataDir.
	DatabaseURL string
	// Progress receives a line per table.
	Progress io.Writer
}

// importer carries one run.
type importer struct {
	opts   Options
	cfg    *dendriteConfig
	src    *source
	db     *storage.DB
	hearth config.Config
	rep    *Report
	server string

	// Filled by the account pass and used by later ones.
	deviceOfSession map[sessionKey]string
	eventsWritten   int64
	verifyKeys      map[gomatrixserverlib.KeyID]ed25519.PublicKey // this server's keys, current and old
	lowest          int64                                         // the lowest stream position given out (see belowTimeline)
}

type sessionKey struct {
	localpart string
	session   int64
}

// Run imports the Dendrite installation named by opts into a new Hearth
// installation and returns the report, which is also written to
// DataDir/dendrite-import-report.txt.
func Run(ctx context.Context, opts Options) (*Report, error) {
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	if opts.DendriteConfig == "" || opts.DataDir == "" {
		return nil, fmt.Errorf("--dendrite-config FILE and --data-dir DIR are required")
	}
	cfg, err := loadConfig(opts.DendriteConfig, opts.DendriteDir)
	if err != nil {
		return nil, err
	}
	key, err := cfg.signingKey()
	if err != nil {
		return nil, err
	}
	dataDir, err := filepath.Abs(opts.DataDir)
	if err != nil {
		return nil, err
	}
	hc, err := prepareDataDir(cfg, key, dataDir, opts.DatabaseURL)
	if err != nil {
		return nil, err
	}
	db, err := storage.Open(ctx, hc.DatabaseURL, storage.Options{})
	if err != nil {
		return nil, fmt.Errorf("opening the Hearth database: %w", err)
	}
	defer db.Close()
	empty, err := storage.IsEmpty(ctx, db.Read())
	if err != nil {
		return nil, err
	}
	if !empty {
		return nil, fmt.Errorf("the Hearth database %s is not empty: import only into a new installation (a failed import leaves it empty, so it can simply be run again)", hc.DataDir)
	}
	src, err := openSource(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer src.close()

	im := &importer{opts: opts, cfg: cfg, src: src, db: db, hearth: hc, server: cfg.Global.ServerName,
		rep: newReport(cfg.Global.ServerName), deviceOfSession: map[sessionKey]string{},
		verifyKeys: map[gomatrixserverlib.KeyID]ed25519.PublicKey{key.ID: key.Public()}}
	if err := cfg.oldVerifyKeys(im.verifyKeys); err != nil {
		return nil, err
	}
	start := time.Now()
	fmt.Fprintf(opts.Progress, "importing %s from %d Dendrite database(s) into %s\n", im.server, len(src.dbs), dataDir)
	for _, m := range src.missing {
		im.rep.Notes = append(im.rep.Notes, "the config names "+m+", which does not exist (a component that stored nothing)")
	}
	if err := im.rep.checkSchema(src); err != nil {
		return nil, err
	}
	err = db.WriteTx(ctx, func(tx *sql.Tx) error {
		passes := []struct {
			name string
			fn   func(context.Context, *sql.Tx) error
		}{
			{"accounts", im.importAccounts},
			{"rooms", im.importRooms},
			{"e2ee", im.importE2EE},
			{"media", im.importMedia},
			{"federation", im.importFederation},
		}
		for _, p := range passes {
			if err := p.fn(ctx, tx); err != nil {
				return fmt.Errorf("%s: %w", p.name, err)
			}
		}
		if err := db.ResetSequences(ctx, tx); err != nil {
			return err
		}
		return im.checkCounts(ctx, tx)
	})
	im.rep.Duration = time.Since(start)
	text := im.rep.String()
	if werr := os.WriteFile(filepath.Join(dataDir, ReportFile), []byte(text), 0o600); werr != nil && err == nil {
		err = werr
	}
	fmt.Fprint(opts.Progress, text)
	if err != nil {
		return im.rep, fmt.Errorf("import failed, nothing was written to the Hearth database (fix the cause and run it again): %w", err)
	}
	return im.rep, nil
}

// ReportFile is the report's name in the data directory.
const ReportFile = "dendrite-import-report.txt"

// prepareDataDir writes the Hearth config and signing key into dataDir,
// or checks that what is there already (from an earlier, failed run) is
// the same identity.
func prepareDataDir(c *dendriteConfig, key serverkey.Key, dataDir, dbURL string) (config.Config, error) {
	hc := config.Default()
	hc.ServerName = c.Global.ServerName
	hc.DataDir = dataDir
	hc.DatabaseURL = dbURL
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return hc, fmt.Errorf("creating data directory: %w", err)
	}
	cfgPath := filepath.Join(dataDir, "hearth.yaml")
	if old, err := config.Load(cfgPath); err == nil {
		if old.ServerName != hc.ServerName {
			return hc, fmt.Errorf("%s is for server %s, not %s", cfgPath, old.ServerName, hc.ServerName)
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return hc, err
	}
	// Application services: their registration files are copied beside the config.
	for i, f := range c.AppServiceAPI.ConfigFiles {
		b, err := os.ReadFile(c.path(f))
		if err != nil {
			return hc, fmt.Errorf("application service registration: %w", err)
		}
		dst := filepath.Join(dataDir, "appservices", fmt.Sprintf("%02d-%s", i, filepath.Base(f)))
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return hc, err
		}
		if err := os.WriteFile(dst, b, 0o600); err != nil {
			return hc, err
		}
		hc.AppServiceConfigFiles = append(hc.AppServiceConfigFiles, dst)
	}
	if err := hc.Validate(); err != nil {
		return hc, err
	}
	b, err := hc.Marshal()
	if err != nil {
		return hc, err
	}
	header := "# Written by hearth import dendrite. Every option is explained in config.sample.yaml.\n"
	if err := os.WriteFile(cfgPath, append([]byte(header), b...), 0o600); err != nil {
		return hc, err
	}
	hc.ResolvePaths()
	// The signing key: the same key ID and seed, so every event and key
	// response signed before the move still verifies.
	if old, err := os.ReadFile(hc.SigningKeyPath); err == nil {
		k, err := serverkey.Parse(old)
		if err != nil || k.ID != key.ID || !bytes.Equal(k.Private, key.Private) {
			return hc, fmt.Errorf("%s holds another signing key than Dendrite's", hc.SigningKeyPath)
		}
	} else if err := serverkey.Save(hc.SigningKeyPath, key); err != nil {
		return hc, err
	}
	return hc, writeOldKeys(c, dataDir)
}
