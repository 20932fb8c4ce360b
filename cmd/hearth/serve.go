package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/homeserver"
	"github.com/hearth-matrix/hearth/tlscert"
)

func versionString() string { return homeserver.Version() }

// configFlags registers one flag per config option (server_name becomes
// --server-name) plus --config, and returns a function that applies the
// flags that were set.
func configFlags(fs *flag.FlagSet) (configPath *string, apply func(*config.Config) error) {
	configPath = fs.String("config", "", "config file (env HEARTH_CONFIG; default <data-dir>/hearth.yaml, created on first start)")
	vals := map[string]*string{}
	for _, key := range config.Keys() {
		name, usage := strings.ReplaceAll(key, "_", "-"), "config option "+key+" (env "+config.EnvName(key)+")"
		if config.IsBool(key) {
			// A boolean option is on with the bare flag (--guest-access) or
			// set with --guest-access=false, like the flag package's bools.
			v := new(boolFlag)
			fs.Var(v, name, usage)
			vals[key] = &v.s
			continue
		}
		vals[key] = fs.String(name, "", usage)
	}
	apply = func(c *config.Config) error {
		var err error
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "config" || err != nil {
				return
			}
			key := strings.ReplaceAll(f.Name, "-", "_")
			if v, ok := vals[key]; ok {
				if e := c.Set(key, *v); e != nil {
					err = fmt.Errorf("flag --%s: %w", f.Name, e)
				}
			}
		})
		return err
	}
	return configPath, apply
}

// boolFlag is a flag.Value for boolean options, kept as the string config.Set parses.
type boolFlag struct{ s string }

func (b *boolFlag) String() string { return b.s }
func (b *boolFlag) Set(v string) error {
	if _, err := strconv.ParseBool(v); err != nil {
		return fmt.Errorf("%q is not true or false", v)
	}
	b.s = v
	return nil
}
func (b *boolFlag) IsBoolFlag() bool { return true }

// loadConfig finds, loads or (on first start) writes the config, then
// applies the environment and flags, validates it and resolves paths.
func loadConfig(configPath string, applyFlags func(*config.Config) error, log *slog.Logger) (config.Config, error) {
	cfg, _, err := findConfig(configPath, applyFlags, log)
	return cfg, err
}

// findConfig is loadConfig, also returning the file the config came from.
func findConfig(configPath string, applyFlags func(*config.Config) error, log *slog.Logger) (config.Config, string, error) {
	if configPath == "" {
		configPath = os.Getenv("HEARTH_CONFIG")
	}
	var cfg config.Config
	if configPath != "" {
		var err error
		if cfg, err = config.Load(configPath); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return cfg, "", fmt.Errorf("config file %s does not exist; create one with `hearth generate-config --output %s`", configPath, configPath)
			}
			return cfg, "", err
		}
	} else {
		// No config named: the data directory holds it; make it on first start.
		cfg = config.Default()
		if err := overrides(&cfg, applyFlags); err != nil {
			return cfg, "", err
		}
		configPath = filepath.Join(cfg.DataDir, "hearth.yaml")
		path := configPath
		loaded, err := config.Load(path)
		switch {
		case err == nil:
			cfg = loaded
		case errors.Is(err, fs.ErrNotExist):
			if err := writeFirstConfig(&cfg, path, applyFlags); err != nil {
				return cfg, "", err
			}
			log.Info("first start: wrote a new config", "path", path)
		default:
			return cfg, "", err
		}
	}
	if err := overrides(&cfg, applyFlags); err != nil {
		return cfg, "", err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, "", err
	}
	cfg.ResolvePaths()
	return cfg, configPath, nil
}

// reloadConfig reads the config file again as a start would (file, then
// environment and flags), but never writes one.
func reloadConfig(path string, applyFlags func(*config.Config) error) (config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return cfg, err
	}
	if err := overrides(&cfg, applyFlags); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	cfg.ResolvePaths()
	return cfg, nil
}

func overrides(cfg *config.Config, applyFlags func(*config.Config) error) error {
	if err := cfg.ApplyEnv(os.LookupEnv); err != nil {
		return err
	}
	return applyFlags(cfg)
}

// writeFirstConfig writes the settings of the first start into the data
// directory, with the data directory made absolute, so the next start (from
// any working directory) finds the same database and key.
func writeFirstConfig(cfg *config.Config, path string, applyFlags func(*config.Config) error) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	abs, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("data_dir: %w", err)
	}
	cfg.DataDir = abs
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return fmt.Errorf("creating data directory %s: %w", abs, err)
	}
	b, err := cfg.Marshal()
	if err != nil {
		return err
	}
	header := "# Written by hearth on first start. Every option is explained in config.sample.yaml\n# (or run `hearth generate-config`).\n"
	if err := os.WriteFile(path, append([]byte(header), b...), 0o600); err != nil {
		return fmt.Errorf("writing config (is the data directory writable?): %w", err)
	}
	return nil
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	fset := flag.NewFlagSet("serve", flag.ContinueOnError)
	fset.SetOutput(stderr)
	configPath, applyFlags := configFlags(fset)
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fset.Arg(0))
	}
	boot := newLogger(stderr, "info", "text")
	cfg, path, err := findConfig(*configPath, applyFlags, boot)
	if err != nil {
		return err
	}
	return runServer(ctx, cfg, stderr, func() (config.Config, error) { return reloadConfig(path, applyFlags) })
}

// runServer starts the homeserver described by a complete config. reload,
// when not nil, reads the config again on SIGHUP (watchReload).
func runServer(ctx context.Context, cfg config.Config, stderr io.Writer, reload func() (config.Config, error)) error {
	level := logLevel(cfg.LogLevel)
	log := newLevelLogger(stderr, level, cfg.LogFormat)
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory %s: %w", cfg.DataDir, err)
	}
	var tlsCfg *tls.Config
	var acmeHTTP http.Handler
	var listening func()
	if cfg.TLS == "acme" {
		domains := tlscert.ACMEDomains(cfg.ACMEDomains, cfg.ServerName)
		a, err := tlscert.NewACME(tlscert.ACMEOptions{Domains: domains, Email: cfg.ACMEEmail, DirectoryURL: cfg.ACMEDirectoryURL,
			CACerts: cfg.ACMECACerts, CacheDir: tlscert.CacheDir(cfg.DataDir)}, log)
		if err != nil {
			return err
		}
		tlsCfg, acmeHTTP = a.TLSConfig(), a.HTTPHandler()
		// Get the certificates now, not at the first connection, so a
		// problem shows in the log at start.
		listening = func() {
			for _, d := range domains {
				octx, cancel := context.WithTimeout(ctx, 5*time.Minute)
				if _, err := a.Obtain(octx, d); err != nil {
					log.Error("ACME: could not get a certificate; the listeners cannot serve TLS for it until this is fixed", "name", d, "err", err)
				} else {
					log.Info("ACME: certificate ready", "name", d)
				}
				cancel()
			}
		}
	} else if cfg.FederationListen != "" {
		certPath, keyPath := cfg.TLSCertPath, cfg.TLSKeyPath
		if cfg.SelfSignedTLS() {
			certPath, keyPath = cfg.SelfSignedCertPaths()
			made, err := tlscert.EnsureSelfSigned(certPath, keyPath, cfg.ServerName)
			if err != nil {
				return fmt.Errorf("creating self-signed federation certificate: %w", err)
			}
			log.Warn("no TLS certificate configured for federation: using a self-signed one, which other servers will not trust; set tls_cert_path and tls_key_path",
				"cert", certPath, "created", made)
		}
		cert, err := tls.LoadX509KeyPair(certPath, keyPath)
		if err != nil {
			return fmt.Errorf("loading federation TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if cfg.RateLimits == "off" {
		log.Warn("rate limits are off: use this only for tests and benchmarks")
	}
	hs, err := homeserver.New(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer hs.Close()
	log.Info("hearth starting", "version", versionString(), "server_name", cfg.ServerName, "database", hs.DB.Dialect().String())
	if reload != nil {
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		defer signal.Stop(hup)
		go watchReload(ctx, hup, cfg, reload, hs, level, log)
	}
	return hs.Run(ctx, tlsCfg, acmeHTTP, listening)
}

// watchReload applies the config file's reloadable keys at each SIGHUP
// and logs each changed key that needs a restart instead. A config that
// does not load or validate changes nothing.
func watchReload(ctx context.Context, hup <-chan os.Signal, running config.Config, reload func() (config.Config, error),
	hs *homeserver.Server, level *slog.LevelVar, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		next, err := reload()
		if err != nil {
			log.Error("SIGHUP: the config did not load; still running on the previous one", "err", err)
			continue
		}
		var applied []string
		for _, key := range config.Changed(running, next) {
			if config.Reloadable(key) {
				applied = append(applied, key)
			} else {
				log.Warn("SIGHUP: this key changed but takes effect only after a restart", "key", key)
			}
		}
		cfg := running.WithReloaded(next)
		if err := hs.Reload(cfg); err != nil {
			log.Error("SIGHUP: the config did not apply; still running on the previous one", "err", err)
			continue
		}
		running = cfg
		_ = level.UnmarshalText([]byte(cfg.LogLevel))
		log.Info("SIGHUP: configuration reloaded", "changed", strings.Join(applied, ","))
	}
}
