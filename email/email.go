// Package email sends the server's own mail (address validation, password
// reset) through an SMTP relay the operator configures.
//
// It uses github.com/emersion/go-smtp's client rather than net/smtp, which
// is frozen: go-smtp is maintained, speaks STARTTLS and implicit TLS, and
// the same module gives the tests a real SMTP server to receive with.
package email

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/mail"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// TLS modes of the connection to the relay.
const (
	TLSStartTLS = "starttls" // plain connect, then STARTTLS, required (port 587)
	TLSImplicit = "tls"      // TLS from the first byte (port 465)
	TLSOff      = "off"      // no TLS: only for a relay on this machine
)

// Config is the SMTP relay and the sender address.
type Config struct {
	Host     string
	Port     int // 0: 587 for starttls, 465 for tls, 25 for off
	Username string
	Password string
	TLS      string
	// CACerts are PEM files of CAs trusted for the relay's certificate,
	// next to the system roots.
	CACerts []string
	// From is the From header, "Name <address>" or an address.
	From string
}

// Sender sends mail through one relay. It keeps no connection open: the
// server's mail is rare, and a fresh connection never finds a stale one.
type Sender struct {
	addr     string
	host     string
	tlsMode  string
	tlsConf  *tls.Config
	auth     func() sasl.Client
	from     *mail.Address
	hostname string
}

// New checks the config and returns a Sender.
func New(c Config) (*Sender, error) {
	from, err := mail.ParseAddress(c.From)
	if err != nil {
		return nil, fmt.Errorf("email_from %q is not an address: %w", c.From, err)
	}
	mode := c.TLS
	if mode == "" {
		mode = TLSStartTLS
	}
	port := c.Port
	if port == 0 {
		port = map[string]int{TLSStartTLS: 587, TLSImplicit: 465, TLSOff: 25}[mode]
	}
	if port == 0 {
		return nil, fmt.Errorf("smtp_tls %q is not one of starttls, tls, off", c.TLS)
	}
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	for _, f := range c.CACerts {
		pem, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading smtp_ca_certs: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("smtp_ca_certs: no certificate in %s", f)
		}
	}
	s := &Sender{
		addr: net.JoinHostPort(c.Host, strconv.Itoa(port)), host: c.Host, tlsMode: mode, from: from,
		tlsConf: &tls.Config{ServerName: c.Host, RootCAs: roots, MinVersion: tls.VersionTLS12},
	}
	if mode == TLSOff && c.Username != "" && !isLoopback(c.Host) {
		// The password would cross the network in the clear.
		return nil, errors.New("smtp_username is set with smtp_tls: off and a relay not on this machine; use starttls or tls")
	}
	if c.Username != "" {
		user, pass := c.Username, c.Password
		s.auth = func() sasl.Client { return sasl.NewPlainClient("", user, pass) }
	}
	s.hostname, _ = os.Hostname()
	if s.hostname == "" {
		s.hostname = "localhost"
	}
	return s, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Message is one plain-text mail to one recipient.
type Message struct {
	To      string
	Subject string
	Text    string
}

// Send delivers m to the relay. The error says whether the relay could not
// be reached or refused the mail, for the operator's log.
func (s *Sender) Send(ctx context.Context, m Message) error {
	to, err := mail.ParseAddress(m.To)
	if err != nil {
		return fmt.Errorf("recipient %q: %w", m.To, err)
	}
	body, err := s.compose(to, m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := s.dial(ctx)
	if err != nil {
		return fmt.Errorf("connecting to SMTP relay %s: %w", s.addr, err)
	}
	defer c.Close()
	if s.auth != nil {
		if err := c.Auth(s.auth()); err != nil {
			return fmt.Errorf("SMTP relay %s refused the login: %w", s.addr, err)
		}
	}
	if err := c.SendMail(s.from.Address, []string{to.Address}, strings.NewReader(body)); err != nil {
		return fmt.Errorf("SMTP relay %s refused the mail: %w", s.addr, err)
	}
	return c.Quit()
}

func (s *Sender) dial(ctx context.Context) (*smtp.Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		return nil, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	switch s.tlsMode {
	case TLSImplicit:
		return smtp.NewClient(tls.Client(conn, s.tlsConf)), nil
	case TLSStartTLS:
		c, err := smtp.NewClientStartTLS(conn, s.tlsConf)
		if err != nil {
			conn.Close()
			return nil, err
		}
		return c, nil
	default:
		c := smtp.NewClient(conn)
		if err := c.Hello(s.hostname); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
}

// compose renders the headers and body (RFC 5322) with CRLF line ends.
func (s *Sender) compose(to *mail.Address, m Message) (string, error) {
	if strings.ContainsAny(m.Subject, "\r\n") {
		return "", errors.New("subject contains a line break")
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	domain := s.from.Address[strings.LastIndexByte(s.from.Address, '@')+1:]
	var b strings.Builder
	header := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	header("From", s.from.String())
	header("To", to.String())
	header("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	header("Date", time.Now().UTC().Format(time.RFC1123Z))
	header("Message-ID", "<"+hex.EncodeToString(id)+"@"+domain+">")
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "8bit")
	header("Auto-Submitted", "auto-generated")
	b.WriteString("\r\n")
	text := strings.ReplaceAll(strings.ReplaceAll(m.Text, "\r\n", "\n"), "\n", "\r\n")
	b.WriteString(text)
	if !strings.HasSuffix(text, "\r\n") {
		b.WriteString("\r\n")
	}
	return b.String(), nil
}
