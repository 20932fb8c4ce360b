// Package netguard keeps the server's outbound HTTP requests that users
// steer (URL previews, push gateways) away from the network behind the
// server: every connection, including each redirect hop and whatever a name
// resolves to at that moment, goes through a dialer whose Control hook
// refuses internal addresses (loopback, private, link-local, CGNAT,
// multicast, unspecified, reserved) unless an allow-list lets them through.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// blockedPrefixes are the ranges refused besides what netip classifies as
// loopback, private, link-local, multicast and unspecified.
var blockedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"), // CGNAT
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),  // reserved and broadcast
	netip.MustParsePrefix("64:ff9b::/96"), // NAT64 may reach IPv4-internal hosts
	netip.MustParsePrefix("64:ff9b:1::/48"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("2002::/16"), // 6to4 embeds IPv4 addresses
}

// ErrBlocked is why a dial was refused.
var ErrBlocked = errors.New("address is not public")

// Guard decides which addresses outbound connections may reach.
type Guard struct {
	allow []netip.Prefix
}

// New returns a guard that also lets through the given CIDRs; option names
// the config option they came from, for the error message.
func New(option string, allowCIDRs []string) (*Guard, error) {
	g := &Guard{}
	for _, c := range allowCIDRs {
		pfx, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", option, err)
		}
		g.allow = append(g.allow, pfx.Masked())
	}
	return g, nil
}

// Permitted reports whether ip may be dialled.
func (g *Guard) Permitted(ip netip.Addr) bool {
	ip = ip.Unmap()
	for _, a := range g.allow {
		if a.Contains(ip) {
			return true
		}
	}
	if ip.IsLoopback() || ip.IsPrivate() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() ||
		ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() || !ip.IsValid() {
		return false
	}
	for _, b := range blockedPrefixes {
		if b.Contains(ip) {
			return false
		}
	}
	return true
}

// Control is a net.Dialer Control hook: it runs for every connection
// attempt with the address actually dialled, after name resolution.
func (g *Guard) Control(network, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %s", ErrBlocked, address)
	}
	if !g.Permitted(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrBlocked, ap.Addr())
	}
	return nil
}

// Transport returns an HTTP transport that dials only through the guard
// and uses no proxy from the environment (a proxy would dial for us,
// unchecked). maxIdle bounds the idle connections kept.
func (g *Guard) Transport(maxIdle int) *http.Transport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, Control: g.Control}
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		MaxIdleConns:          maxIdle,
		MaxIdleConnsPerHost:   maxIdle,
		IdleConnTimeout:       30 * time.Second,
	}
}
