package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/storage"
)

// media quarantine|unquarantine|delete mxc://server/id: moderation of the
// content repository from the shell, working while the server runs.
// Quarantined media stays on disk but is served to no one (404); deleted
// media is gone, with its file once no other media shares it.
func mediaCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("usage: hearth media quarantine|unquarantine|delete --config FILE mxc://server/id")
	}
	action, args := args[0], args[1:]
	fset := flag.NewFlagSet("media "+action, flag.ContinueOnError)
	fset.SetOutput(stderr)
	configPath, applyFlags := configFlags(fset)
	if err := fset.Parse(args); err != nil {
		return err
	}
	if fset.NArg() != 1 {
		return fmt.Errorf("media %s needs exactly one mxc://server/id URI", action)
	}
	serverName, mediaID, err := media.ParseMXC(fset.Arg(0))
	if err != nil {
		return err
	}
	cfg, err := loadConfig(*configPath, applyFlags, newLogger(stderr, "warn", "text"))
	if err != nil {
		return err
	}
	db, err := storage.Open(ctx, cfg.DatabaseURL, storage.Options{Synchronous: cfg.SQLiteSynchronous, MaxConns: 2})
	if err != nil {
		return err
	}
	defer db.Close()
	repo, err := media.Open(ctx, cfg, db, newLogger(stderr, "warn", "text"))
	if err != nil {
		return err
	}
	switch action {
	case "quarantine", "unquarantine":
		err = repo.Quarantine(ctx, serverName, mediaID, action == "quarantine")
	case "delete":
		err = repo.Delete(ctx, serverName, mediaID)
	default:
		return fmt.Errorf("unknown media action %q: quarantine, unquarantine or delete", action)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", action, fset.Arg(0), err)
	}
	fmt.Fprintf(stdout, "%sd %s\n", action, fset.Arg(0))
	return nil
}
