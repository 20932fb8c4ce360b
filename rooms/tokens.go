package rooms

import (
	"fmt"
	"strconv"
	"strings"
)

// TopoToken is a pagination token for /messages and /context: a boundary
// in a room's topological order (depth, stream position). Backwards
// pagination returns events before it, forwards events at or after it.
type TopoToken struct {
	Depth int64
	Pos   int64
	// Stream, when not 0, makes the token a point in the stream instead
	// (Depth and Pos are then unused): backwards from it come the events
	// persisted before it, forwards those persisted at or after it, each
	// in topological order. Sync's prev_batch is such a token, as
	// Synapse's stream tokens are: /messages from it returns exactly the
	// events sync has not shown, even when an event from another server
	// arrived late with a lower depth than events shown before it.
	Stream int64
}

func (t TopoToken) String() string {
	if t.Stream != 0 {
		return fmt.Sprintf("t%d_%d_%d", t.Depth, t.Pos, t.Stream)
	}
	return fmt.Sprintf("t%d_%d", t.Depth, t.Pos)
}

// BeforeStream returns the point in the stream just before position pos.
func BeforeStream(pos int64) TopoToken { return TopoToken{Stream: pos} }

// Before returns the boundary just before ev.
func Before(ev *Event) TopoToken { return TopoToken{Depth: ev.Depth, Pos: ev.StreamPos} }

// After returns the boundary just after ev.
func After(ev *Event) TopoToken { return TopoToken{Depth: ev.Depth, Pos: ev.StreamPos + 1} }

// ParseTopoToken parses "t<depth>_<pos>" and "t<depth>_<pos>_<stream>".
func ParseTopoToken(s string) (TopoToken, error) {
	rest, ok := strings.CutPrefix(s, "t")
	parts := strings.Split(rest, "_")
	if !ok || len(parts) < 2 || len(parts) > 3 {
		return TopoToken{}, fmt.Errorf("not a pagination token")
	}
	depth, err1 := strconv.ParseInt(parts[0], 10, 64)
	pos, err2 := strconv.ParseInt(parts[1], 10, 64)
	// Positions are negative for events backfilled from other servers.
	if err1 != nil || err2 != nil || depth < 0 {
		return TopoToken{}, fmt.Errorf("not a pagination token")
	}
	t := TopoToken{Depth: depth, Pos: pos}
	if len(parts) == 3 {
		stream, err := strconv.ParseInt(parts[2], 10, 64)
		if err != nil || stream <= 0 {
			return TopoToken{}, fmt.Errorf("not a pagination token")
		}
		t.Stream = stream
	}
	return t, nil
}
