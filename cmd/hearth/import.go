package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/hearth-matrix/hearth/importdendrite"
)

// import dendrite --dendrite-config FILE --data-dir DIR [--database-url URL]:
// moves a stopped Dendrite installation into a new Hearth one, reading
// Dendrite's databases and media only.
func importCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "dendrite" {
		return fmt.Errorf("usage: hearth import dendrite --dendrite-config FILE --data-dir DIR [--database-url postgres://...]")
	}
	fset := flag.NewFlagSet("import dendrite", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var o importdendrite.Options
	fset.StringVar(&o.DendriteConfig, "dendrite-config", "", "Dendrite's config file (dendrite.yaml)")
	fset.StringVar(&o.DendriteDir, "dendrite-dir", "", "Dendrite's working directory, for the relative paths of its config (default: the config's directory)")
	fset.StringVar(&o.DataDir, "data-dir", "", "the new Hearth data directory")
	fset.StringVar(&o.DatabaseURL, "database-url", "", "an empty PostgreSQL database for Hearth (default: SQLite in the data directory)")
	if err := fset.Parse(args[1:]); err != nil {
		return err
	}
	o.Progress = stdout
	if _, err := importdendrite.Run(ctx, o); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "done: start Hearth with `hearth --data-dir %s` on Dendrite's ports and check it (docs/migrate-from-dendrite.md)\n", o.DataDir)
	return nil
}
