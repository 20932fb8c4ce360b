package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/tlscert"
)

// complement-serve is the entrypoint of the Complement test image
// (build/complement). It follows the image contract of the Matrix
// compliance suite: the server name comes from $SERVER_NAME at every start,
// the federation certificate is signed by the per-run CA Complement copies to
// /complement/ca, registration is open, rate limits are off, and all state
// stays in the container's data directory so committed blueprint containers
// restart with their users and rooms.
func complementServe(ctx context.Context, args []string, stderr io.Writer) error {
	fset := flag.NewFlagSet("complement-serve", flag.ContinueOnError)
	fset.SetOutput(stderr)
	dataDir := fset.String("data-dir", "/data", "data directory inside the container")
	caDir := fset.String("ca-dir", "/complement/ca", "where Complement puts ca.crt and ca.key")
	asDir := fset.String("appservice-dir", "/complement/appservice", "where Complement puts application service registrations")
	err := fset.Parse(args)
	if err != nil {
		return err
	}
	serverName := os.Getenv("SERVER_NAME")
	if serverName == "" {
		serverName = "localhost"
	}
	cfg := config.Default()
	cfg.ServerName = serverName
	cfg.DataDir = *dataDir
	cfg.Registration = config.RegistrationOpen
	cfg.RegistrationSharedSecret = "complement"
	cfg.RateLimits = "off"
	cfg.BcryptCost = 4 // test accounts only; keeps blueprint creation fast
	// Complement downloads through the deprecated unauthenticated media
	// endpoints too, and previews pages served from the host running it
	// (a private docker address).
	cfg.LegacyMedia = config.LegacyMediaOn
	cfg.URLPreview = true
	cfg.ServerNoticesLocalpart = "_server" // the sender Complement expects
	// Complement's tests log in several devices and count the rooms and
	// invites sync shows; a notices room appearing is not in the spec.
	cfg.SignInAlerts = false
	cfg.URLPreviewAllowCIDRs = []string{"0.0.0.0/0", "::/0"}
	// Blueprints with application services get their registrations here.
	if cfg.AppServiceConfigFiles, err = filepath.Glob(filepath.Join(*asDir, "*.yaml")); err != nil {
		return fmt.Errorf("complement: %w", err)
	}
	caCert, caKey := filepath.Join(*caDir, "ca.crt"), filepath.Join(*caDir, "ca.key")
	cfg.FederationCACerts = []string{caCert}
	// Complement's homeservers and its own test servers live on a
	// private docker network.
	cfg.FederationAllowCIDRs = []string{"0.0.0.0/0", "::/0"}
	cfg.TLSCertPath = filepath.Join(*dataDir, "complement-tls.crt")
	cfg.TLSKeyPath = filepath.Join(*dataDir, "complement-tls.key")
	if err := cfg.ApplyEnv(os.LookupEnv); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.ResolvePaths()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("creating data directory: %w", err)
	}
	// A new certificate at every start: each Complement run has its own CA.
	if err := tlscert.WriteSignedByCA(cfg.TLSCertPath, cfg.TLSKeyPath, serverName, caCert, caKey); err != nil {
		return fmt.Errorf("complement: %w", err)
	}
	return runServer(ctx, cfg, stderr, nil)
}
