// Package geoip places IP addresses in a city and country with a MaxMind
// DB file (GeoLite2-City or -Country, DB-IP Lite and others in the same
// layout), for sign-in alerts. It reads only the local file: no address
// leaves the server.
package geoip

import (
	"fmt"
	"net"
	"net/netip"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"
)

// DB is an open GeoIP database.
type DB struct {
	r    *maxminddb.Reader
	lang string
}

// Open opens a MaxMind DB file; names are given in English where the file
// has them.
func Open(path string) (*DB, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		return nil, fmt.Errorf("GeoIP database %s: %w", path, err)
	}
	return &DB{r: r, lang: "en"}, nil
}

// record is the part of the GeoIP2 City and Country layout used here.
type record struct {
	City struct {
		Names map[string]string `maxminddb:"names"`
	} `maxminddb:"city"`
	Country struct {
		ISOCode string            `maxminddb:"iso_code"`
		Names   map[string]string `maxminddb:"names"`
	} `maxminddb:"country"`
}

// Locate names the place of ip: "City, Country", "Country", or "" when the
// database does not know it (private addresses, an IPv6 address in an
// IPv4 database).
func (d *DB) Locate(ip net.IP) string {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return ""
	}
	var rec record
	if err := d.r.Lookup(addr.Unmap()).Decode(&rec); err != nil {
		return ""
	}
	country := rec.Country.Names[d.lang]
	if country == "" {
		country = rec.Country.ISOCode
	}
	var parts []string
	for _, p := range []string{rec.City.Names[d.lang], country} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	return strings.Join(parts, ", ")
}

// Close releases the file.
func (d *DB) Close() error { return d.r.Close() }
