package console

import (
	"fmt"
	"strings"
	"time"
)

// A plot is one dashboard chart: an inline SVG polyline drawn here, so
// the page needs no script and no outside service.
type plot struct {
	Title  string
	Points []point
	// Line is the polyline's points attribute in a 300×100 box; Last and
	// Max label it; From and To are the first and last days.
	Line      string
	Last, Max int64
	From, To  string
}

type point struct {
	Day   int64
	Value int64
}

const plotW, plotH = 300.0, 100.0

func (p plot) layout() plot {
	if len(p.Points) == 0 {
		return p
	}
	for _, pt := range p.Points {
		p.Max = max(p.Max, pt.Value)
	}
	first, last := p.Points[0].Day, p.Points[len(p.Points)-1].Day
	span := float64(max(last-first, 1))
	var b strings.Builder
	for i, pt := range p.Points {
		x := plotW * float64(pt.Day-first) / span
		if len(p.Points) == 1 {
			x = plotW / 2
		}
		y := plotH - 4
		if p.Max > 0 {
			y = plotH - 4 - (plotH-8)*float64(pt.Value)/float64(p.Max)
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%.1f,%.1f", x, y)
	}
	p.Line = b.String()
	p.Last = p.Points[len(p.Points)-1].Value
	day := func(d int64) string { return time.UnixMilli(d * 86400000).UTC().Format("2006-01-02") }
	p.From, p.To = day(first), day(last)
	return p
}
