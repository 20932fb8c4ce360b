package geoip_test

import (
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/hearth-matrix/hearth/geoip"
	"github.com/hearth-matrix/hearth/geoip/geoiptest"
)

// TestLocate reads a database in the GeoIP2-City layout with the
// maintained reader: a city and country, a country alone, and nothing for
// addresses it does not hold.
func TestLocate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "city.mmdb")
	err := geoiptest.Write(path, map[netip.Prefix]geoiptest.Place{
		netip.MustParsePrefix("203.0.113.0/24"):  {City: "Seoul", Country: "South Korea", CountryCode: "KR"},
		netip.MustParsePrefix("198.51.100.0/25"): {Country: "Japan", CountryCode: "JP"},
		netip.MustParsePrefix("192.0.2.7/32"):    {CountryCode: "DE"},
	})
	if err != nil {
		t.Fatal(err)
	}
	db, err := geoip.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for ip, want := range map[string]string{
		"203.0.113.9": "Seoul, South Korea", "::ffff:203.0.113.200": "Seoul, South Korea",
		"198.51.100.1": "Japan", "198.51.100.200": "", "192.0.2.7": "DE", "192.0.2.8": "",
		"10.0.0.1": "", "2001:db8::1": "",
	} {
		if got := db.Locate(net.ParseIP(ip)); got != want {
			t.Errorf("Locate(%s) = %q, want %q", ip, got, want)
		}
	}
	if _, err := geoip.Open(filepath.Join(t.TempDir(), "missing.mmdb")); err == nil {
		t.Error("a missing file opened")
	}
}
