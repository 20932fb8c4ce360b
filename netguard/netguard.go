// Package netguard keeps outbound connections the server makes on behalf of
// others (URL previews, federation) away from the network behind it. A
// Guard is used as a net.Dialer's Control hook, so it sees the address
// actually dialled after name resolution, for every connection, redirect
// hop and retry: a DNS name that resolves to 127.0.0.1 is refused as
// surely as the literal.
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

// ErrBlocked is why a dial was refused.
var ErrBlocked = errors.New("address is not public")

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

// Guard refuses internal addresses (loopback, private, link-local, CGNAT,
// multicast, unspecified, reserved) except those in its allow list.
type Guard struct {
	allow []netip.Prefix
}

// New returns a guard letting through the given CIDRs (e.g. "127.0.0.0/8"
// for tests) besides public addresses.
func New(allowCIDRs []string) (*Guard, error) {
	g := &Guard{}
	for _, c := range allowCIDRs {
		pfx, err := netip.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 127.0.0.0/8: %w", c, err)
		}
		g.allow = append(g.allow, pfx.Masked())
	}
	return g, nil
}

// Control is a net.Dialer Control hook refusing blocked addresses.
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

// Dialer returns a dialer with the guard installed.
func (g *Guard) Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: g.Control}
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

// Transport returns an HTTP transport that dials only through the guard
// and uses no proxy from the environment (a proxy would dial for us,
// unchecked). maxIdle bounds the idle connections kept.
func (g *Guard) Transport(maxIdle int) *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           g.Dialer(10 * time.Second).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: 10 * time.Second,
		MaxIdleConns:          maxIdle,
		MaxIdleConnsPerHost:   maxIdle,
		IdleConnTimeout:       30 * time.Second,
	}
}
