package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

// summary is the distribution of a set of durations, in milliseconds.
type summary struct {
	N                  int
	P50, P95, P99, Max float64
}

func (l *latencies) summary() summary {
	l.mu.Lock()
	d := append([]time.Duration(nil), l.d...)
	l.mu.Unlock()
	return summarize(d)
}

func summarize(d []time.Duration) summary {
	if len(d) == 0 {
		return summary{}
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return summary{N: len(d), P50: pct(d, 50), P95: pct(d, 95), P99: pct(d, 99), Max: ms(d[len(d)-1])}
}

// pct is the nearest-rank percentile of sorted durations, in ms.
func pct(sorted []time.Duration, p float64) float64 {
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	i = max(0, min(i, len(sorted)-1))
	return ms(sorted[i])
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// median of a few timed runs, in ms.
func median(d []time.Duration) float64 {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	return ms(d[len(d)/2])
}

// metric is one figure of a workload.
type metric struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// HigherIsBetter tells readers of ratios which way is good.
	HigherIsBetter bool `json:"higher_is_better,omitempty"`
}

// result is one workload run against one target.
type result struct {
	Workload string   `json:"workload"`
	Target   string   `json:"target"`
	Params   string   `json:"params"`
	Metrics  []metric `json:"metrics"`
	// Errors counts failed or unexpected responses; Misses counts messages
	// that never reached a receiver, Duplicates messages a receiver got
	// again, Lost acknowledged messages the room does not hold. Figures
	// from a run with any are printed with the counts next to them.
	Errors       int      `json:"errors"`
	Misses       int      `json:"misses"`
	Duplicates   int      `json:"duplicates"`
	Lost         int      `json:"lost"`
	ErrorSamples []string `json:"error_samples,omitempty"`
	Note         string   `json:"note,omitempty"`
	Seconds      float64  `json:"seconds"`
}

func (r *result) add(name string, v float64, unit string) {
	r.Metrics = append(r.Metrics, metric{Name: name, Value: v, Unit: unit})
}

func (r *result) addRate(name string, v float64, unit string) {
	r.Metrics = append(r.Metrics, metric{Name: name, Value: v, Unit: unit, HigherIsBetter: true})
}

func (r *result) addLatency(prefix string, s summary) {
	r.add(prefix+"p50", s.P50, "ms")
	r.add(prefix+"p95", s.P95, "ms")
	r.add(prefix+"p99", s.P99, "ms")
}

// errorCounter counts errors of one workload and keeps the first few.
type errorCounter struct {
	mu      sync.Mutex
	n       int
	samples []string
}

func (e *errorCounter) add(err error) {
	if err == nil {
		return
	}
	e.mu.Lock()
	e.n++
	if len(e.samples) < 5 {
		e.samples = append(e.samples, err.Error())
	}
	e.mu.Unlock()
}

// addN counts n errors described by one err (n requests that never ran).
func (e *errorCounter) addN(n int, err error) {
	e.add(err)
	e.mu.Lock()
	e.n += n - 1
	e.mu.Unlock()
}

func (e *errorCounter) first() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.samples) == 0 {
		return "(none)"
	}
	return e.samples[0]
}

func (e *errorCounter) fill(r *result) {
	e.mu.Lock()
	r.Errors += e.n
	r.ErrorSamples = append(r.ErrorSamples, e.samples...)
	e.mu.Unlock()
}

// report is the whole run, as written in JSON.
type report struct {
	Machine  machine   `json:"machine"`
	Started  time.Time `json:"started"`
	Smoke    bool      `json:"smoke"`
	Targets  []string  `json:"targets"`
	Results  []*result `json:"results"`
	HashCost string    `json:"hash_cost"`
}

// failed reports whether any workload had errors or misses.
func (rep *report) failed() bool {
	for _, r := range rep.Results {
		if r.Errors > 0 || r.Misses > 0 || r.Duplicates > 0 || r.Lost > 0 {
			return true
		}
	}
	return false
}

func (rep *report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// writeTable prints one row per workload figure and one column per target;
// with several targets, ratios against the first target follow, because
// absolute times on a shared machine vary more than ratios from one run.
func (rep *report) writeTable(w io.Writer) {
	cols := append([]string(nil), rep.Targets...)
	hasLimit := false
	for _, r := range rep.Results {
		if r.Target == limitTarget {
			hasLimit = true
		}
	}
	if hasLimit {
		cols = append(cols, limitTarget)
	}
	type rowKey struct{ workload, name string }
	var rows []rowKey
	seen := map[rowKey]bool{}
	cell := map[rowKey]map[string]string{}
	value := map[rowKey]map[string]float64{}
	units := map[rowKey]string{}
	params := map[string]string{}
	for _, r := range rep.Results {
		params[r.Workload] = r.Params
		suffix := ""
		if r.Errors > 0 || r.Misses > 0 || r.Duplicates > 0 || r.Lost > 0 {
			suffix = fmt.Sprintf(" (%d errors, %d misses, %d duplicates, %d lost)", r.Errors, r.Misses, r.Duplicates, r.Lost)
		}
		for _, m := range r.Metrics {
			k := rowKey{r.Workload, m.Name}
			if !seen[k] {
				seen[k] = true
				rows = append(rows, k)
				cell[k] = map[string]string{}
				value[k] = map[string]float64{}
				units[k] = m.Unit
			}
			cell[k][r.Target] = formatValue(m.Value) + suffix
			value[k][r.Target] = m.Value
		}
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	header := []string{"workload", "figure", "unit"}
	header = append(header, cols...)
	for _, t := range rep.Targets[min(1, len(rep.Targets)):] {
		header = append(header, t+" / "+rep.Targets[0])
	}
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	last := ""
	for _, k := range rows {
		name := ""
		if k.workload != last {
			name, last = k.workload, k.workload
		}
		line := []string{name, k.name, units[k]}
		for _, c := range cols {
			v, ok := cell[k][c]
			if !ok {
				v = "-"
			}
			line = append(line, v)
		}
		for _, t := range rep.Targets[min(1, len(rep.Targets)):] {
			a, b := value[k][t], value[k][rep.Targets[0]]
			if b == 0 {
				line = append(line, "-")
			} else {
				line = append(line, fmt.Sprintf("%.2f", a/b))
			}
		}
		fmt.Fprintln(tw, strings.Join(line, "\t"))
	}
	tw.Flush()
	fmt.Fprintln(w)
	for _, wl := range orderedWorkloads(rep.Results) {
		fmt.Fprintf(w, "%-15s %s\n", wl, params[wl])
	}
	for _, r := range rep.Results {
		if r.Note != "" {
			fmt.Fprintf(w, "note [%s @ %s]: %s\n", r.Workload, r.Target, r.Note)
		}
		for _, s := range r.ErrorSamples {
			fmt.Fprintf(w, "error [%s @ %s]: %s\n", r.Workload, r.Target, s)
		}
	}
}

func orderedWorkloads(rs []*result) []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range rs {
		if !seen[r.Workload] {
			seen[r.Workload] = true
			out = append(out, r.Workload)
		}
	}
	return out
}

func formatValue(v float64) string {
	switch {
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3f", v)
	}
}
