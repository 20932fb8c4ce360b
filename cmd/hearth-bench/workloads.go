package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// params are the sizes of the workloads; defaults come from issue 9, the
// smoke set from --smoke.
type params struct {
	SendUsers, SendMessages             int
	FanoutReceivers, FanoutMessages     int
	FanoutRate                          float64
	Devices, DeviceMessages             int
	DeviceRate                          float64
	SyncRooms, SyncMessages, SyncRuns   int
	Registrations                       int
	JoinMembers, JoinEvents, JoinTrials int
	PartialMembers, PartialState        int
	PartialTimeout                      time.Duration // partialjoin's own limit: its setup is long
	// PartialRoom is a room of the resident built by an earlier run
	// (--partialjoin-room): joined again without the setup.
	PartialRoom string
	Concurrency int           // parallel requests while setting up
	Timeout     time.Duration // per workload and target, setup included
	Grace       time.Duration // how long receivers may lag the last send
	LongPoll    time.Duration
}

func defaultParams() params {
	return params{
		SendUsers: 20, SendMessages: 200,
		FanoutReceivers: 50, FanoutMessages: 200, FanoutRate: 20,
		Devices: 10, DeviceMessages: 200, DeviceRate: 20,
		SyncRooms: 100, SyncMessages: 20, SyncRuns: 5,
		Registrations: 100,
		JoinMembers:   1000, JoinEvents: 5000, JoinTrials: 3,
		PartialMembers: 10000, PartialState: 50000, PartialTimeout: 30 * time.Minute,
		Concurrency: 16, Timeout: 10 * time.Minute, Grace: 10 * time.Second, LongPoll: 10 * time.Second,
	}
}

// smokeParams are tiny counts for CI: every workload runs, in seconds.
func smokeParams() params {
	return params{
		SendUsers: 3, SendMessages: 10,
		FanoutReceivers: 3, FanoutMessages: 10, FanoutRate: 50,
		Devices: 3, DeviceMessages: 10, DeviceRate: 50,
		SyncRooms: 3, SyncMessages: 3, SyncRuns: 3,
		Registrations: 3,
		JoinMembers:   10, JoinEvents: 40, JoinTrials: 1,
		PartialMembers: 20, PartialState: 60, PartialTimeout: 90 * time.Second,
		Concurrency: 8, Timeout: 60 * time.Second, Grace: 5 * time.Second, LongPoll: 5 * time.Second,
	}
}

// target is one homeserver under test.
type target struct {
	label   string
	c       *client
	pid     int    // for RSS; 0: unknown
	dataDir string // for sizes on disk; "": unknown
	rss     *rssSampler
	// group is set for several processes behind a balancer; with kill,
	// one of them is killed halfway through each delivery workload.
	group *group
	kill  bool
	// pair, when set, starts (or names) the two federating servers of
	// the partialjoin workload.
	pair func(ctx context.Context) (*fedPair, error)
}

// midway is called once halfway through a workload's messages: with kill
// set it kills a process of the group (kill -9), whose clients then retry
// through the balancer. It returns a note for the result.
func (t *target) midway() string {
	if t.group == nil || !t.kill {
		return ""
	}
	if i := t.group.killOne(); i >= 0 {
		return fmt.Sprintf("process %d of %d killed (SIGKILL) halfway; clients retried through the balancer", i+1, len(t.group.procs))
	}
	return ""
}

// checkAcked counts the acknowledged events (send answered 200 with an
// event ID) that the room's timeline does not hold.
func (b *bench) checkAcked(ctx context.Context, t *target, s session, roomID string, acked []string, r *result) {
	ids, err := t.c.roomEventIDs(ctx, s, roomID)
	if err != nil {
		r.Errors++
		r.ErrorSamples = append(r.ErrorSamples, "listing the room to check acknowledged events: "+err.Error())
		return
	}
	for _, id := range acked {
		if !ids[id] {
			r.Lost++
		}
	}
	r.add("lost acknowledged", float64(r.Lost), "count")
}

// bench runs the workloads; runID keeps user names of runs apart, so a
// server can be benchmarked again without a fresh database.
type bench struct {
	p        params
	runID    string
	hashCost string
	log      io.Writer
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s  "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// forEach runs fn for 0..n-1 with at most conc at once and returns the
// number that succeeded. It starts nothing once ctx is done; what was not
// started counts as errors.
func forEach(ctx context.Context, n, conc int, ec *errorCounter, fn func(ctx context.Context, i int) error) int {
	var ok atomic.Int64
	sem := make(chan struct{}, max(1, conc))
	var wg sync.WaitGroup
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			ec.addN(n-i, fmt.Errorf("%d of %d operations not started before the time limit", n-i, n))
			break
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := fn(ctx, i); err != nil {
				ec.add(err)
				return
			}
			ok.Add(1)
		}()
	}
	wg.Wait()
	return int(ok.Load())
}

// users registers n accounts (without passwords unless given: nothing to
// hash, so large setups stay quick).
func (b *bench) users(ctx context.Context, c *client, kind string, n int, password string) ([]session, error) {
	out := make([]session, n)
	var ec errorCounter
	ok := forEach(ctx, n, b.p.Concurrency, &ec, func(ctx context.Context, i int) error {
		s, err := c.register(ctx, fmt.Sprintf("bench%s_%s_%d", b.runID, kind, i), password)
		out[i] = s
		return err
	})
	if ok < n {
		return nil, fmt.Errorf("setup: %d of %d registrations failed; first: %s", n-ok, n, ec.first())
	}
	return out, nil
}

// joinAll joins sessions to a room, in parallel.
func (b *bench) joinAll(ctx context.Context, c *client, roomID string, ss []session) error {
	var ec errorCounter
	if ok := forEach(ctx, len(ss), b.p.Concurrency, &ec, func(ctx context.Context, i int) error {
		return c.join(ctx, ss[i], roomID)
	}); ok < len(ss) {
		return fmt.Errorf("setup: %d of %d joins failed; first: %s", len(ss)-ok, len(ss), ec.first())
	}
	return nil
}

// setupFailed records a workload whose setup failed: no figures, one error.
func setupFailed(r *result, err error) *result {
	r.Errors++
	r.ErrorSamples = append(r.ErrorSamples, err.Error())
	return r
}

// runSend: U users in one room each send M messages, all concurrently.
func (b *bench) runSend(ctx context.Context, t *target) *result {
	r := &result{Workload: "send", Target: t.label,
		Params: fmt.Sprintf("%d users in one room each send %d messages concurrently (one in flight per user)", b.p.SendUsers, b.p.SendMessages)}
	ctx, cancel := context.WithTimeout(ctx, b.p.Timeout)
	defer cancel()
	users, err := b.users(ctx, t.c, "send", b.p.SendUsers, "")
	if err != nil {
		return setupFailed(r, err)
	}
	room, err := t.c.createRoom(ctx, users[0], "bench send")
	if err != nil {
		return setupFailed(r, err)
	}
	if err := b.joinAll(ctx, t.c, room, users[1:]); err != nil {
		return setupFailed(r, err)
	}
	var lat latencies
	var ec errorCounter
	var sent atomic.Int64
	acked := make([][]string, len(users))
	half := int64(len(users) * b.p.SendMessages / 2)
	var note sync.Once
	start := time.Now()
	var wg sync.WaitGroup
	for u, s := range users {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range b.p.SendMessages {
				if ctx.Err() != nil {
					ec.addN(b.p.SendMessages-i, fmt.Errorf("user %d: %d messages not sent before the time limit", u, b.p.SendMessages-i))
					return
				}
				t0 := time.Now()
				id, err := t.c.send(ctx, s, room, fmt.Sprintf("s%d", i), benchContent{MsgType: "m.text", Body: fmt.Sprintf("send %d from %d", i, u)})
				if err != nil {
					ec.add(err)
					continue
				}
				lat.add(time.Since(t0))
				acked[u] = append(acked[u], id)
				if sent.Add(1) == half {
					note.Do(func() { r.Note = t.midway() })
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r.Seconds = elapsed.Seconds()
	ec.fill(r)
	r.addRate("throughput", float64(sent.Load())/elapsed.Seconds(), "msg/s")
	r.addLatency("latency ", lat.summary())
	if t.label != limitTarget { // the ceiling server writes rows, it serves no /messages
		var all []string
		for _, ids := range acked {
			all = append(all, ids...)
		}
		b.checkAcked(ctx, t, users[0], room, all, r)
	}
	return r
}

// delivery is the outcome of sending messages to long-polling receivers.
type delivery struct {
	all        summary
	perRecv    []summary
	misses     int
	duplicates int // a message a receiver got in more than one response
	sent       int
	acked      []string // event IDs of the sends answered 200
	sendStats  summary
	note       string
	missNotes  []string // which receivers missed what, for the report
	limited    int      // limited timelines, filled from /messages
}

// deliver sends n messages from sender at a steady rate while every
// receiver long-polls /sync, and measures, per receiver and message, the
// time from the start of the send request to the arrival of the sync
// response that carries it. Receivers get b.p.Grace after the last send.
func (b *bench) deliver(ctx context.Context, t *target, sender session, roomID string, receivers []session, n int, rate float64, ec *errorCounter) delivery {
	c := t.c
	var d delivery
	dups := make([]int, len(receivers))
	var limited atomic.Int64
	sentAt := make([]time.Time, n)
	sentOK := make([]bool, n)
	recvAt := make([][]time.Time, len(receivers))
	got := make([]atomic.Int64, len(receivers))
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	var ready, done sync.WaitGroup
	for i, s := range receivers {
		recvAt[i] = make([]time.Time, n)
		ready.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			since := ""
			first := true
			for rctx.Err() == nil {
				resp, err := c.sync(rctx, s, since, b.p.LongPoll, quietFilter)
				now := time.Now()
				if err != nil {
					if rctx.Err() != nil {
						break
					}
					ec.add(fmt.Errorf("receiver %d: %w", i, err))
					if first {
						ready.Done()
						return
					}
					time.Sleep(100 * time.Millisecond)
					continue
				}
				since = resp.NextBatch
				if first {
					first = false
					ready.Done()
					continue // the initial sync may hold setup messages only
				}
				tl := resp.Rooms.Join[roomID].Timeline
				evs := tl.Events
				if tl.Limited {
					// A gap, as the spec allows: a client pages back from
					// prev_batch for what the timeline left out.
					limited.Add(1)
					back, err := c.messagesBack(rctx, s, roomID, tl.PrevBatch, 200)
					if err != nil {
						if rctx.Err() != nil {
							break
						}
						ec.add(fmt.Errorf("receiver %d: filling a limited timeline: %w", i, err))
					}
					for _, ev := range back {
						// Paging back overlaps what came before: no
						// duplicates counted here.
						if seq := ev.Content.Seq; seq != nil && *seq >= 0 && *seq < n && recvAt[i][*seq].IsZero() {
							recvAt[i][*seq] = now
							got[i].Add(1)
						}
					}
				}
				for _, ev := range evs {
					if seq := ev.Content.Seq; seq != nil && *seq >= 0 && *seq < n {
						if !recvAt[i][*seq].IsZero() {
							dups[i]++
							continue
						}
						recvAt[i][*seq] = now
						got[i].Add(1)
					}
				}
			}
			if first {
				ready.Done()
			}
		}()
	}
	ready.Wait()
	var sendLat latencies
	okSends := 0
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			ec.addN(n-i, fmt.Errorf("%d messages not sent before the time limit", n-i))
			break
		}
		if i == n/2 {
			d.note = t.midway()
		}
		seq := i
		sentAt[i] = time.Now()
		id, err := c.send(ctx, sender, roomID, fmt.Sprintf("d%d", i), benchContent{MsgType: "m.text", Body: fmt.Sprintf("delivery %d", i), Seq: &seq})
		if err != nil {
			ec.add(err)
			continue
		}
		sendLat.add(time.Since(sentAt[i]))
		sentOK[i] = true
		okSends++
		d.acked = append(d.acked, id)
	}
	// Wait (bounded) until every receiver has every message that was sent.
	deadline := time.Now().Add(b.p.Grace)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for i := range receivers {
			if got[i].Load() < int64(okSends) {
				all = false
				break
			}
		}
		if all {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()
	done.Wait()
	for _, n := range dups {
		d.duplicates += n
	}
	d.limited = int(limited.Load())
	d.sent = okSends
	d.sendStats = sendLat.summary()
	var all []time.Duration
	for i := range receivers {
		var mine []time.Duration
		var missed []int
		for seq := range n {
			if !sentOK[seq] {
				continue
			}
			if recvAt[i][seq].IsZero() {
				d.misses++
				missed = append(missed, seq)
				continue
			}
			mine = append(mine, recvAt[i][seq].Sub(sentAt[seq]))
		}
		if len(missed) > 0 && len(d.missNotes) < 5 {
			d.missNotes = append(d.missNotes, fmt.Sprintf("receiver %d missed %d messages, seq %d to %d", i, len(missed), missed[0], missed[len(missed)-1]))
		}
		all = append(all, mine...)
		d.perRecv = append(d.perRecv, summarize(mine))
	}
	d.all = summarize(all)
	return d
}

// runFanout: one sender, R receivers with one long-polling device each.
func (b *bench) runFanout(ctx context.Context, t *target) *result {
	r := &result{Workload: "fanout", Target: t.label,
		Params: fmt.Sprintf("1 sender, %d receivers long-polling in one room, %d messages at %.0f/s", b.p.FanoutReceivers, b.p.FanoutMessages, b.p.FanoutRate)}
	ctx, cancel := context.WithTimeout(ctx, b.p.Timeout)
	defer cancel()
	users, err := b.users(ctx, t.c, "fanout", b.p.FanoutReceivers+1, "")
	if err != nil {
		return setupFailed(r, err)
	}
	room, err := t.c.createRoom(ctx, users[0], "bench fanout")
	if err != nil {
		return setupFailed(r, err)
	}
	if err := b.joinAll(ctx, t.c, room, users[1:]); err != nil {
		return setupFailed(r, err)
	}
	var ec errorCounter
	start := time.Now()
	d := b.deliver(ctx, t, users[0], room, users[1:], b.p.FanoutMessages, b.p.FanoutRate, &ec)
	r.Seconds = time.Since(start).Seconds()
	ec.fill(r)
	r.Misses, r.Duplicates, r.Note = d.misses, d.duplicates, d.note
	r.ErrorSamples = append(r.ErrorSamples, d.missNotes...)
	r.addLatency("delivery ", d.all)
	r.add("delivery max", d.all.Max, "ms")
	r.add("missed deliveries", float64(d.misses), "count")
	r.add("duplicate deliveries", float64(d.duplicates), "count")
	r.add("limited timelines filled", float64(d.limited), "count")
	r.add("send p50", d.sendStats.P50, "ms")
	b.checkAcked(ctx, t, users[0], room, d.acked, r)
	return r
}

// runDevices: one user with D devices all long-polling; another user sends.
func (b *bench) runDevices(ctx context.Context, t *target) *result {
	r := &result{Workload: "multidevice", Target: t.label,
		Params: fmt.Sprintf("1 user with %d devices long-polling, another user sends %d messages at %.0f/s", b.p.Devices, b.p.DeviceMessages, b.p.DeviceRate)}
	ctx, cancel := context.WithTimeout(ctx, b.p.Timeout)
	defer cancel()
	const password = "bench-devices-password"
	owner, err := t.c.register(ctx, fmt.Sprintf("bench%s_devices", b.runID), password)
	if err != nil {
		return setupFailed(r, err)
	}
	senders, err := b.users(ctx, t.c, "devsender", 1, "")
	if err != nil {
		return setupFailed(r, err)
	}
	devices := []session{owner}
	for len(devices) < b.p.Devices {
		s, err := t.c.login(ctx, fmt.Sprintf("bench%s_devices", b.runID), password)
		if err != nil {
			return setupFailed(r, err)
		}
		devices = append(devices, s)
	}
	room, err := t.c.createRoom(ctx, owner, "bench devices")
	if err != nil {
		return setupFailed(r, err)
	}
	if err := t.c.join(ctx, senders[0], room); err != nil {
		return setupFailed(r, err)
	}
	var ec errorCounter
	start := time.Now()
	d := b.deliver(ctx, t, senders[0], room, devices, b.p.DeviceMessages, b.p.DeviceRate, &ec)
	r.Seconds = time.Since(start).Seconds()
	ec.fill(r)
	r.Misses, r.Duplicates, r.Note = d.misses, d.duplicates, d.note
	r.ErrorSamples = append(r.ErrorSamples, d.missNotes...)
	r.addLatency("delivery ", d.all)
	worst := 0.0
	for _, s := range d.perRecv {
		worst = max(worst, s.P99)
	}
	r.add("worst device p99", worst, "ms")
	r.add("missed deliveries", float64(d.misses), "count")
	r.add("duplicate deliveries", float64(d.duplicates), "count")
	r.add("limited timelines filled", float64(d.limited), "count")
	b.checkAcked(ctx, t, owner, room, d.acked, r)
	return r
}

// runInitialSync: a user in N rooms with H messages each; full and
// lazy-loading initial syncs, median of several.
func (b *bench) runInitialSync(ctx context.Context, t *target) *result {
	r := &result{Workload: "initialsync", Target: t.label,
		Params: fmt.Sprintf("a user in %d rooms (2 members) with %d messages each; median of %d initial syncs", b.p.SyncRooms, b.p.SyncMessages, b.p.SyncRuns)}
	ctx, cancel := context.WithTimeout(ctx, b.p.Timeout)
	defer cancel()
	us, err := b.users(ctx, t.c, "isync", 2, "")
	if err != nil {
		return setupFailed(r, err)
	}
	rooms := make([]string, b.p.SyncRooms)
	var ec errorCounter
	if ok := forEach(ctx, b.p.SyncRooms, b.p.Concurrency, &ec, func(ctx context.Context, i int) error {
		room, err := t.c.createRoom(ctx, us[0], fmt.Sprintf("bench sync %d", i))
		if err != nil {
			return err
		}
		rooms[i] = room
		if err := t.c.join(ctx, us[1], room); err != nil {
			return err
		}
		for m := range b.p.SyncMessages {
			if _, err := t.c.send(ctx, us[m%2], room, fmt.Sprintf("i%d", m), benchContent{MsgType: "m.text", Body: fmt.Sprintf("history %d", m)}); err != nil {
				return err
			}
		}
		return nil
	}); ok < b.p.SyncRooms {
		return setupFailed(r, fmt.Errorf("setup: %d of %d rooms failed; first: %s", b.p.SyncRooms-ok, b.p.SyncRooms, ec.first()))
	}
	start := time.Now()
	timed := func(filter string) float64 {
		var ds []time.Duration
		for range b.p.SyncRuns {
			if ctx.Err() != nil {
				ec.add(errors.New("initial sync: time limit reached"))
				break
			}
			t0 := time.Now()
			resp, err := t.c.sync(ctx, us[0], "", 0, filter)
			d := time.Since(t0)
			if err == nil && len(resp.Rooms.Join) != b.p.SyncRooms {
				err = fmt.Errorf("initial sync: %d joined rooms, want %d", len(resp.Rooms.Join), b.p.SyncRooms)
			}
			if err == nil {
				for _, room := range rooms {
					if n := len(resp.Rooms.Join[room].Timeline.Events); n == 0 {
						err = fmt.Errorf("initial sync: room %s has an empty timeline", room)
						break
					}
				}
			}
			if err != nil {
				ec.add(err)
				continue
			}
			ds = append(ds, d)
		}
		return median(ds)
	}
	r.add("full", timed(""), "ms")
	r.add("lazy-loading", timed(lazyFilter), "ms")
	r.Seconds = time.Since(start).Seconds()
	ec.fill(r)
	return r
}

// runRegisterLogin: registrations and logins with passwords, so the
// server's password hashing is in the figure.
func (b *bench) runRegisterLogin(ctx context.Context, t *target) *result {
	n := b.p.Registrations
	r := &result{Workload: "register+login", Target: t.label,
		Params: fmt.Sprintf("%d registrations then %d password logins, %d at a time; password hash cost %s", n, n, b.p.Concurrency, b.hashCost)}
	ctx, cancel := context.WithTimeout(ctx, b.p.Timeout)
	defer cancel()
	var ec errorCounter
	var regLat, loginLat latencies
	name := func(i int) string { return fmt.Sprintf("bench%s_reg_%d", b.runID, i) }
	const password = "bench-register-password"
	start := time.Now()
	ok := forEach(ctx, n, b.p.Concurrency, &ec, func(ctx context.Context, i int) error {
		t0 := time.Now()
		_, err := t.c.register(ctx, name(i), password)
		if err == nil {
			regLat.add(time.Since(t0))
		}
		return err
	})
	regSecs := time.Since(start).Seconds()
	start2 := time.Now()
	okLogin := forEach(ctx, n, b.p.Concurrency, &ec, func(ctx context.Context, i int) error {
		t0 := time.Now()
		_, err := t.c.login(ctx, name(i), password)
		if err == nil {
			loginLat.add(time.Since(t0))
		}
		return err
	})
	loginSecs := time.Since(start2).Seconds()
	r.Seconds = time.Since(start).Seconds()
	ec.fill(r)
	r.addRate("registrations", float64(ok)/regSecs, "/s")
	r.add("register p50", regLat.summary().P50, "ms")
	r.addRate("logins", float64(okLogin)/loginSecs, "/s")
	r.add("login p50", loginLat.summary().P50, "ms")
	r.Note = "password hash cost: " + b.hashCost
	return r
}

// runJoins: a room with many members and events; the time a new user takes
// to join it and to get its first (initial) sync.
func (b *bench) runJoins(ctx context.Context, t *target) *result {
	r := &result{Workload: "joins", Target: t.label,
		Params: fmt.Sprintf("a room with %d members and ~%d events; a new user joins and syncs (median of %d)", b.p.JoinMembers, b.p.JoinEvents, b.p.JoinTrials)}
	ctx, cancel := context.WithTimeout(ctx, b.p.Timeout)
	defer cancel()
	members, err := b.users(ctx, t.c, "member", b.p.JoinMembers, "")
	if err != nil {
		return setupFailed(r, err)
	}
	room, err := t.c.createRoom(ctx, members[0], "bench big room")
	if err != nil {
		return setupFailed(r, err)
	}
	if err := b.joinAll(ctx, t.c, room, members[1:]); err != nil {
		return setupFailed(r, err)
	}
	// createRoom with the public_chat preset makes about 6 events.
	messages := max(0, b.p.JoinEvents-len(members)-5)
	var ec errorCounter
	if ok := forEach(ctx, messages, b.p.Concurrency, &ec, func(ctx context.Context, i int) error {
		_, err := t.c.send(ctx, members[i%len(members)], room, fmt.Sprintf("j%d", i), benchContent{MsgType: "m.text", Body: fmt.Sprintf("filler %d", i)})
		return err
	}); ok < messages {
		return setupFailed(r, fmt.Errorf("setup: %d of %d messages failed; first: %s", messages-ok, messages, ec.first()))
	}
	joiners, err := b.users(ctx, t.c, "joiner", b.p.JoinTrials, "")
	if err != nil {
		return setupFailed(r, err)
	}
	var joins, syncs, lazies []time.Duration
	stateEvents := map[string]int{}
	start := time.Now()
	for _, s := range joiners {
		t0 := time.Now()
		if err := t.c.join(ctx, s, room); err != nil {
			ec.add(err)
			continue
		}
		joins = append(joins, time.Since(t0))
		for _, filter := range []string{"", lazyFilter} {
			t1 := time.Now()
			resp, err := t.c.sync(ctx, s, "", 0, filter)
			d := time.Since(t1)
			if err == nil {
				if jr, ok := resp.Rooms.Join[room]; !ok {
					err = fmt.Errorf("first sync after join: room %s missing", room)
				} else {
					stateEvents[filter] = len(jr.State.Events) + len(jr.Timeline.Events)
				}
			}
			if err != nil {
				ec.add(err)
				continue
			}
			if filter == "" {
				syncs = append(syncs, d)
			} else {
				lazies = append(lazies, d)
			}
		}
	}
	r.Seconds = time.Since(start).Seconds()
	ec.fill(r)
	r.add("join", median(joins), "ms")
	r.add("first sync (full)", median(syncs), "ms")
	r.add("first sync (lazy)", median(lazies), "ms")
	r.add("events in first sync (full)", float64(stateEvents[""]), "count")
	r.add("events in first sync (lazy)", float64(stateEvents[lazyFilter]), "count")
	return r
}
