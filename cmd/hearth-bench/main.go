// Command hearth-bench is a load benchmark for Matrix homeservers. It talks
// to them through the client-server API only, so it drives Hearth or any
// other server, several side by side in one run, and prints a table (with
// ratios against the first server) and JSON.
//
//	go run ./cmd/hearth-bench --start-hearth            # build, start and measure a fresh Hearth
//	go run ./cmd/hearth-bench --smoke --start-hearth    # seconds; what CI runs
//	hearth-bench --url http://127.0.0.1:8008 --pid 1234 --data-dir ./hearth-data
//	hearth-bench --start-hearth --hearth-src .,/tmp/hearth-old   # two commits side by side
//	hearth-bench --start-hearth --processes 1,3 --postgres postgres://... --workloads send,fanout,multidevice
//	                                                    # 1 against 3 processes behind nginx (3k: one killed)
//
// Every loop is bounded in count and time and every response is checked: a
// figure from a run with errors or missed deliveries carries their count,
// and the exit status is 1. Timings never change the exit status.
//
// See docs/performance.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "hearth-bench:", err)
		}
		os.Exit(2)
	}
	os.Exit(code)
}

// allWorkloads in the order they run.
var allWorkloads = []string{"send", "fanout", "multidevice", "initialsync", "register", "joins", "partialjoin"}

func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// run returns the exit code: 0, or 1 when a workload had errors or misses.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	fs := flag.NewFlagSet("hearth-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	urls := fs.String("url", "", "comma-separated base URLs of running homeservers (loopback)")
	labels := fs.String("label", "", "comma-separated names for the targets in the table (default: derived)")
	pids := fs.String("pid", "", "comma-separated server PIDs, one per --url, for RSS (0: unknown)")
	dataDirs := fs.String("data-dir", "", "comma-separated server data directories, one per --url, for sizes on disk")
	startH := fs.Bool("start-hearth", false, "build and start a fresh Hearth per --hearth-src in a temporary directory, and stop it after")
	srcs := fs.String("hearth-src", ".", "comma-separated Hearth source trees for --start-hearth (compare commits with git worktree)")
	secret := fs.String("shared-secret", "", "register users with the Synapse-style shared-secret admin API instead of m.login.dummy")
	hashCost := fs.String("hash-cost", "", "password hash cost to report (servers do not tell); with --start-hearth also its bcrypt_cost (default 12)")
	smoke := fs.Bool("smoke", false, "tiny counts, a few seconds in all (CI)")
	workloads := fs.String("workloads", strings.Join(allWorkloads, ","), "comma-separated workloads to run")
	limit := fs.Bool("limit", true, "also run the send workload against the in-process ceiling server")
	jsonOut := fs.String("json", "", "write the JSON report to this file (default: after the table on stdout)")
	allowRemote := fs.Bool("allow-non-loopback", false, "allow --url hosts that are not loopback addresses")
	processes := fs.String("processes", "", "with --start-hearth: comma-separated process counts (e.g. 1,3,3k); each a group of Hearth processes on one PostgreSQL (--postgres) behind nginx, round robin; with a k, one of them is killed as with --kill-one")
	pgURL := fs.String("postgres", "", "with --processes: a PostgreSQL database URL; each group runs in a fresh schema of it, dropped after")
	killOne := fs.Bool("kill-one", false, "with --processes: kill one process of each group of several (SIGKILL) halfway through send, fanout and multidevice; clients retry through the balancer, and it is started again after the workload")
	p := defaultParams()
	sizes := map[string]*int{}
	intFlag := func(name string, usage string) { sizes[name] = fs.Int(name, 0, usage) }
	intFlag("send-users", "send: users (default 20)")
	intFlag("send-messages", "send: messages per user (default 200)")
	intFlag("fanout-receivers", "fanout: receivers (default 50)")
	intFlag("fanout-messages", "fanout: messages (default 200)")
	intFlag("devices", "multidevice: devices (default 10)")
	intFlag("device-messages", "multidevice: messages (default 200)")
	intFlag("sync-rooms", "initialsync: rooms (default 100)")
	intFlag("sync-messages", "initialsync: messages per room (default 20)")
	intFlag("registrations", "register: registrations and logins (default 100)")
	intFlag("join-members", "joins: members of the big room (default 1000)")
	intFlag("join-events", "joins: events in the big room (default 5000)")
	intFlag("partialjoin-members", "partialjoin: members of the room joined over federation (default 10000)")
	intFlag("partialjoin-state", "partialjoin: state events of that room, members included (default 50000)")
	pjURLs := fs.String("partialjoin-url", "", "partialjoin against running servers: RESIDENT,JOINER base URLs of two homeservers that federate (otherwise --start-hearth starts a pair per source tree)")
	pjRoom := fs.String("partialjoin-room", "", "with --partialjoin-url: join this room of the resident, built by an earlier run, instead of building one (its size is what it is; the setup takes 10 to 15 minutes at full size)")
	rate := fs.Float64("rate", 0, "fanout and multidevice: messages per second (default 20)")
	timeout := fs.Duration("timeout", 0, "time limit per workload and server, setup included (default 10m; smoke 60s)")
	if err := fs.Parse(args); err != nil {
		return 0, err
	}
	if fs.NArg() > 0 {
		return 0, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *smoke {
		p = smokeParams()
	}
	for name, dst := range map[string]*int{"send-users": &p.SendUsers, "send-messages": &p.SendMessages,
		"fanout-receivers": &p.FanoutReceivers, "fanout-messages": &p.FanoutMessages, "devices": &p.Devices,
		"device-messages": &p.DeviceMessages, "sync-rooms": &p.SyncRooms, "sync-messages": &p.SyncMessages,
		"registrations": &p.Registrations, "join-members": &p.JoinMembers, "join-events": &p.JoinEvents,
		"partialjoin-members": &p.PartialMembers, "partialjoin-state": &p.PartialState} {
		if v := *sizes[name]; v > 0 {
			*dst = v
		} else if v < 0 {
			return 0, fmt.Errorf("--%s must be positive", name)
		}
	}
	if *rate > 0 {
		p.FanoutRate, p.DeviceRate = *rate, *rate
	}
	if *timeout > 0 {
		p.Timeout, p.PartialTimeout = *timeout, *timeout
	}
	if p.SendUsers < 1 || p.FanoutReceivers < 1 || p.Devices < 1 || p.SyncRooms < 1 || p.JoinMembers < 2 || p.Registrations < 1 || p.PartialMembers < 2 {
		return 0, errors.New("every count must be at least 1 (join-members and partialjoin-members at least 2)")
	}
	chosen := map[string]bool{}
	for _, w := range splitList(*workloads) {
		if !strings.Contains(","+strings.Join(allWorkloads, ",")+",", ","+w+",") {
			return 0, fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(allWorkloads, ","))
		}
		chosen[w] = true
	}

	urlList, labelList, pidList, dirList := splitList(*urls), splitList(*labels), splitList(*pids), splitList(*dataDirs)
	if !*startH && len(urlList) == 0 {
		return 0, errors.New("give --url of a running homeserver, or --start-hearth")
	}
	if len(pidList) > len(urlList) || len(dirList) > len(urlList) {
		return 0, errors.New("--pid and --data-dir take one entry per --url")
	}
	cost := *hashCost
	bcryptCost := 12
	if *startH && cost != "" {
		n, err := strconv.Atoi(cost)
		if err != nil || n < 4 || n > 31 {
			return 0, fmt.Errorf("--hash-cost %q: with --start-hearth it is Hearth's bcrypt cost, 4 to 31", cost)
		}
		bcryptCost = n
	}
	if cost == "" {
		if *startH && len(urlList) == 0 {
			cost = fmt.Sprintf("bcrypt %d", bcryptCost)
		} else {
			cost = "unknown (give --hash-cost)"
		}
	} else if _, err := strconv.Atoi(cost); err == nil {
		cost = "bcrypt " + cost
	}

	httpClient := &http.Client{Transport: &http.Transport{
		Proxy:               nil,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     90 * time.Second,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second}).DialContext,
	}}
	var targets []*target
	var groups []*group
	if *processes != "" {
		sizes, err := groupSizes(*processes)
		if err != nil {
			return 0, err
		}
		if !*startH || *pgURL == "" || len(splitList(*srcs)) != 1 || len(urlList) > 0 {
			return 0, errors.New("--processes needs --start-hearth, one --hearth-src, --postgres and no --url")
		}
		work, err := os.MkdirTemp("", "hearth-bench-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(work)
		abs, err := filepath.Abs(splitList(*srcs)[0])
		if err != nil {
			return 0, err
		}
		fmt.Fprintf(stderr, "building Hearth from %s\n", abs)
		bin := filepath.Join(work, "hearth")
		if err := buildHearth(ctx, abs, bin, stderr); err != nil {
			return 0, err
		}
		for i, spec := range sizes {
			fmt.Fprintf(stderr, "starting %d Hearth processes on %s behind nginx\n", spec.n, redactedURL(*pgURL))
			g, err := startGroup(ctx, bin, *pgURL, work, i, spec.n, bcryptCost, stderr)
			if err != nil {
				return 0, err
			}
			defer g.stop()
			groups = append(groups, g)
			kill := spec.kill || (*killOne && spec.n > 1)
			label := fmt.Sprintf("%d processes", spec.n)
			switch {
			case spec.n == 1:
				label = "1 process"
			case kill:
				label += ", one killed"
			}
			targets = append(targets, &target{label: label, group: g, kill: kill,
				c: &client{base: g.url, http: httpClient, sharedSecret: *secret, retry: &atomic.Int64{}}})
		}
		*startH = false
	}
	if *startH {
		work, err := os.MkdirTemp("", "hearth-bench-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(work)
		srcList := splitList(*srcs)
		for i, src := range srcList {
			abs, err := filepath.Abs(src)
			if err != nil {
				return 0, err
			}
			fmt.Fprintf(stderr, "building and starting Hearth from %s\n", abs)
			h, err := startHearth(ctx, abs, work, i, bcryptCost, stderr)
			if err != nil {
				return 0, err
			}
			defer h.stop()
			label := "hearth"
			if len(srcList) > 1 {
				label = fmt.Sprintf("hearth%d[%s]", i+1, filepath.Base(abs))
			}
			bin, pairDir := h.cmd.Path, filepath.Join(work, fmt.Sprintf("pair-%d", i))
			targets = append(targets, &target{label: label, c: &client{base: h.url, http: httpClient, sharedSecret: *secret},
				pid: h.cmd.Process.Pid, dataDir: h.dataDir,
				pair: func(ctx context.Context) (*fedPair, error) {
					fmt.Fprintf(stderr, "partialjoin: starting two federating Hearths of %s\n", abs)
					return startPair(ctx, bin, pairDir, bcryptCost)
				}})
		}
	}
	for i, u := range urlList {
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return 0, fmt.Errorf("--url %q is not an http(s) base URL", u)
		}
		if !*allowRemote && !isLoopback(pu.Hostname()) {
			return 0, fmt.Errorf("--url %q is not a loopback address (use --allow-non-loopback to drive another machine)", u)
		}
		t := &target{label: pu.Host, c: &client{base: strings.TrimRight(u, "/"), http: httpClient, sharedSecret: *secret}}
		if i < len(pidList) {
			if t.pid, err = strconv.Atoi(pidList[i]); err != nil {
				return 0, fmt.Errorf("--pid %q: %w", pidList[i], err)
			}
		}
		if i < len(dirList) {
			t.dataDir = dirList[i]
		}
		targets = append(targets, t)
	}
	if *pjRoom != "" && *pjURLs == "" {
		return 0, errors.New("--partialjoin-room needs --partialjoin-url (the resident that holds the room)")
	}
	if *pjURLs != "" {
		us := splitList(*pjURLs)
		if len(us) != 2 || len(targets) != 1 {
			return 0, errors.New("--partialjoin-url takes RESIDENT,JOINER, with one --url")
		}
		for _, u := range us {
			if pu, err := url.Parse(u); err != nil || !isLoopback(pu.Hostname()) && !*allowRemote {
				return 0, fmt.Errorf("--partialjoin-url %q is not a loopback base URL", u)
			}
		}
		p.PartialRoom = *pjRoom
		targets[0].pair = func(context.Context) (*fedPair, error) {
			return &fedPair{resident: &client{base: strings.TrimRight(us[0], "/"), sharedSecret: *secret},
				joiner: &client{base: strings.TrimRight(us[1], "/"), sharedSecret: *secret}, stop: func() {}}, nil
		}
	}
	for i, l := range labelList {
		if i < len(targets) {
			targets[i].label = l
		}
	}

	rep := &report{Machine: thisMachine(), Started: time.Now().UTC(), Smoke: *smoke, HashCost: cost}
	for _, t := range targets {
		rep.Targets = append(rep.Targets, t.label)
	}
	b := &bench{p: p, runID: randomHex(3), hashCost: cost, log: stderr}
	b.logf("%d CPUs, %s; targets: %s", rep.Machine.CPUs, rep.Machine.CPUModel, strings.Join(rep.Targets, ", "))
	// Let freshly started servers settle before taking their idle RSS.
	time.Sleep(time.Second)
	for _, t := range targets {
		if t.pid > 0 {
			t.rss = startRSS(t.pid)
		}
	}

	runners := map[string]func(context.Context, *target) *result{
		"send": b.runSend, "fanout": b.runFanout, "multidevice": b.runDevices,
		"initialsync": b.runInitialSync, "register": b.runRegisterLogin, "joins": b.runJoins,
		"partialjoin": b.runPartialJoin,
	}
	for _, w := range allWorkloads {
		if !chosen[w] || ctx.Err() != nil {
			continue
		}
		var sendResults []*result
		for _, t := range targets {
			b.logf("%s: %s", w, t.label)
			if t.rss != nil {
				t.rss.takeWindow()
			}
			var before int64
			if t.c.retry != nil {
				before = t.c.retry.Load()
			}
			r := runners[w](ctx, t)
			if t.rss != nil && w != "partialjoin" { // that one reports its own two servers'
				r.add("server RSS peak", t.rss.takeWindow(), "MB")
			}
			if t.c.retry != nil {
				r.add("requests retried", float64(t.c.retry.Load()-before), "count")
			}
			if t.group != nil {
				if err := t.group.restartKilled(ctx); err != nil {
					r.Errors++
					r.ErrorSamples = append(r.ErrorSamples, "starting the killed process again: "+err.Error())
				}
			}
			b.logf("%s: %s done in %.1fs, %d errors, %d misses, %d duplicates, %d lost", w, t.label, r.Seconds, r.Errors, r.Misses, r.Duplicates, r.Lost)
			rep.Results = append(rep.Results, r)
			sendResults = append(sendResults, r)
		}
		if w == "send" && *limit {
			b.logf("send: %s (in-process ceiling: same rows, same engine and durability)", limitTarget)
			lr := b.runLimit(ctx, httpClient)
			rep.Results = append(rep.Results, lr)
			if len(lr.Metrics) > 0 && lr.Errors == 0 && lr.Metrics[0].Value > 0 {
				for _, r := range sendResults {
					if len(r.Metrics) > 0 {
						r.addRate("fraction of limit", r.Metrics[0].Value/lr.Metrics[0].Value, "ratio")
					}
				}
			}
		}
	}
	for _, t := range targets {
		rep.Results = append(rep.Results, resources(t))
	}

	rep.writeTable(stdout)
	if *jsonOut != "" {
		f, err := os.Create(*jsonOut)
		if err != nil {
			return 0, err
		}
		if err := rep.writeJSON(f); err != nil {
			f.Close()
			return 0, err
		}
		if err := f.Close(); err != nil {
			return 0, err
		}
	} else {
		fmt.Fprintln(stdout)
		if err := rep.writeJSON(stdout); err != nil {
			return 0, err
		}
	}
	if ctx.Err() != nil {
		return 1, errors.New("interrupted")
	}
	if rep.failed() {
		if len(groups) > 0 {
			if dir, err := os.MkdirTemp("", "hearth-bench-logs-"); err == nil {
				for _, g := range groups {
					g.saveLogs(dir)
				}
				fmt.Fprintln(stderr, "hearth-bench: the logs of the processes and of nginx are in", dir)
			}
		}
		fmt.Fprintln(stderr, "hearth-bench: there were errors or missed deliveries (see the table); timings never fail a run, these do")
		return 1, nil
	}
	return 0, nil
}

// runLimit runs the send workload against a fresh ceiling server.
func (b *bench) runLimit(ctx context.Context, hc *http.Client) *result {
	dir, err := os.MkdirTemp("", "hearth-bench-limit-")
	if err != nil {
		return setupFailed(&result{Workload: "send", Target: limitTarget}, err)
	}
	u, stop, err := startCeiling(ctx, dir)
	if err != nil {
		os.RemoveAll(dir)
		return setupFailed(&result{Workload: "send", Target: limitTarget}, err)
	}
	defer stop()
	return b.runSend(ctx, &target{label: limitTarget, c: &client{base: u, http: hc}})
}

// resources reports a target's memory and disk use after the workloads.
func resources(t *target) *result {
	r := &result{Workload: "resources", Target: t.label, Params: "RSS from /proc/<pid>/status (idle before the workloads, peak = VmHWM); sizes under the data directory after the run"}
	if t.rss != nil {
		idle, peak, err := t.rss.finish()
		if err != nil {
			r.Errors++
			r.ErrorSamples = append(r.ErrorSamples, err.Error())
		} else {
			r.add("RSS idle", idle, "MB")
			r.add("RSS peak", peak, "MB")
		}
	} else {
		r.Note = "no --pid: RSS not measured"
	}
	if t.dataDir != "" {
		db, media, total, err := diskUsage(t.dataDir)
		if err != nil {
			r.Errors++
			r.ErrorSamples = append(r.ErrorSamples, err.Error())
		} else {
			r.add("database on disk", db, "MB")
			r.add("media on disk", media, "MB")
			r.add("data dir total", total, "MB")
		}
	} else {
		r.Note = strings.TrimPrefix(r.Note+"; no --data-dir: sizes on disk not measured", "; ")
	}
	return r
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
