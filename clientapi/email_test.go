package clientapi_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/mail"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// smtpRelay is a real SMTP server (go-smtp) on 127.0.0.1 that requires
// STARTTLS and AUTH PLAIN, and hands every mail it accepts to the test.
type smtpRelay struct {
	addr   string
	port   int
	caFile string
	mails  chan relayedMail
	server *smtp.Server
}

type relayedMail struct {
	from, to string
	tls      bool
	msg      *mail.Message
	body     string
}

const relayUser, relayPassword = "hearth", "relay-secret"

func startSMTPRelay(t *testing.T) *smtpRelay {
	t.Helper()
	cert, caPEM := selfSignedIPCert(t)
	caFile := filepath.Join(t.TempDir(), "relay-ca.pem")
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	r := &smtpRelay{caFile: caFile, mails: make(chan relayedMail, 16)}
	s := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &relaySession{relay: r, conn: c}, nil
	}))
	s.Domain = "relay.test"
	s.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr, r.port, r.server = l.Addr().String(), l.Addr().(*net.TCPAddr).Port, s
	go func() { _ = s.Serve(l) }()
	t.Cleanup(func() { _ = s.Close() })
	return r
}

// next is the next mail the relay accepted.
func (r *smtpRelay) next(t *testing.T) relayedMail {
	t.Helper()
	select {
	case m := <-r.mails:
		return m
	case <-time.After(20 * time.Second):
		t.Fatal("the relay received no mail")
	}
	return relayedMail{}
}

type relaySession struct {
	relay    *smtpRelay
	conn     *smtp.Conn
	authed   bool
	from, to string
}

func (s *relaySession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *relaySession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, username, password string) error {
		if _, isTLS := s.conn.TLSConnectionState(); !isTLS {
			return errors.New("AUTH before STARTTLS")
		}
		if username != relayUser || password != relayPassword {
			return smtp.ErrAuthFailed
		}
		s.authed = true
		return nil
	}), nil
}
func (s *relaySession) Mail(from string, _ *smtp.MailOptions) error {
	if !s.authed {
		return smtp.ErrAuthRequired
	}
	s.from = from
	return nil
}
func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error { s.to = to; return nil }
func (s *relaySession) Data(r io.Reader) error {
	msg, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(msg.Body)
	if err != nil {
		return err
	}
	_, isTLS := s.conn.TLSConnectionState()
	s.relay.mails <- relayedMail{from: s.from, to: s.to, tls: isTLS, msg: msg, body: string(body)}
	return nil
}
func (s *relaySession) Reset()        {}
func (s *relaySession) Logout() error { return nil }

// selfSignedIPCert is a certificate for 127.0.0.1 and its PEM, which the
// server under test is told to trust (smtp_ca_certs).
func selfSignedIPCert(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relay.test"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

var linkRE = regexp.MustCompile(`https://chat\.hearth\.test(/_hearth/client/email/validate\?\S+)`)

// openLink follows the link of a validation mail like a browser: it loads
// the page (which sets the CSRF cookie) and submits its form.
func openLink(t *testing.T, srv *hearthtest.Server, m relayedMail) *http.Response {
	t.Helper()
	match := linkRE.FindStringSubmatch(m.body)
	if match == nil {
		t.Fatalf("no validation link in the mail: %q", m.body)
	}
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	page, err := browser.Get(srv.URL + match[1])
	if err != nil {
		t.Fatal(err)
	}
	html, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if page.StatusCode != http.StatusOK || !strings.Contains(string(html), `<form method="post"`) {
		t.Fatalf("validation page: %d %s", page.StatusCode, html)
	}
	if page.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(page.Header.Get("Content-Security-Policy"), "frame-ancestors 'none'") {
		t.Fatalf("validation page can be framed: %v", page.Header)
	}
	form := url.Values{}
	for _, f := range regexp.MustCompile(`name="([a-z_]+)" value="([^"]*)"`).FindAllStringSubmatch(string(html), -1) {
		form.Set(f[1], strings.ReplaceAll(f[2], "&#43;", "+"))
	}
	// The same form from another site (no cookie) is refused.
	forged, err := http.PostForm(srv.URL+"/_hearth/client/email/validate", form)
	if err != nil {
		t.Fatal(err)
	}
	forged.Body.Close()
	if forged.StatusCode != http.StatusForbidden {
		t.Fatalf("form without the CSRF cookie: %d, want 403", forged.StatusCode)
	}
	resp, err := browser.PostForm(srv.URL+"/_hearth/client/email/validate", form)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func emailConfig(relay *smtpRelay) func(*config.Config) {
	return func(c *config.Config) {
		c.SMTPHost, c.SMTPPort = "127.0.0.1", relay.port
		c.SMTPUsername, c.SMTPPassword = relayUser, relayPassword
		c.SMTPCACerts = []string{relay.caFile}
		c.EmailFrom = "Hearth <noreply@hearth.test>"
		c.WellKnownClient = "https://chat.hearth.test"
	}
}

// TestEmailAccountRecovery goes through every email flow a user has, with
// the mail carried by a real SMTP relay over STARTTLS with a login:
// registering with an address, logging in with it, resetting a forgotten
// password, adding and removing an address.
func TestEmailAccountRecovery(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		relay := startSMTPRelay(t)
		srv := hearthtest.NewServer(t, b, emailConfig(relay))

		// Registration offers the email stage next to the dummy one.
		r := srv.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "alice", "password": "first-pass"})
		hearthtest.Expect(t, r, 401, "")
		if !strings.Contains(string(r.Body), `"m.login.email.identity"`) {
			t.Fatalf("registration flows offer no email stage: %s", r.Body)
		}
		session := r.JSON["session"].(string)

		// requestToken: the mail goes out through the relay, over TLS.
		req := map[string]any{"client_secret": "s3cret.A", "email": "Alice@Example.ORG", "send_attempt": 1}
		r = srv.Do(t, "POST", "/_matrix/client/v3/register/email/requestToken", "", req)
		hearthtest.Expect(t, r, 200, "")
		sid := r.JSON["sid"].(string)
		m := relay.next(t)
		if !m.tls || m.to != "alice@example.org" || m.from != "noreply@hearth.test" {
			t.Fatalf("mail: tls %v, from %q, to %q", m.tls, m.from, m.to)
		}
		if subj := m.msg.Header.Get("Subject"); !strings.Contains(subj, "hearth.test") {
			t.Fatalf("subject %q", subj)
		}
		// The same send_attempt again: the same session, no new mail
		// (the next mail the relay sees must be attempt 2's).
		r = srv.Do(t, "POST", "/_matrix/client/v3/register/email/requestToken", "", req)
		hearthtest.Expect(t, r, 200, "")
		if r.JSON["sid"] != sid {
			t.Fatalf("a repeated send_attempt made a new session %v", r.JSON["sid"])
		}
		req["send_attempt"] = 2
		r = srv.Do(t, "POST", "/_matrix/client/v3/register/email/requestToken", "", req)
		hearthtest.Expect(t, r, 200, "")
		first, m := m, relay.next(t)
		if r.JSON["sid"] != sid || linkRE.FindString(first.body) == linkRE.FindString(m.body) {
			t.Fatal("a new send_attempt must mail a new link for the same session")
		}

		// Before the link is opened the stage fails.
		creds := map[string]any{"sid": sid, "client_secret": "s3cret.A"}
		auth := map[string]any{"type": "m.login.email.identity", "threepid_creds": creds, "session": session}
		r = srv.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "alice", "password": "first-pass", "auth": auth})
		hearthtest.Expect(t, r, 401, "M_UNAUTHORIZED")

		// The first mail's link no longer works; the second one does.
		if resp := openLink(t, srv, first); resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("superseded link: %d, want 400", resp.StatusCode)
		}
		if resp := openLink(t, srv, m); resp.StatusCode != http.StatusOK {
			t.Fatalf("validation link: %d", resp.StatusCode)
		}
		r = srv.Do(t, "POST", "/_matrix/client/v3/register", "", map[string]any{"username": "alice", "password": "first-pass", "auth": auth})
		hearthtest.Expect(t, r, 200, "")
		aliceToken := r.JSON["access_token"].(string)
		r = srv.Do(t, "GET", "/_matrix/client/v3/account/3pid", aliceToken, nil)
		hearthtest.Expect(t, r, 200, "")
		pids := r.JSON["threepids"].([]any)
		if len(pids) != 1 || pids[0].(map[string]any)["address"] != "alice@example.org" || pids[0].(map[string]any)["medium"] != "email" {
			t.Fatalf("threepids after registration: %s", r.Body)
		}
		r = srv.Do(t, "GET", "/_matrix/client/v3/capabilities", aliceToken, nil)
		if caps := r.JSON["capabilities"].(map[string]any); caps["m.3pid_changes"].(map[string]any)["enabled"] != true {
			t.Fatalf("m.3pid_changes: %s", r.Body)
		}

		// The address is taken now.
		r = srv.Do(t, "POST", "/_matrix/client/v3/register/email/requestToken", "",
			map[string]any{"client_secret": "other", "email": "alice@example.org", "send_attempt": 1})
		hearthtest.Expect(t, r, 400, "M_THREEPID_IN_USE")

		// Login with the address as identifier.
		loginBody := func(password string) map[string]any {
			return map[string]any{"type": "m.login.password", "password": password,
				"identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "ALICE@example.org"}}
		}
		r = srv.Do(t, "POST", "/_matrix/client/v3/login", "", loginBody("first-pass"))
		hearthtest.Expect(t, r, 200, "")
		if r.JSON["user_id"] != "@alice:hearth.test" {
			t.Fatalf("login by email: %s", r.Body)
		}
		r = srv.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password", "password": "first-pass",
			"identifier": map[string]any{"type": "m.id.thirdparty", "medium": "email", "address": "nobody@example.org"}})
		hearthtest.Expect(t, r, 403, "M_FORBIDDEN")

		// Forgotten password: unknown addresses are refused, a known one
		// gets a mail, and the reset logs out every device.
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/password/email/requestToken", "",
			map[string]any{"client_secret": "reset1", "email": "nobody@example.org", "send_attempt": 1})
		hearthtest.Expect(t, r, 400, "M_THREEPID_NOT_FOUND")
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/password/email/requestToken", "",
			map[string]any{"client_secret": "reset1", "email": "alice@example.org", "send_attempt": 1, "next_link": "https://app.example.org/done"})
		hearthtest.Expect(t, r, 200, "")
		resetSID := r.JSON["sid"].(string)
		m = relay.next(t)
		if !strings.Contains(m.msg.Header.Get("Subject"), "Reset your password") {
			t.Fatalf("reset mail subject %q", m.msg.Header.Get("Subject"))
		}
		// The registration session cannot stand in for the reset one.
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "second-pass"})
		hearthtest.Expect(t, r, 401, "")
		resetSession := r.JSON["session"].(string)
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "second-pass",
			"auth": map[string]any{"type": "m.login.email.identity", "session": resetSession, "threepid_creds": map[string]any{"sid": sid, "client_secret": "s3cret.A"}}})
		hearthtest.Expect(t, r, 401, "M_UNAUTHORIZED")
		resp := openLink(t, srv, m)
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "https://app.example.org/done" {
			t.Fatalf("validation with next_link: %d %q", resp.StatusCode, resp.Header.Get("Location"))
		}
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "second-pass",
			"auth": map[string]any{"type": "m.login.email.identity", "session": resetSession, "threepid_creds": map[string]any{"sid": resetSID, "client_secret": "reset1"}}})
		hearthtest.Expect(t, r, 200, "")
		hearthtest.Expect(t, srv.Do(t, "GET", "/_matrix/client/v3/account/whoami", aliceToken, nil), 401, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, srv.Do(t, "POST", "/_matrix/client/v3/login", "", loginBody("first-pass")), 403, "M_FORBIDDEN")
		r = srv.Do(t, "POST", "/_matrix/client/v3/login", "", loginBody("second-pass"))
		hearthtest.Expect(t, r, 200, "")
		aliceToken = r.JSON["access_token"].(string)
		// The validated session was used up.
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "third-pass",
			"auth": map[string]any{"type": "m.login.email.identity", "threepid_creds": map[string]any{"sid": resetSID, "client_secret": "reset1"}}})
		hearthtest.Expect(t, r, 401, "M_UNAUTHORIZED")

		// Adding and removing an address on an existing account.
		_, bobToken := srv.RegisterUser(t, "bob")
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/3pid/email/requestToken", "",
			map[string]any{"client_secret": "bobsecret", "email": "bob@example.org", "send_attempt": 1})
		hearthtest.Expect(t, r, 200, "")
		bobSID := r.JSON["sid"].(string)
		m = relay.next(t)
		add := map[string]any{"sid": bobSID, "client_secret": "bobsecret"}
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/3pid/add", bobToken, add)
		hearthtest.Expect(t, r, 401, "")
		add["auth"] = map[string]any{"type": "m.login.password", "password": "password", "session": r.JSON["session"],
			"identifier": map[string]any{"type": "m.id.user", "user": "bob"}}
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/3pid/add", bobToken, add)
		hearthtest.Expect(t, r, 400, "M_THREEPID_AUTH_FAILED") // not validated yet
		if resp := openLink(t, srv, m); resp.StatusCode != http.StatusOK {
			t.Fatalf("validation link: %d", resp.StatusCode)
		}
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/3pid/add", bobToken, map[string]any{"sid": bobSID, "client_secret": "bobsecret"})
		hearthtest.Expect(t, r, 401, "")
		add["auth"].(map[string]any)["session"] = r.JSON["session"]
		hearthtest.Expect(t, srv.Do(t, "POST", "/_matrix/client/v3/account/3pid/add", bobToken, add), 200, "")
		r = srv.Do(t, "GET", "/_matrix/client/v3/account/3pid", bobToken, nil)
		if pids := r.JSON["threepids"].([]any); len(pids) != 1 || pids[0].(map[string]any)["address"] != "bob@example.org" {
			t.Fatalf("bob's threepids: %s", r.Body)
		}
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/3pid/delete", bobToken, map[string]any{"medium": "email", "address": "bob@example.org"})
		hearthtest.Expect(t, r, 200, "")
		if r.JSON["id_server_unbind_result"] != "no-support" {
			t.Fatalf("delete: %s", r.Body)
		}
		hearthtest.Expect(t, srv.Do(t, "POST", "/_matrix/client/v3/account/3pid/delete", bobToken,
			map[string]any{"medium": "email", "address": "bob@example.org"}), 404, "M_NOT_FOUND")
		r = srv.Do(t, "GET", "/_matrix/client/v3/account/3pid", bobToken, nil)
		if pids := r.JSON["threepids"].([]any); len(pids) != 0 {
			t.Fatalf("bob's threepids after delete: %s", r.Body)
		}

		// Deactivation frees alice's address.
		r = srv.Do(t, "POST", "/_matrix/client/v3/account/deactivate", aliceToken, map[string]any{})
		hearthtest.Expect(t, r, 401, "")
		hearthtest.Expect(t, srv.Do(t, "POST", "/_matrix/client/v3/account/deactivate", aliceToken, map[string]any{
			"auth": map[string]any{"type": "m.login.password", "password": "second-pass", "session": r.JSON["session"],
				"identifier": map[string]any{"type": "m.id.user", "user": "alice"}}}), 200, "")
		r = srv.Do(t, "POST", "/_matrix/client/v3/register/email/requestToken", "",
			map[string]any{"client_secret": "again", "email": "alice@example.org", "send_attempt": 1})
		hearthtest.Expect(t, r, 200, "")
		relay.next(t)
	})
}

// TestEmailBadInput: every malformed request gets its errcode, and a
// server without mail says so instead of pretending.
func TestEmailBadInput(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		relay := startSMTPRelay(t)
		srv := hearthtest.NewServer(t, b, emailConfig(relay))
		path := "/_matrix/client/v3/register/email/requestToken"
		for name, c := range map[string]struct {
			body    map[string]any
			errcode string
		}{
			"bad client_secret": {map[string]any{"client_secret": "no spaces", "email": "a@example.org", "send_attempt": 1}, "M_INVALID_PARAM"},
			"no email":          {map[string]any{"client_secret": "x", "send_attempt": 1}, "M_MISSING_PARAM"},
			"not an address":    {map[string]any{"client_secret": "x", "email": "a@", "send_attempt": 1}, "M_INVALID_PARAM"},
			"name and address":  {map[string]any{"client_secret": "x", "email": "A <a@example.org>", "send_attempt": 1}, "M_INVALID_PARAM"},
			"header injection":  {map[string]any{"client_secret": "x", "email": "a@example.org\r\nBcc: b@example.org", "send_attempt": 1}, "M_INVALID_PARAM"},
			"no send_attempt":   {map[string]any{"client_secret": "x", "email": "a@example.org"}, "M_MISSING_PARAM"},
			"script next_link":  {map[string]any{"client_secret": "x", "email": "a@example.org", "send_attempt": 1, "next_link": "javascript:alert(1)"}, "M_INVALID_PARAM"},
		} {
			r := srv.Do(t, "POST", path, "", c.body)
			if r.Status != 400 || r.ErrCode() != c.errcode {
				t.Errorf("%s: got %d %s, want 400 %s", name, r.Status, r.ErrCode(), c.errcode)
			}
		}
		hearthtest.Expect(t, srv.Do(t, "POST", path, "", "{"), 400, "M_NOT_JSON")
		hearthtest.Expect(t, srv.Do(t, "POST", "/_matrix/client/v3/register/msisdn/requestToken", "",
			map[string]any{"client_secret": "x", "country": "GB", "phone_number": "1", "send_attempt": 1}), 400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
		// The validation page with a made-up token.
		resp, err := http.Get(srv.URL + "/_hearth/client/email/validate?sid=x&client_secret=y")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("incomplete link: %d", resp.StatusCode)
		}

		// The relay goes away: a clear error, not a 500.
		_ = relay.server.Close()
		r := srv.Do(t, "POST", path, "", map[string]any{"client_secret": "x", "email": "a@example.org", "send_attempt": 1})
		hearthtest.Expect(t, r, 502, "M_UNKNOWN")

		// No smtp_host: the endpoints say the medium is not supported.
		plain := hearthtest.NewServer(t, b, nil)
		hearthtest.Expect(t, plain.Do(t, "POST", path, "", map[string]any{"client_secret": "x", "email": "a@example.org", "send_attempt": 1}),
			400, "M_THREEPID_MEDIUM_NOT_SUPPORTED")
		_, tok := plain.RegisterUser(t, "carol")
		r = plain.Do(t, "GET", "/_matrix/client/v3/capabilities", tok, nil)
		if caps := r.JSON["capabilities"].(map[string]any); caps["m.3pid_changes"].(map[string]any)["enabled"] != false {
			t.Fatalf("m.3pid_changes without mail: %s", r.Body)
		}
		hearthtest.Expect(t, plain.Do(t, "POST", "/_matrix/client/v3/account/password", "", map[string]any{"new_password": "x"}), 401, "M_MISSING_TOKEN")
	})
}
