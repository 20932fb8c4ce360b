package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/hearth-matrix/hearth"
	"github.com/hearth-matrix/hearth/config"
)

// generate-config prints config.sample.yaml, with the server name filled in.
func generateConfig(args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("generate-config", flag.ContinueOnError)
	fset.SetOutput(stderr)
	name := fset.String("server-name", "localhost", "the server name to write")
	out := fset.String("output", "", "write to this file instead of standard output (refuses to overwrite)")
	if err := fset.Parse(args); err != nil {
		return err
	}
	if err := config.ValidServerName(*name); err != nil {
		return fmt.Errorf("--server-name: %w", err)
	}
	text := strings.Replace(hearth.SampleConfig, "\nserver_name: localhost\n", "\nserver_name: "+*name+"\n", 1)
	if *out == "" {
		_, err := io.WriteString(stdout, text)
		return err
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("writing config: %w", err)
	}
	if _, err := io.WriteString(f, text); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
