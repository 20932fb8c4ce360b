// Package geoiptest writes small MaxMind DB files (the MaxMind DB File
// Format 2.0, GeoIP2-City layout) for tests, which have no real
// database to read.
package geoiptest

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"sort"
)

// Place is what a test database says of a network.
type Place struct{ City, Country, CountryCode string }

// node is a search tree node: per bit, a child node (>0), a data offset
// (data >= 0) or nothing.
type node struct {
	child [2]int
	data  [2]int
}

// Write writes an IPv4 database mapping each IPv4 prefix to its place.
func Write(path string, places map[netip.Prefix]Place) error {
	nodes := []node{{data: [2]int{-1, -1}}}
	var data bytes.Buffer
	prefixes := make([]netip.Prefix, 0, len(places))
	for p := range places {
		if !p.Addr().Is4() || p.Bits() == 0 {
			return fmt.Errorf("geoiptest: %s is not an IPv4 prefix", p)
		}
		prefixes = append(prefixes, p)
	}
	sort.Slice(prefixes, func(i, j int) bool { return prefixes[i].String() < prefixes[j].String() })
	for _, p := range prefixes {
		pl := places[p]
		off := data.Len()
		writeMap(&data, []any{
			"city", []any{"names", []any{"en", pl.City}},
			"country", []any{"iso_code", pl.CountryCode, "names", []any{"en", pl.Country}},
		})
		a := p.Masked().Addr().As4()
		n := 0
		for i := 0; i < p.Bits(); i++ {
			bit := int(a[i/8]>>(7-i%8)) & 1
			if i == p.Bits()-1 {
				nodes[n].data[bit] = off
				break
			}
			if nodes[n].child[bit] == 0 {
				nodes = append(nodes, node{data: [2]int{-1, -1}})
				nodes[n].child[bit] = len(nodes) - 1
			}
			n = nodes[n].child[bit]
		}
	}
	count := len(nodes)
	var out bytes.Buffer
	for _, nd := range nodes {
		for bit := 0; bit < 2; bit++ {
			v := count // no data
			switch {
			case nd.child[bit] > 0:
				v = nd.child[bit]
			case nd.data[bit] >= 0:
				v = count + 16 + nd.data[bit]
			}
			out.Write([]byte{byte(v >> 16), byte(v >> 8), byte(v)}) // 24-bit records
		}
	}
	out.Write(make([]byte, 16)) // the data section separator
	out.Write(data.Bytes())
	out.WriteString("\xab\xcd\xefMaxMind.com")
	writeMap(&out, []any{
		"binary_format_major_version", uint16(2), "binary_format_minor_version", uint16(0),
		"build_epoch", uint64(1_700_000_000), "database_type", "GeoIP2-City",
		"description", []any{"en", "Hearth test database"}, "ip_version", uint16(4),
		"languages", []string{"en"}, "node_count", uint32(count), "record_size", uint16(24),
	})
	return os.WriteFile(path, out.Bytes(), 0o600)
}

// control writes a field's control byte(s) for a type (1-7 plain, 8+
// extended) and size (below 29 only: test data is small).
func control(b *bytes.Buffer, typ, size int) {
	if size >= 29 {
		panic("geoiptest: field too long")
	}
	if typ <= 7 {
		b.WriteByte(byte(typ<<5 | size))
		return
	}
	b.WriteByte(byte(size))
	b.WriteByte(byte(typ - 7))
}

// writeMap writes a map given as alternating keys and values; a value is
// a string, a nested map ([]any), a []string array or an unsigned integer.
func writeMap(b *bytes.Buffer, kv []any) {
	control(b, 7, len(kv)/2)
	for i := 0; i < len(kv); i += 2 {
		writeValue(b, kv[i])
		writeValue(b, kv[i+1])
	}
}

func writeValue(b *bytes.Buffer, v any) {
	uint := func(typ int, x uint64) {
		var buf [8]byte
		binary.BigEndian.PutUint64(buf[:], x)
		s := buf[:]
		for len(s) > 0 && s[0] == 0 {
			s = s[1:]
		}
		control(b, typ, len(s))
		b.Write(s)
	}
	switch v := v.(type) {
	case string:
		control(b, 2, len(v))
		b.WriteString(v)
	case []any:
		writeMap(b, v)
	case []string:
		control(b, 11, len(v))
		for _, s := range v {
			writeValue(b, s)
		}
	case uint16:
		uint(5, uint64(v))
	case uint32:
		uint(6, uint64(v))
	case uint64:
		uint(9, v)
	default:
		panic(fmt.Sprintf("geoiptest: cannot write %T", v))
	}
}
