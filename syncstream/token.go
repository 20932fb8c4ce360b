// Package syncstream holds sync's positions and its notifier: the token that
// says how far a device has read each stream, and the in-process wake-ups
// that end long-polling /sync requests exactly when something concerns them.
package syncstream

import (
	"fmt"
	"strconv"
	"strings"
)

// Position is one position per stream. A device's sync token encodes it;
// each device syncs from its own token, so devices never disturb each other.
type Position struct {
	Events      int64 // room events (events.stream_pos)
	AccountData int64
	Receipts    int64
	ToDevice    int64
	DeviceLists int64
	Typing      int64 // in-memory, a clock (see clock) that survives restarts
	Presence    int64 // likewise
	ThreadSubs  int64 // thread subscriptions (MSC4306), for sliding sync
}

func (p *Position) fields() []*int64 {
	return []*int64{&p.Events, &p.AccountData, &p.Receipts, &p.ToDevice, &p.DeviceLists, &p.Typing, &p.Presence, &p.ThreadSubs}
}

// String encodes the position as an opaque token: "s" then the positions
// joined by "_".
func (p Position) String() string {
	var b strings.Builder
	b.WriteByte('s')
	for i, f := range p.fields() {
		if i > 0 {
			b.WriteByte('_')
		}
		b.WriteString(strconv.FormatInt(*f, 10))
	}
	return b.String()
}

// ParseToken decodes a sync token. Tokens with fewer fields (from an older
// server) leave the rest at zero.
func ParseToken(s string) (Position, error) {
	var p Position
	rest, ok := strings.CutPrefix(s, "s")
	if !ok {
		return p, fmt.Errorf("not a sync token")
	}
	parts := strings.Split(rest, "_")
	if len(parts) == dendriteFields {
		return parseDendriteToken(parts)
	}
	fs := p.fields()
	if len(parts) > len(fs) {
		return p, fmt.Errorf("not a sync token")
	}
	for i, part := range parts {
		n, err := strconv.ParseInt(part, 10, 64)
		if err != nil || n < 0 {
			return p, fmt.Errorf("not a sync token")
		}
		*fs[i] = n
	}
	return p, nil
}

// After reports whether p is ahead of q on any stream.
func (p Position) After(q Position) bool {
	pf, qf := p.fields(), q.fields()
	for i := range pf {
		if *pf[i] > *qf[i] {
			return true
		}
	}
	return false
}

// NotBehind is p moved up to q on every stream. With several processes on
// one PostgreSQL, a token made by a process ahead of this one names
// positions this process has not heard of yet; a response from it must not
// go back to this process's own positions, or the client would get the
// same events again. What lies between was delivered from there: the
// streams kept in the database are read from it up to these positions,
// and typing and presence positions compare across processes (clock).
func (p Position) NotBehind(q Position) Position { return p.Max(q) }

// Max returns the stream-wise maximum.
func (p Position) Max(q Position) Position {
	out := p
	of, qf := out.fields(), q.fields()
	for i := range of {
		if *qf[i] > *of[i] {
			*of[i] = *qf[i]
		}
	}
	return out
}

// dendriteFields is the number of positions in a Dendrite sync token:
// s{pdu}_{typing}_{receipt}_{send-to-device}_{invite}_{account data}_{device
// list}_{notification data}_{presence}. A server imported from Dendrite
// (hearth import dendrite) keeps Dendrite's positions of the events,
// receipts, account data and to-device streams and of the device-list
// stream, so a client's saved token carries over: its next /sync
// continues where it left off. Typing and presence restart, as they do at
// any restart.
// Hearth's own tokens must stay shorter (eight fields now, with thread
// subscriptions): a ninth stream needs another prefix than "s".
const dendriteFields = 9

func parseDendriteToken(parts []string) (Position, error) {
	var n [dendriteFields]int64
	for i, part := range parts {
		v, err := strconv.ParseInt(part, 10, 64)
		if err != nil || v < 0 {
			return Position{}, fmt.Errorf("not a sync token")
		}
		n[i] = v
	}
	return Position{Events: n[0], Receipts: n[2], ToDevice: n[3], AccountData: n[5], DeviceLists: n[6]}, nil
}
