// Package config holds Hearth's configuration: the YAML file, the environment
// variables that override it and the command-line flags that override both.
//
// Precedence, lowest first: built-in defaults, the config file, HEARTH_*
// environment variables, command-line flags. Every option has all three
// spellings; config.sample.yaml documents each one.
package config

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Registration modes for POST /register.
const (
	RegistrationOpen   = "open"
	RegistrationToken  = "token"
	RegistrationClosed = "closed"
)

// Modes of legacy_media, the unauthenticated /_matrix/media/v3 downloads.
const (
	LegacyMediaOff          = "off"
	LegacyMediaBeforeSwitch = "before_switch"
	LegacyMediaOn           = "on"
)

// ThumbnailSize is one configured thumbnail: at most Width x Height with
// Method "crop" or "scale" (client-server API, Thumbnails).
type ThumbnailSize struct {
	Width, Height int
	Method        string
}

// ParseThumbnailSize parses "WxH crop|scale".
func ParseThumbnailSize(s string) (ThumbnailSize, error) {
	var ts ThumbnailSize
	dims, method, ok := strings.Cut(strings.TrimSpace(s), " ")
	w, h, ok2 := strings.Cut(dims, "x")
	var err1, err2 error
	ts.Width, err1 = strconv.Atoi(w)
	ts.Height, err2 = strconv.Atoi(h)
	ts.Method = strings.TrimSpace(method)
	if !ok || !ok2 || err1 != nil || err2 != nil || ts.Width < 1 || ts.Height < 1 || ts.Width > 4096 || ts.Height > 4096 ||
		(ts.Method != "crop" && ts.Method != "scale") {
		return ts, fmt.Errorf("%q is not \"WxH crop\" or \"WxH scale\" with sides of 1 to 4096", s)
	}
	return ts, nil
}

// Config is the whole server configuration. The yaml tag is the config-file
// key; the env tag is the environment variable that overrides it.
type Config struct {
	ServerName       string `yaml:"server_name" env:"HEARTH_SERVER_NAME"`
	DataDir          string `yaml:"data_dir" env:"HEARTH_DATA_DIR"`
	Listen           string `yaml:"listen" env:"HEARTH_LISTEN"`
	FederationListen string `yaml:"federation_listen" env:"HEARTH_FEDERATION_LISTEN"`
	// MetricsListen is the address of the Prometheus /metrics listener,
	// for example 127.0.0.1:9090; empty (the default) serves no metrics.
	// Metrics are never served on the client listener: they tell anyone
	// who asks how busy the server is and which endpoints fail.
	MetricsListen string `yaml:"metrics_listen" env:"HEARTH_METRICS_LISTEN"`
	DatabaseURL   string `yaml:"database_url" env:"HEARTH_DATABASE_URL"`
	// SQLiteSynchronous is PRAGMA synchronous for SQLite: normal survives a
	// process crash, full also survives power loss (DESIGN.md, Storage).
	SQLiteSynchronous string `yaml:"sqlite_synchronous" env:"HEARTH_SQLITE_SYNCHRONOUS"`
	// DatabaseMaxConns bounds the PostgreSQL pool, or the SQLite reader pool.
	DatabaseMaxConns int `yaml:"database_max_conns" env:"HEARTH_DATABASE_MAX_CONNS"`

	SigningKeyPath string `yaml:"signing_key_path" env:"HEARTH_SIGNING_KEY_PATH"`
	// TLS is "" (a certificate from tls_cert_path, or a self-signed one)
	// or "acme": certificates from an ACME CA (Let's Encrypt by default)
	// for the federation listener and, served as HTTPS, the client one.
	TLS string `yaml:"tls" env:"HEARTH_TLS"`
	// ACMEEmail is the contact address given to the ACME CA.
	ACMEEmail string `yaml:"acme_email" env:"HEARTH_ACME_EMAIL"`
	// ACMEDirectoryURL is the CA's directory; empty: Let's Encrypt.
	ACMEDirectoryURL string `yaml:"acme_directory_url" env:"HEARTH_ACME_DIRECTORY_URL"`
	// ACMECACerts are PEM files of CAs trusted for talking to the ACME
	// directory (a private CA, or Pebble in tests).
	ACMECACerts []string `yaml:"acme_ca_certs" env:"HEARTH_ACME_CA_CERTS"`
	// ACMEDomains are the names certificates are requested for; empty:
	// the server name (without its port).
	ACMEDomains []string `yaml:"acme_domains" env:"HEARTH_ACME_DOMAINS"`
	// ACMEHTTPListen serves the ACME HTTP-01 challenge (and redirects
	// other requests to HTTPS); empty: only TLS-ALPN-01, answered on the
	// TLS listeners, which the CA must reach on port 443.
	ACMEHTTPListen string `yaml:"acme_http_listen" env:"HEARTH_ACME_HTTP_LISTEN"`
	TLSCertPath    string `yaml:"tls_cert_path" env:"HEARTH_TLS_CERT_PATH"`
	TLSKeyPath     string `yaml:"tls_key_path" env:"HEARTH_TLS_KEY_PATH"`
	// FederationCACerts are PEM files of extra CAs trusted for outbound
	// federation, next to the system roots.
	FederationCACerts []string `yaml:"federation_ca_certs" env:"HEARTH_FEDERATION_CA_CERTS"`
	// FederationTLSInsecureSkipVerify turns off certificate checks of other
	// servers: for tests on one machine only.
	FederationTLSInsecureSkipVerify bool `yaml:"federation_tls_insecure_skip_verify" env:"HEARTH_FEDERATION_TLS_INSECURE_SKIP_VERIFY"`
	// FederationAllowCIDRs are internal address ranges outbound federation
	// may connect to; loopback, private and link-local ranges are refused
	// unless listed here.
	FederationAllowCIDRs []string `yaml:"federation_allow_cidrs" env:"HEARTH_FEDERATION_ALLOW_CIDRS"`
	// FederationDNSServer is a DNS server (host:port) that resolves other
	// servers' names for outbound federation instead of the system's
	// resolver; empty (the default): the system's.
	FederationDNSServer string `yaml:"federation_dns_server" env:"HEARTH_FEDERATION_DNS_SERVER"`
	// TrustedKeyServers are notaries asked for other servers' keys when a
	// server cannot be reached directly: "server_name key_id base64_key".
	TrustedKeyServers []string `yaml:"trusted_key_servers" env:"HEARTH_TRUSTED_KEY_SERVERS"`

	Registration             string `yaml:"registration" env:"HEARTH_REGISTRATION"`
	RegistrationSharedSecret string `yaml:"registration_shared_secret" env:"HEARTH_REGISTRATION_SHARED_SECRET"`
	// ServerNoticesLocalpart names the account that sends server notices
	// (client-server API, Server Notices); empty disables them.
	ServerNoticesLocalpart string `yaml:"server_notices_localpart" env:"HEARTH_SERVER_NOTICES_LOCALPART"`
	// SignInAlerts sends a server notice to a user whose account gains a
	// signed-in device while they have others (needs server notices).
	SignInAlerts bool `yaml:"sign_in_alerts" env:"HEARTH_SIGN_IN_ALERTS"`
	// SignInAlertsGeoIPDB is a MaxMind DB file (GeoLite2 or DB-IP City or
	// Country) that places a sign-in's address in a city or country;
	// empty: alerts give the address only.
	SignInAlertsGeoIPDB string `yaml:"sign_in_alerts_geoip_db" env:"HEARTH_SIGN_IN_ALERTS_GEOIP_DB"`
	// AppServiceConfigFiles are the registration files of application
	// services (bridges), read and checked at start.
	AppServiceConfigFiles []string `yaml:"app_service_config_files" env:"HEARTH_APP_SERVICE_CONFIG_FILES"`
	BcryptCost            int      `yaml:"bcrypt_cost" env:"HEARTH_BCRYPT_COST"`
	RateLimits            string   `yaml:"rate_limits" env:"HEARTH_RATE_LIMITS"`
	// GuestAccess allows POST /register?kind=guest.
	GuestAccess bool `yaml:"guest_access" env:"HEARTH_GUEST_ACCESS"`
	// PasswordLogin offers m.login.password on /login and the password form
	// on the OAuth sign-in page; false leaves the other methods only.
	PasswordLogin bool `yaml:"password_login" env:"HEARTH_PASSWORD_LOGIN"`
	// MaxDevicesPerUser refuses logins beyond this many devices; 0: no limit.
	MaxDevicesPerUser int `yaml:"max_devices_per_user" env:"HEARTH_MAX_DEVICES_PER_USER"`
	// UserLimitInfoURI is the info_uri of M_USER_LIMIT_EXCEEDED (v1.18), a
	// page explaining the per-user limits (devices, media quota); empty:
	// https://{server_name}/.
	UserLimitInfoURI string `yaml:"user_limit_info_uri" env:"HEARTH_USER_LIMIT_INFO_URI"`
	// RefreshableTokenLifetimeSeconds is the lifetime of access tokens
	// issued to clients that asked for a refresh token.
	RefreshableTokenLifetimeSeconds int `yaml:"refreshable_token_lifetime_seconds" env:"HEARTH_REFRESHABLE_TOKEN_LIFETIME_SECONDS"`
	// Token buckets (events per second, burst) per IP address and per user.
	RateLimitLoginPerSecond    float64 `yaml:"rate_limit_login_per_second" env:"HEARTH_RATE_LIMIT_LOGIN_PER_SECOND"`
	RateLimitLoginBurst        int     `yaml:"rate_limit_login_burst" env:"HEARTH_RATE_LIMIT_LOGIN_BURST"`
	RateLimitRegisterPerSecond float64 `yaml:"rate_limit_register_per_second" env:"HEARTH_RATE_LIMIT_REGISTER_PER_SECOND"`
	RateLimitRegisterBurst     int     `yaml:"rate_limit_register_burst" env:"HEARTH_RATE_LIMIT_REGISTER_BURST"`
	RateLimitMessagePerSecond  float64 `yaml:"rate_limit_message_per_second" env:"HEARTH_RATE_LIMIT_MESSAGE_PER_SECOND"`
	RateLimitMessageBurst      int     `yaml:"rate_limit_message_burst" env:"HEARTH_RATE_LIMIT_MESSAGE_BURST"`

	WellKnownClient string `yaml:"well_known_client" env:"HEARTH_WELL_KNOWN_CLIENT"`
	WellKnownServer string `yaml:"well_known_server" env:"HEARTH_WELL_KNOWN_SERVER"`

	// TURN server credentials handed out by GET /voip/turnServer, in the
	// shared-secret scheme coturn's use-auth-secret implements.
	TURNURIs         []string `yaml:"turn_uris" env:"HEARTH_TURN_URIS"`
	TURNSharedSecret string   `yaml:"turn_shared_secret" env:"HEARTH_TURN_SHARED_SECRET"`
	// TURNUserLifetime is how long TURN credentials stay valid: a Go
	// duration ("1h", "90m") or a number of seconds.
	TURNUserLifetime string `yaml:"turn_user_lifetime" env:"HEARTH_TURN_USER_LIFETIME"`

	// LiveKit SFU for MatrixRTC calls (MSC4143, MSC4195): its WebSocket URL
	// as clients reach it, and the API key and secret Hearth's built-in
	// authorization service signs access tokens with. The service answers
	// under <well_known_client>/_hearth/livekit; empty livekit_url: no
	// RTC transport is advertised.
	LiveKitURL           string `yaml:"livekit_url" env:"HEARTH_LIVEKIT_URL"`
	LiveKitAPIKey        string `yaml:"livekit_api_key" env:"HEARTH_LIVEKIT_API_KEY"`
	LiveKitAPISecret     string `yaml:"livekit_api_secret" env:"HEARTH_LIVEKIT_API_SECRET"`
	LiveKitAPISecretFile string `yaml:"livekit_api_secret_file" env:"HEARTH_LIVEKIT_API_SECRET_FILE"`
	// RTCFullAccessServers are the other homeservers whose users may create
	// rooms on the SFU (this server's users always may); anyone else may
	// only join a call one of those started.
	RTCFullAccessServers []string `yaml:"rtc_full_access_servers" env:"HEARTH_RTC_FULL_ACCESS_SERVERS"`

	// MaxRequestBytes bounds a request body other than a media upload; a
	// JSON body is held in memory whole, so it is kept small. Event content
	// is bounded by the PDU size limit (65536 bytes) below it, an inbound
	// federation transaction may be up to 12.5 MiB above it.
	MaxRequestBytes int64 `yaml:"max_request_bytes" env:"HEARTH_MAX_REQUEST_BYTES"`

	// Content repository (media). Uploads are exempt from max_request_bytes
	// and limited by max_upload_bytes instead, streamed to disk.
	MaxUploadBytes  int64 `yaml:"max_upload_bytes" env:"HEARTH_MAX_UPLOAD_BYTES"`
	MediaQuotaBytes int64 `yaml:"media_quota_bytes" env:"HEARTH_MEDIA_QUOTA_BYTES"`
	// MaxPendingMediaUploads bounds a user's unused POST /media/v1/create IDs.
	MaxPendingMediaUploads int `yaml:"max_pending_media_uploads" env:"HEARTH_MAX_PENDING_MEDIA_UPLOADS"`
	// MediaCreateExpirySeconds is how long an unused create ID stays valid.
	MediaCreateExpirySeconds int `yaml:"media_create_expiry_seconds" env:"HEARTH_MEDIA_CREATE_EXPIRY_SECONDS"`
	// MaxThumbnailPixels refuses thumbnailing of larger images before decoding
	// them (decompression bombs).
	MaxThumbnailPixels int64 `yaml:"max_thumbnail_pixels" env:"HEARTH_MAX_THUMBNAIL_PIXELS"`
	// ThumbnailSizes are "WxH crop|scale" entries, as Synapse's thumbnail_sizes.
	ThumbnailSizes []string `yaml:"thumbnail_sizes" env:"HEARTH_THUMBNAIL_SIZES"`
	// LegacyMedia serves the unauthenticated /_matrix/media/v3/download and
	// thumbnail endpoints: off, before_switch (only media older than the
	// freeze recorded at first start) or on.
	LegacyMedia          string   `yaml:"legacy_media" env:"HEARTH_LEGACY_MEDIA"`
	URLPreview           bool     `yaml:"url_preview" env:"HEARTH_URL_PREVIEW"`
	URLPreviewAllowCIDRs []string `yaml:"url_preview_allow_cidrs" env:"HEARTH_URL_PREVIEW_ALLOW_CIDRS"`

	// PushGatewayAllowCIDRs are internal address ranges push gateways may
	// be reached on (by default only public addresses).
	PushGatewayAllowCIDRs []string `yaml:"push_gateway_allow_cidrs" env:"HEARTH_PUSH_GATEWAY_ALLOW_CIDRS"`
	// PushHoldSeconds holds a push this long when the recipient is online
	// and syncing on a device, and drops it if they read the event
	// meanwhile; 0 (the default) sends at once.
	PushHoldSeconds int `yaml:"push_hold_seconds" env:"HEARTH_PUSH_HOLD_SECONDS"`

	// ThreadSubscriptionPushRules turns on MSC4306's postcontent push rules:
	// messages in threads a user has not subscribed to stop notifying.
	ThreadSubscriptionPushRules bool `yaml:"thread_subscription_push_rules" env:"HEARTH_THREAD_SUBSCRIPTION_PUSH_RULES"`

	// Presence turns presence (online/unavailable/offline) on or off.
	Presence bool `yaml:"presence" env:"HEARTH_PRESENCE"`

	// PolicyServer makes this server a policy server (spec v1.18, Policy
	// Servers): it answers POST /_matrix/policy/v1/sign for rooms whose
	// m.room.policy names it with its policy key, and publishes that key
	// at /.well-known/matrix/policy_server.
	PolicyServer bool `yaml:"policy_server" env:"HEARTH_POLICY_SERVER"`
	// PolicyServerKeyPath is the policy key, an ed25519 key apart from the
	// signing key, created when missing; empty: <data_dir>/policy_server.key.
	PolicyServerKeyPath string `yaml:"policy_server_key_path" env:"HEARTH_POLICY_SERVER_KEY_PATH"`
	// PolicyServerRefusedWords is the policy: an event whose content has
	// a string containing one of these words (in any case) is refused.
	PolicyServerRefusedWords []string `yaml:"policy_server_refused_words" env:"HEARTH_POLICY_SERVER_REFUSED_WORDS"`

	// MaxEventDelayMS is the longest delay a client may schedule a delayed
	// event with (MSC4140, MatrixRTC's "hang up" events); 0 turns delayed
	// events off.
	MaxEventDelayMS int64 `yaml:"max_event_delay_ms" env:"HEARTH_MAX_EVENT_DELAY_MS"`

	// Outgoing mail (address validation, password reset) through an SMTP
	// relay; empty smtp_host: no mail, and no email addresses on accounts.
	SMTPHost     string `yaml:"smtp_host" env:"HEARTH_SMTP_HOST"`
	SMTPPort     int    `yaml:"smtp_port" env:"HEARTH_SMTP_PORT"`
	SMTPUsername string `yaml:"smtp_username" env:"HEARTH_SMTP_USERNAME"`
	SMTPPassword string `yaml:"smtp_password" env:"HEARTH_SMTP_PASSWORD"`
	// SMTPTLS is starttls (required, the default), tls (implicit, port
	// 465) or off (a relay on this machine only).
	SMTPTLS     string   `yaml:"smtp_tls" env:"HEARTH_SMTP_TLS"`
	SMTPCACerts []string `yaml:"smtp_ca_certs" env:"HEARTH_SMTP_CA_CERTS"`
	// EmailFrom is the From of the server's mail: "Name <address>".
	EmailFrom string `yaml:"email_from" env:"HEARTH_EMAIL_FROM"`
	// RegistrationRequiresEmail makes POST /register ask for a validated
	// email address (the m.login.email.identity stage) in every flow.
	RegistrationRequiresEmail bool `yaml:"registration_requires_email" env:"HEARTH_REGISTRATION_REQUIRES_EMAIL"`

	// SSOProviders are upstream OpenID Connect providers (company SSO),
	// see SSOProvider and docs/sign-in.md.
	SSOProviders SSOProviders `yaml:"sso_providers" env:"HEARTH_SSO_PROVIDERS"`

	LogLevel  string `yaml:"log_level" env:"HEARTH_LOG_LEVEL"`
	LogFormat string `yaml:"log_format" env:"HEARTH_LOG_FORMAT"`
}

// Default returns the configuration used when nothing is set.
func Default() Config {
	return Config{
		ServerName:        "localhost",
		DataDir:           "./hearth-data",
		Listen:            ":8008",
		FederationListen:  ":8448",
		SQLiteSynchronous: "normal",
		DatabaseMaxConns:  8,
		Registration:      RegistrationClosed,
		// On by default, so sign-in alerts have a sender.
		ServerNoticesLocalpart: "_server",
		SignInAlerts:           true,
		BcryptCost:             12,
		RateLimits:             "on",
		PasswordLogin:          true,
		TURNUserLifetime:       "1h",

		RefreshableTokenLifetimeSeconds: 300,
		RateLimitLoginPerSecond:         0.17,
		RateLimitLoginBurst:             5,
		RateLimitRegisterPerSecond:      0.17,
		RateLimitRegisterBurst:          3,
		RateLimitMessagePerSecond:       0.2,
		RateLimitMessageBurst:           10,
		MaxRequestBytes:                 1 << 20,

		MaxUploadBytes:           50 << 20,
		MaxPendingMediaUploads:   5,
		MediaCreateExpirySeconds: 24 * 60 * 60,
		MaxThumbnailPixels:       32_000_000,
		ThumbnailSizes:           []string{"32x32 crop", "96x96 crop", "320x240 scale", "640x480 scale", "800x600 scale"},
		LegacyMedia:              LegacyMediaBeforeSwitch,
		Presence:                 true,
		MaxEventDelayMS:          24 * 60 * 60 * 1000,
		SMTPTLS:                  "starttls",

		LogLevel:  "info",
		LogFormat: "text",
	}
}

// Load reads a YAML config file over the defaults. Unknown keys are errors, so
// a misspelt option is caught at start rather than silently ignored.
func Load(path string) (Config, error) {
	cfg := Default()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("reading config: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	// An empty file decodes to io.EOF and means "all defaults".
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("config file %s: %w", path, err)
	}
	return cfg, nil
}

// ApplyEnv overrides fields from HEARTH_* environment variables.
func (c *Config) ApplyEnv(lookup func(string) (string, bool)) error {
	for _, f := range fields(c) {
		v, ok := lookup(f.env)
		if !ok {
			continue
		}
		if err := f.set(v); err != nil {
			return fmt.Errorf("environment variable %s: %w", f.env, err)
		}
	}
	return nil
}

// Set assigns the option named by its YAML key from a string, as flags do.
func (c *Config) Set(key, value string) error {
	for _, f := range fields(c) {
		if f.key == key {
			if err := f.set(value); err != nil {
				return fmt.Errorf("option %s: %w", key, err)
			}
			return nil
		}
	}
	return fmt.Errorf("unknown option %q", key)
}

// ResolvePaths fills in paths derived from the data directory and makes
// relative paths absolute against it.
func (c *Config) ResolvePaths() {
	if c.SigningKeyPath == "" {
		c.SigningKeyPath = filepath.Join(c.DataDir, "signing.key")
	}
	if c.PolicyServerKeyPath == "" {
		c.PolicyServerKeyPath = filepath.Join(c.DataDir, "policy_server.key")
	}
	if c.DatabaseURL == "" {
		c.DatabaseURL = filepath.Join(c.DataDir, "hearth.db")
	}
}

// SelfSignedTLS reports whether the federation listener uses a certificate
// Hearth generates itself because none is configured.
func (c *Config) SelfSignedTLS() bool {
	return c.TLS == "" && c.TLSCertPath == "" && c.TLSKeyPath == ""
}

// SelfSignedCertPaths are where the generated federation certificate lives.
func (c *Config) SelfSignedCertPaths() (cert, key string) {
	return filepath.Join(c.DataDir, "federation-tls.crt"), filepath.Join(c.DataDir, "federation-tls.key")
}

// Validate checks every option and names the first bad one and its problem.
func (c *Config) Validate() error {
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, a...))
	}
	if err := ValidServerName(c.ServerName); err != nil {
		return bad("server_name", "%v", err)
	}
	if c.DataDir == "" {
		return bad("data_dir", "must not be empty")
	}
	if c.UserLimitInfoURI != "" {
		if u, err := url.Parse(c.UserLimitInfoURI); err != nil || !u.IsAbs() || u.Host == "" {
			return bad("user_limit_info_uri", "%q is not an absolute URL", c.UserLimitInfoURI)
		}
	}
	if l := c.ServerNoticesLocalpart; l != "" && (len(l) > 255 || strings.Trim(l, "abcdefghijklmnopqrstuvwxyz0123456789._=-/+") != "") {
		return bad("server_notices_localpart", "%q is not a valid localpart (lower-case letters, digits and ._=-/+)", l)
	}
	if err := validAddr(c.Listen); err != nil {
		return bad("listen", "%v", err)
	}
	if c.FederationListen != "" {
		if err := validAddr(c.FederationListen); err != nil {
			return bad("federation_listen", "%v", err)
		}
	}
	if c.MetricsListen != "" {
		if err := validAddr(c.MetricsListen); err != nil {
			return bad("metrics_listen", "%v", err)
		}
	}
	switch c.SQLiteSynchronous {
	case "normal", "full":
	default:
		return bad("sqlite_synchronous", "%q is not one of normal, full", c.SQLiteSynchronous)
	}
	if c.DatabaseMaxConns < 1 || c.DatabaseMaxConns > 1000 {
		return bad("database_max_conns", "%d is not between 1 and 1000", c.DatabaseMaxConns)
	}
	switch c.TLS {
	case "":
	case "acme":
		if c.TLSCertPath != "" || c.TLSKeyPath != "" {
			return bad("tls", "acme and tls_cert_path/tls_key_path exclude each other")
		}
		if c.ACMEHTTPListen != "" {
			if err := validAddr(c.ACMEHTTPListen); err != nil {
				return bad("acme_http_listen", "%v", err)
			}
		}
	default:
		return bad("tls", "%q is not \"\" or \"acme\"", c.TLS)
	}
	if (c.TLSCertPath == "") != (c.TLSKeyPath == "") {
		return bad("tls_cert_path", "tls_cert_path and tls_key_path must be set together")
	}
	switch c.Registration {
	case RegistrationOpen, RegistrationToken, RegistrationClosed:
	default:
		return bad("registration", "%q is not one of open, token, closed", c.Registration)
	}
	if c.BcryptCost < 4 || c.BcryptCost > 31 {
		return bad("bcrypt_cost", "%d is not between 4 and 31", c.BcryptCost)
	}
	switch c.RateLimits {
	case "on", "off":
	default:
		return bad("rate_limits", "%q is not one of on, off", c.RateLimits)
	}
	if _, err := ParseLifetime(c.TURNUserLifetime); err != nil {
		return bad("turn_user_lifetime", "%v", err)
	}
	for _, u := range c.TURNURIs {
		if !strings.HasPrefix(u, "turn:") && !strings.HasPrefix(u, "turns:") {
			return bad("turn_uris", "%q is not a turn: or turns: URI", u)
		}
	}
	if len(c.TURNURIs) > 0 && c.TURNSharedSecret == "" {
		return bad("turn_shared_secret", "must be set when turn_uris is set")
	}
	if err := c.validateEmail(); err != nil {
		return err
	}
	if err := c.validateLiveKit(); err != nil {
		return err
	}
	if err := c.validateSSO(); err != nil {
		return err
	}
	if c.MaxDevicesPerUser < 0 {
		return bad("max_devices_per_user", "%d is negative", c.MaxDevicesPerUser)
	}
	if c.RefreshableTokenLifetimeSeconds < 10 {
		return bad("refreshable_token_lifetime_seconds", "%d is below 10 seconds", c.RefreshableTokenLifetimeSeconds)
	}
	for _, rl := range []struct {
		key   string
		rate  float64
		burst int
	}{
		{"rate_limit_login", c.RateLimitLoginPerSecond, c.RateLimitLoginBurst},
		{"rate_limit_register", c.RateLimitRegisterPerSecond, c.RateLimitRegisterBurst},
		{"rate_limit_message", c.RateLimitMessagePerSecond, c.RateLimitMessageBurst},
	} {
		if rl.rate <= 0 {
			return bad(rl.key+"_per_second", "%v must be positive (use rate_limits: off to disable limits)", rl.rate)
		}
		if rl.burst < 1 {
			return bad(rl.key+"_burst", "%d must be at least 1", rl.burst)
		}
	}
	if c.MaxRequestBytes < 1<<16 {
		return bad("max_request_bytes", "%d is below the 65536 bytes a single event may need", c.MaxRequestBytes)
	}
	if c.MaxUploadBytes < 1 {
		return bad("max_upload_bytes", "%d must be positive", c.MaxUploadBytes)
	}
	if c.MediaQuotaBytes < 0 {
		return bad("media_quota_bytes", "%d must not be negative (0 means no quota)", c.MediaQuotaBytes)
	}
	if c.MaxPendingMediaUploads < 1 {
		return bad("max_pending_media_uploads", "%d must be positive", c.MaxPendingMediaUploads)
	}
	if c.MediaCreateExpirySeconds < 1 {
		return bad("media_create_expiry_seconds", "%d must be positive", c.MediaCreateExpirySeconds)
	}
	if c.MaxThumbnailPixels < 1 {
		return bad("max_thumbnail_pixels", "%d must be positive", c.MaxThumbnailPixels)
	}
	for _, s := range c.ThumbnailSizes {
		if _, err := ParseThumbnailSize(s); err != nil {
			return bad("thumbnail_sizes", "%v", err)
		}
	}
	switch c.LegacyMedia {
	case LegacyMediaOff, LegacyMediaBeforeSwitch, LegacyMediaOn:
	default:
		return bad("legacy_media", "%q is not one of off, before_switch, on", c.LegacyMedia)
	}
	if c.FederationDNSServer != "" {
		if err := validAddr(c.FederationDNSServer); err != nil {
			return bad("federation_dns_server", "%v", err)
		}
	}
	for _, cidr := range c.FederationAllowCIDRs {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return bad("federation_allow_cidrs", "%q is not a CIDR such as 127.0.0.0/8", cidr)
		}
	}
	for _, ks := range c.TrustedKeyServers {
		if _, err := ParseTrustedKeyServer(ks); err != nil {
			return bad("trusted_key_servers", "%v", err)
		}
	}
	for _, cidr := range c.URLPreviewAllowCIDRs {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return bad("url_preview_allow_cidrs", "%q is not a CIDR such as 127.0.0.0/8", cidr)
		}
	}
	for _, cidr := range c.PushGatewayAllowCIDRs {
		if _, _, err := net.ParseCIDR(cidr); err != nil {
			return bad("push_gateway_allow_cidrs", "%q is not a CIDR such as 127.0.0.0/8", cidr)
		}
	}
	if c.PushHoldSeconds < 0 || c.PushHoldSeconds > 300 {
		return bad("push_hold_seconds", "%d is not between 0 and 300", c.PushHoldSeconds)
	}
	if c.MaxEventDelayMS < 0 || c.MaxEventDelayMS > 365*24*60*60*1000 {
		return bad("max_event_delay_ms", "%d is not between 0 and a year (31536000000)", c.MaxEventDelayMS)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("log_level", "%q is not one of debug, info, warn, error", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return bad("log_format", "%q is not one of text, json", c.LogFormat)
	}
	return nil
}

// TrustedKeyServer is a notary for server keys with one of its verify keys.
type TrustedKeyServer struct {
	ServerName string
	KeyID      string
	PublicKey  ed25519.PublicKey
}

// ParseTrustedKeyServer reads "server_name key_id base64_key", e.g.
// "matrix.org ed25519:auto Noi6WqcDj0QmPxCNQqgezwTlBKrfqehY1u2FyWP9uYw".
func ParseTrustedKeyServer(s string) (TrustedKeyServer, error) {
	f := strings.Fields(s)
	if len(f) != 3 {
		return TrustedKeyServer{}, fmt.Errorf("%q is not \"server_name key_id base64_key\"", s)
	}
	if err := ValidServerName(f[0]); err != nil {
		return TrustedKeyServer{}, err
	}
	if !strings.HasPrefix(f[1], "ed25519:") {
		return TrustedKeyServer{}, fmt.Errorf("key id %q is not ed25519:...", f[1])
	}
	key, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
	if err != nil || len(key) != ed25519.PublicKeySize {
		return TrustedKeyServer{}, fmt.Errorf("%q is not an unpadded base64 ed25519 public key", f[2])
	}
	return TrustedKeyServer{ServerName: f[0], KeyID: f[1], PublicKey: key}, nil
}

// ParseLifetime reads a duration given as a Go duration ("1h", "90m") or a
// whole number of seconds; it must be positive.
func ParseLifetime(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if nerr != nil {
			return 0, fmt.Errorf("%q is neither a duration such as 1h nor a number of seconds", s)
		}
		d = time.Duration(n) * time.Second
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be positive", s)
	}
	return d, nil
}

// ValidServerName checks the spec's server name grammar (appendices, Server
// Name): a DNS name or IP literal with an optional port.
func ValidServerName(name string) error {
	if name == "" {
		return errors.New("must not be empty")
	}
	if len(name) > 255 {
		return errors.New("longer than 255 characters")
	}
	host, port := name, ""
	if strings.HasPrefix(name, "[") {
		end := strings.Index(name, "]")
		if end < 0 {
			return fmt.Errorf("%q has an unterminated IPv6 literal", name)
		}
		host, port = name[1:end], strings.TrimPrefix(name[end+1:], ":")
		if net.ParseIP(host) == nil {
			return fmt.Errorf("%q is not a valid IPv6 literal", name)
		}
		if name[end+1:] != "" && !strings.HasPrefix(name[end+1:], ":") {
			return fmt.Errorf("%q has junk after the IPv6 literal", name)
		}
	} else if i := strings.LastIndex(name, ":"); i >= 0 {
		host, port = name[:i], name[i+1:]
	}
	if port != "" || strings.HasSuffix(name, ":") {
		n, err := strconv.Atoi(port)
		// 1*5DIGIT: Atoi alone would take a sign and any number of zeros.
		if err != nil || n < 1 || n > 65535 || len(port) > 5 || strings.Trim(port, "0123456789") != "" {
			return fmt.Errorf("%q has an invalid port", name)
		}
	}
	if strings.HasPrefix(name, "[") {
		return nil
	}
	if host == "" {
		return fmt.Errorf("%q has no host", name)
	}
	for _, r := range host {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("%q contains %q, not allowed in a server name", name, r)
		}
	}
	return nil
}

func validAddr(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%q is not host:port (%v)", addr, err)
	}
	return nil
}

// Marshal renders the config as YAML, as written into a new data directory.
func (c *Config) Marshal() ([]byte, error) {
	return yaml.Marshal(c)
}

// validateLiveKit checks the LiveKit options: all or nothing, a ws(s) URL,
// one way of giving the secret, and a public base URL to derive the
// authorization service's URL from.
func (c *Config) validateLiveKit() error {
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, a...))
	}
	if c.LiveKitURL == "" {
		if c.LiveKitAPIKey != "" || c.LiveKitAPISecret != "" || c.LiveKitAPISecretFile != "" {
			return bad("livekit_url", "must be set when livekit_api_key or a secret is set")
		}
		return nil
	}
	u, err := url.Parse(c.LiveKitURL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return bad("livekit_url", "%q is not a ws:// or wss:// URL", c.LiveKitURL)
	}
	if c.LiveKitAPIKey == "" {
		return bad("livekit_api_key", "must be set when livekit_url is set")
	}
	if (c.LiveKitAPISecret == "") == (c.LiveKitAPISecretFile == "") {
		return bad("livekit_api_secret", "exactly one of livekit_api_secret and livekit_api_secret_file must be set when livekit_url is set")
	}
	if c.WellKnownClient == "" {
		return bad("well_known_client", "must be set when livekit_url is set: clients reach the LiveKit authorization service under it")
	}
	return nil
}

// LimitInfoURI is the info_uri M_USER_LIMIT_EXCEEDED answers carry.
func (c Config) LimitInfoURI() string {
	if c.UserLimitInfoURI != "" {
		return c.UserLimitInfoURI
	}
	return "https://" + c.ServerName + "/"
}

// LiveKitServiceURL is the public URL of Hearth's LiveKit authorization
// service (the livekit_service_url clients are told), "" without LiveKit.
func (c *Config) LiveKitServiceURL() string {
	if c.LiveKitURL == "" || c.WellKnownClient == "" {
		return ""
	}
	return strings.TrimRight(c.WellKnownClient, "/") + LiveKitServicePath
}

// LiveKitServicePath is where the client listener serves the LiveKit
// authorization service (POST .../get_token, .../sfu/get).
const LiveKitServicePath = "/_hearth/livekit"

// ReadLiveKitSecret is the LiveKit API secret: livekit_api_secret, or the
// contents of livekit_api_secret_file without surrounding whitespace.
func (c *Config) ReadLiveKitSecret() (string, error) {
	if c.LiveKitAPISecretFile == "" {
		return c.LiveKitAPISecret, nil
	}
	b, err := os.ReadFile(c.LiveKitAPISecretFile)
	if err != nil {
		return "", fmt.Errorf("config: livekit_api_secret_file: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("config: livekit_api_secret_file: %s is empty", c.LiveKitAPISecretFile)
	}
	return s, nil
}

// EmailEnabled reports whether the server sends mail.
func (c *Config) EmailEnabled() bool { return c.SMTPHost != "" }

func (c *Config) validateEmail() error {
	bad := func(key, format string, a ...any) error {
		return fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, a...))
	}
	if c.SMTPHost == "" {
		if c.RegistrationRequiresEmail {
			return bad("registration_requires_email", "needs smtp_host: Hearth must be able to send the validation mail")
		}
		return nil
	}
	if c.SMTPPort < 0 || c.SMTPPort > 65535 {
		return bad("smtp_port", "%d is not a port", c.SMTPPort)
	}
	switch c.SMTPTLS {
	case "", "starttls", "tls", "off":
	default:
		return bad("smtp_tls", "%q is not one of starttls, tls, off", c.SMTPTLS)
	}
	if c.EmailFrom == "" {
		return bad("email_from", "must be set when smtp_host is set (for example \"Hearth <noreply@example.org>\")")
	}
	if c.WellKnownClient == "" {
		return bad("well_known_client", "must be set when smtp_host is set: the links in validation mails point there")
	}
	return nil
}
