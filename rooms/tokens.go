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
}

func (t TopoToken) String() string { return fmt.Sprintf("t%d_%d", t.Depth, t.Pos) }

// Before returns the boundary just before ev.
func Before(ev *Event) TopoToken { return TopoToken{ev.Depth, ev.StreamPos} }

// After returns the boundary just after ev.
func After(ev *Event) TopoToken { return TopoToken{ev.Depth, ev.StreamPos + 1} }

// ParseTopoToken parses "t<depth>_<pos>".
func ParseTopoToken(s string) (TopoToken, error) {
	rest, ok := strings.CutPrefix(s, "t")
	d, p, ok2 := strings.Cut(rest, "_")
	if !ok || !ok2 {
		return TopoToken{}, fmt.Errorf("not a pagination token")
	}
	depth, err1 := strconv.ParseInt(d, 10, 64)
	pos, err2 := strconv.ParseInt(p, 10, 64)
	// Positions are negative for events backfilled from other servers.
	if err1 != nil || err2 != nil || depth < 0 {
		return TopoToken{}, fmt.Errorf("not a pagination token")
	}
	return TopoToken{depth, pos}, nil
}
