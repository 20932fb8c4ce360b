// Command hearth is the Hearth Matrix homeserver.
//
//	hearth [serve] [flags]      run the server (the default)
//	hearth generate-config      print a commented configuration
//	hearth register-user ...    create an account
//	hearth registration-token   create, list or revoke registration tokens
//	hearth media ...            quarantine or delete media
//	hearth reset-password       set a user's password (account recovery)
//	hearth migrate-db --to URL  copy a SQLite installation into PostgreSQL
//	hearth backup --to DIR      a consistent copy while the server runs
//	hearth restore --from DIR   restore a checked backup into a new data dir
//	hearth import dendrite ...  move a Dendrite installation into a new one
//	hearth healthcheck          exit 0 when a running server is healthy
//	hearth version              print the version
//	hearth help                 list the subcommands
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "hearth:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && (!strings.HasPrefix(args[0], "-") || args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return serve(ctx, args, stderr)
	case "complement-serve":
		ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		return complementServe(ctx, args, stderr)
	case "generate-config":
		return generateConfig(args, stdout, stderr)
	case "register-user":
		return registerUser(ctx, args, stdout, stderr)
	case "registration-token":
		return registrationToken(ctx, args, stdout, stderr)
	case "media":
		return mediaCommand(ctx, args, stdout, stderr)
	case "reset-password":
		return resetPassword(ctx, args, stdout, stderr)
	case "migrate-db":
		return migrateDB(ctx, args, stdout, stderr)
	case "backup":
		return backupCommand(ctx, args, stdout, stderr)
	case "restore":
		return restoreCommand(ctx, args, stdout, stderr)
	case "import":
		return importCommand(ctx, args, stdout, stderr)
	case "healthcheck":
		return healthcheck(ctx, args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "hearth", versionString())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}
}

const usage = `Usage:
  hearth [serve] [--config FILE] [--data-dir DIR] [--server-name NAME] [--listen ADDR]
         [--federation-listen ADDR] [--registration open|token|closed] [--database-url URL] ...
  hearth generate-config [--server-name NAME] [--output FILE]
  hearth register-user --config FILE --user NAME --password PW [--admin] [--update]
  hearth registration-token create --config FILE [--token T] [--length N] [--uses N] [--expires 72h|RFC3339]
  hearth registration-token list --config FILE [--valid true|false]
  hearth registration-token revoke --config FILE --token T
  hearth media quarantine|unquarantine|delete --config FILE mxc://SERVER/ID
  hearth reset-password --config FILE --user NAME --password PW [--keep-devices]
  hearth migrate-db --to postgres://... [--data-dir DIR | --config FILE]
  hearth backup --to DIR [--data-dir DIR | --config FILE]
  hearth restore --from DIR --data-dir DIR [--database-url postgres://...]
  hearth import dendrite --dendrite-config dendrite.yaml --data-dir DIR [--database-url postgres://...]
  hearth healthcheck [--url http://127.0.0.1:8008/health]
  hearth version
  hearth help

Every configuration option is also a flag of serve (hearth serve --help
lists them); see config.sample.yaml.
`

func newLogger(w io.Writer, level, format string) *slog.Logger {
	return newLevelLogger(w, logLevel(level), format)
}

// logLevel parses a validated log_level.
func logLevel(level string) *slog.LevelVar {
	lv := new(slog.LevelVar)
	_ = lv.UnmarshalText([]byte(level))
	return lv
}

// newLevelLogger logs at lv, which may change while it is in use (SIGHUP).
func newLevelLogger(w io.Writer, lv *slog.LevelVar, format string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
