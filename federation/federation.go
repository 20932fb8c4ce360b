// Package federation serves the Matrix Server-Server API (/_matrix/federation/*)
// and the key API (/_matrix/key/*) on the TLS federation listener, and makes
// this server's outbound federation requests: the signing client, server
// discovery, the key ring and the per-destination send queue.
//
// Every endpoint is listed in routes.go. Inbound requests are verified
// (X-Matrix) before any handler runs; the handler gets the authenticated
// origin as its argument (and Origin(ctx) for code below it).
package federation

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/appservice"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/netguard"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/serverkey"
	"github.com/hearth-matrix/hearth/storage"
	"github.com/hearth-matrix/hearth/syncstream"
	"github.com/hearth-matrix/hearth/tlscert"
)

// requestTimeout bounds every outbound federation request, so library
// code that uses context.Background() (PerformJoin) cannot hang.
const requestTimeout = 60 * time.Second

// Deps are what the federation side is built on.
type Deps struct {
	Config   config.Config
	DB       *storage.DB
	Rooms    *rooms.Rooms
	Media    *media.Repository // nil: no media over federation
	Key      serverkey.Key
	Notifier *syncstream.Notifier
	Typing   *syncstream.Typing
	Presence *syncstream.Presence
	E2EE     *e2ee.E2EE
	// AppServices are asked about unknown aliases in their namespaces;
	// nil: none.
	AppServices *appservice.Pusher
	Log         *slog.Logger
	Version     string
	// Standby leaves the send queue stopped until its Start: another
	// process sharing the database may be the one sending. Queued, when
	// set, is told of destinations with newly queued work (see Queue).
	Standby bool
	Queued  func(destinations []string)
}

// API is the federation side of one homeserver.
type API struct {
	serverName spec.ServerName
	key        serverkey.Key
	oldKeys    map[gomatrixserverlib.KeyID]gomatrixserverlib.OldVerifyKey
	db         *storage.DB
	rooms      *rooms.Rooms
	media      *media.Repository
	notifier   *syncstream.Notifier
	typing     *syncstream.Typing
	presence   *syncstream.Presence
	e2ee       *e2ee.E2EE
	appsvc     *appservice.Pusher
	log        *slog.Logger
	version    string
	// maxRequestBytes is max_request_bytes, the body limit of requests
	// but transactions (bodyLimits).
	maxRequestBytes int64

	client    fclient.FederationClient
	plainHTTP *http.Client // for media Location redirects, through the outbound guard
	keyClient recordingKeyClient
	keyRing   *gomatrixserverlib.KeyRing
	queue     *Queue
	txnLocks  keyedMutex
	edus      map[string]EDUHandler
}

// New builds the federation side: the outbound client (one per process),
// the key ring and the send queue, whose senders resume what the previous
// run left queued. Close stops them.
func New(ctx context.Context, d Deps) (*API, error) {
	a := &API{serverName: spec.ServerName(d.Config.ServerName), key: d.Key, db: d.DB, rooms: d.Rooms, media: d.Media,
		notifier: d.Notifier, typing: d.Typing, presence: d.Presence, e2ee: d.E2EE, appsvc: d.AppServices, log: d.Log, version: d.Version,
		maxRequestBytes: d.Config.MaxRequestBytes}
	var err error
	if a.oldKeys, err = loadOldKeys(filepath.Join(d.Config.DataDir, OldKeysFile)); err != nil {
		return nil, err
	}
	guard, err := netguard.New(d.Config.FederationAllowCIDRs)
	if err != nil {
		return nil, fmt.Errorf("federation_allow_cidrs: %w", err)
	}
	roots, err := tlscert.CertPool(d.Config.FederationCACerts)
	if err != nil {
		return nil, fmt.Errorf("federation_ca_certs: %w", err)
	}
	var resolver *net.Resolver
	if d.Config.FederationDNSServer != "" {
		resolver = dnsResolver(d.Config.FederationDNSServer)
	}
	if d.Config.FederationTLSInsecureSkipVerify {
		d.Log.Warn("federation_tls_insecure_skip_verify is ON: certificates of other servers are NOT checked, " +
			"anyone on the network path can impersonate any server. Use this for local tests only.")
	}
	a.client = fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: a.serverName, KeyID: d.Key.ID, PrivateKey: d.Key.Private}},
		fclient.WithTransport(newTransport(guard, roots, d.Config.FederationTLSInsecureSkipVerify, resolver)),
		fclient.WithTimeout(requestTimeout),
		fclient.WithUserAgent("Hearth/"+d.Version),
	)
	a.plainHTTP = &http.Client{Transport: guard.Transport(8), Timeout: requestTimeout}
	var trusted []config.TrustedKeyServer
	for _, s := range d.Config.TrustedKeyServers {
		ts, err := config.ParseTrustedKeyServer(s)
		if err != nil {
			return nil, fmt.Errorf("trusted_key_servers: %w", err)
		}
		trusted = append(trusted, ts)
	}
	a.keyClient = recordingKeyClient{FederationClient: a.client, db: d.DB}
	a.keyRing = newKeyRing(d.DB, a.serverName, a.ownKeys(), a.keyClient, trusted)
	a.queue = NewQueue(d.DB, d.Rooms, a.client, a.serverName, d.Log)
	a.queue.Queued = d.Queued
	a.edus = a.eduHandlers()
	d.Rooms.Observe(a.queue.fanOut)
	d.Rooms.SetFederation(a.keyRing, roomClient{a}, roomClient{a})
	d.Rooms.SetInviteClient(roomClient{a})
	d.Rooms.SetMembershipClient(roomClient{a})
	d.Rooms.SetPolicyClient(roomClient{a})
	if d.Media != nil {
		d.Media.SetRemote(mediaFetcher{a})
	}
	if !d.Standby {
		if err := a.queue.Start(ctx); err != nil {
			a.queue.Close()
			return nil, err
		}
	}
	// Partial-state rooms left mid-resync (a restart, kill -9) resume.
	if err := d.Rooms.StartResyncs(ctx); err != nil {
		a.queue.Close()
		return nil, err
	}
	return a, nil
}

// Close stops the send queue's senders and the partial-state resyncs.
func (a *API) Close() {
	a.rooms.StopResyncs()
	a.queue.Close()
}

// QueueStatus reports the outbound senders of this process (metrics).
func (a *API) QueueStatus() []DestinationStatus { return a.queue.Status() }

// Client is the process's signing federation client.
func (a *API) Client() fclient.FederationClient { return a.client }

// KeyRing verifies signatures of other servers.
func (a *API) KeyRing() *gomatrixserverlib.KeyRing { return a.keyRing }

// Queue is the outbound send queue.
func (a *API) Queue() *Queue { return a.queue }
