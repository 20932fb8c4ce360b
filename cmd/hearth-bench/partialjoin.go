package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hearth-matrix/hearth/tlscert"
)

// fedPair is two homeservers that federate with each other: the resident
// holds the big room, a user of the joiner joins it (issue 20, federation
// ingest at scale).
type fedPair struct {
	resident, joiner       *client
	residentPID, joinerPID int
	residentDir, joinerDir string
	stop                   func()
}

// startPair starts two Hearths of bin that federate on loopback the way
// docs/federation.md ("Several servers on one machine") says: each named
// localhost:<its federation port>, its certificate signed by a CA of the
// run that both trust (federation_ca_certs), loopback allowed
// (federation_allow_cidrs).
func startPair(ctx context.Context, bin, dir string, hashCost int) (*fedPair, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	caCert, caKey := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := tlscert.WriteCA(caCert, caKey, "hearth-bench CA"); err != nil {
		return nil, err
	}
	var hs []*startedHearth
	stop := func() {
		for _, h := range hs {
			h.stop()
		}
	}
	for _, role := range []string{"resident", "joiner"} {
		port, err := freePort()
		if err != nil {
			stop()
			return nil, err
		}
		fedPort, err := freePort()
		if err != nil {
			stop()
			return nil, err
		}
		name := "localhost:" + strconv.Itoa(fedPort)
		cert, key := filepath.Join(dir, role+".crt"), filepath.Join(dir, role+".key")
		if err := tlscert.WriteSignedByCA(cert, key, name, caCert, caKey); err != nil {
			stop()
			return nil, err
		}
		h, err := launchHearth(ctx, bin, filepath.Join(dir, role), "127.0.0.1:"+strconv.Itoa(port),
			filepath.Join(dir, role+".log"), hashCost,
			"--server-name", name, "--federation-listen", "127.0.0.1:"+strconv.Itoa(fedPort),
			"--tls-cert-path", cert, "--tls-key-path", key, "--federation-ca-certs", caCert,
			"--federation-allow-cidrs", "127.0.0.0/8,::1/128")
		if err != nil {
			stop()
			return nil, err
		}
		hs = append(hs, h)
	}
	return &fedPair{residentPID: hs[0].cmd.Process.Pid, joinerPID: hs[1].cmd.Process.Pid,
		residentDir: hs[0].dataDir, joinerDir: hs[1].dataDir, stop: stop,
		resident: &client{base: hs[0].url}, joiner: &client{base: hs[1].url}}, nil
}

// progress logs done/total every 10 s until stopped, so a long setup shows
// that it moves.
func (b *bench) progress(what string, total int, done *atomic.Int64) (stop func()) {
	quit := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				b.logf("partialjoin setup: %s %d/%d", what, done.Load(), total)
			}
		}
	}()
	return func() { close(quit) }
}

// runPartialJoin: a room with M members and S state events on the
// resident; a user of the joiner joins it over federation (a partial-state
// join, MSC3706/MSC3902), sends a message, and waits for the full state.
// Timed from the join request: its 200, the first send answered 200, and
// GET /joined_members answered with all M+1 members (MSC3902 makes it
// wait for the resync, so its answer is the joiner's full state). The
// room is built through the client API; setup is not in the figures.
func (b *bench) runPartialJoin(ctx context.Context, t *target) *result {
	members, states := b.p.PartialMembers, b.p.PartialState
	r := &result{Workload: "partialjoin", Target: t.label,
		Params: fmt.Sprintf("a room with %d members and %d state events on a resident server; a user of a second server joins it over federation, sends, and waits for the full state", members, states)}
	if t.pair == nil {
		r.Note = "skipped: needs two federating servers (--start-hearth, or --partialjoin-url)"
		return r
	}
	ctx, cancel := context.WithTimeout(ctx, b.p.PartialTimeout)
	defer cancel()
	start := time.Now()
	pair, err := t.pair(ctx)
	if err != nil {
		return setupFailed(r, fmt.Errorf("starting two federating servers: %w", err))
	}
	defer pair.stop()
	res, joi := *pair.resident, *pair.joiner
	res.http, joi.http = t.c.http, t.c.http
	var resRSS, joiRSS *rssSampler
	if pair.residentPID > 0 {
		resRSS = startRSS(pair.residentPID)
		defer resRSS.finish()
	}
	if pair.joinerPID > 0 {
		joiRSS = startRSS(pair.joinerPID)
		defer joiRSS.finish()
	}

	var room bigRoomInfo
	wantMembers := members + 1
	if b.p.PartialRoom != "" {
		// A room an earlier run built: a new user of the resident joins it
		// to read it (the joiner's message), and counts its members.
		r.Params = fmt.Sprintf("room %s of the resident, built by an earlier run; a user of a second server joins it over federation, sends, and waits for the full state", b.p.PartialRoom)
		observer, err := res.register(ctx, fmt.Sprintf("bench%s_pjobserver", b.runID), "")
		if err != nil {
			return setupFailed(r, err)
		}
		if err := res.join(ctx, observer, b.p.PartialRoom); err != nil {
			return setupFailed(r, fmt.Errorf("joining %s on the resident: %w", b.p.PartialRoom, err))
		}
		n, err := res.joinedMembers(ctx, observer, b.p.PartialRoom)
		if err != nil {
			return setupFailed(r, err)
		}
		room, wantMembers = bigRoomInfo{id: b.p.PartialRoom, creator: observer}, n+1
		r.add("members before the join", float64(n), "count")
	} else if room, err = b.bigRoom(ctx, &res, members, states); err != nil {
		return setupFailed(r, err)
	}
	r.add("setup", time.Since(start).Seconds(), "s")
	if resRSS != nil {
		r.add("resident RSS peak, setup", resRSS.takeWindow(), "MB")
	}
	joiner, err := joi.register(ctx, fmt.Sprintf("bench%s_pjoiner", b.runID), "")
	if err != nil {
		return setupFailed(r, err)
	}
	_, residentName, _ := strings.Cut(room.creator.UserID, ":")

	var ec errorCounter
	t0 := time.Now()
	if err := joi.joinVia(ctx, joiner, room.id, residentName); err != nil {
		return setupFailed(r, fmt.Errorf("the join: %w", err))
	}
	joinT := time.Since(t0)
	// The first send answered 200; until then each refusal is counted.
	var sendT time.Duration
	var eventID string
	refused := 0
	for ctx.Err() == nil {
		id, err := joi.send(ctx, joiner, room.id, "pj0", benchContent{MsgType: "m.text", Body: "hello from the joiner"})
		if err == nil {
			sendT, eventID = time.Since(t0), id
			break
		}
		refused++
		if refused <= 3 {
			ec.add(fmt.Errorf("send after the join: %w", err))
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	var completeT time.Duration
	joined := 0
	for ctx.Err() == nil {
		n, err := joi.joinedMembers(ctx, joiner, room.id)
		if err == nil {
			completeT, joined = time.Since(t0), n
			break
		}
		if ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			ec.add(fmt.Errorf("joined_members after the join: %w", err))
			sleepCtx(ctx, time.Second)
		}
	}
	if joined != wantMembers {
		ec.add(fmt.Errorf("the joiner's server lists %d joined members once complete, want %d", joined, wantMembers))
	}
	// The message went out over federation during the partial state.
	var deliveredT time.Duration
	for eventID != "" && ctx.Err() == nil {
		if err := res.do(ctx, "GET", v3+"/rooms/"+url.PathEscape(room.id)+"/event/"+url.PathEscape(eventID), room.creator.Token, nil, nil); err == nil {
			deliveredT = time.Since(t0)
			break
		}
		sleepCtx(ctx, 50*time.Millisecond)
	}
	r.Seconds = time.Since(start).Seconds()
	if ctx.Err() != nil {
		ec.add(fmt.Errorf("partialjoin: time limit (%s) reached", b.p.PartialTimeout))
	}
	if refused > 3 {
		ec.addN(refused-3, fmt.Errorf("%d more sends refused", refused-3))
	}
	ec.fill(r)
	r.add("join", ms(joinT), "ms")
	r.add("join to first send", ms(sendT), "ms")
	r.add("join to full state", ms(completeT), "ms")
	r.add("join to message at the resident", ms(deliveredT), "ms")
	r.add("members once complete", float64(joined), "count")
	if resRSS != nil {
		r.add("resident RSS peak, join", resRSS.takeWindow(), "MB")
	}
	if joiRSS != nil {
		r.add("joiner RSS peak, join", joiRSS.takeWindow(), "MB")
	}
	for _, d := range []struct{ who, dir string }{{"resident", pair.residentDir}, {"joiner", pair.joinerDir}} {
		if d.dir == "" {
			continue
		}
		if db, _, _, err := diskUsage(d.dir); err == nil {
			r.add(d.who+" database on disk", db, "MB")
		}
	}
	r.Note = fmt.Sprintf("full state: GET /joined_members on the joiner answered (it waits for the resync, MSC3902) with every member; the room: %s (--partialjoin-room joins it again from another server)", room.id)
	return r
}

// bigRoomInfo is the room runPartialJoin joins.
type bigRoomInfo struct {
	id      string
	creator session
}

// bigRoom builds a public room on c with members joined members (the
// creator one of them) and states state events in all (the members',
// the creation's and custom ones, one state key each), requests running
// concurrently.
func (b *bench) bigRoom(ctx context.Context, c *client, members, states int) (bigRoomInfo, error) {
	var done atomic.Int64
	stop := b.progress("registered", members, &done)
	users := make([]session, members)
	var ec errorCounter
	ok := forEach(ctx, members, b.p.Concurrency, &ec, func(ctx context.Context, i int) error {
		s, err := c.register(ctx, fmt.Sprintf("bench%s_pj_%d", b.runID, i), "")
		users[i] = s
		done.Add(1)
		return err
	})
	stop()
	if ok < members {
		return bigRoomInfo{}, fmt.Errorf("setup: %d of %d registrations failed; first: %s", members-ok, members, ec.first())
	}
	b.logf("partialjoin setup: %d users registered", members)
	room, err := c.createRoom(ctx, users[0], "bench partial join")
	if err != nil {
		return bigRoomInfo{}, err
	}
	// The custom state first, while the room has one member: each event a
	// member joins later costs the server more (push, device lists). What
	// the creation made (create, power levels, join rules, ...) is state
	// already, and the members will be.
	made, err := c.stateCount(ctx, users[0], room)
	if err != nil {
		return bigRoomInfo{}, err
	}
	custom := max(0, states-made-(members-1))
	done.Store(0)
	stop = b.progress("state events", custom, &done)
	ok = forEach(ctx, custom, b.p.Concurrency, &ec, func(ctx context.Context, i int) error {
		defer done.Add(1)
		return c.putState(ctx, users[0], room, "org.hearth.bench.state", strconv.Itoa(i), map[string]any{"v": i})
	})
	stop()
	if ok < custom {
		return bigRoomInfo{}, fmt.Errorf("setup: %d of %d state events failed; first: %s", custom-ok, custom, ec.first())
	}
	b.logf("partialjoin setup: %d custom state events sent", custom)
	done.Store(0)
	stop = b.progress("joined", members-1, &done)
	ok = forEach(ctx, members-1, b.p.Concurrency, &ec, func(ctx context.Context, i int) error {
		defer done.Add(1)
		return c.join(ctx, users[i+1], room)
	})
	stop()
	if ok < members-1 {
		return bigRoomInfo{}, fmt.Errorf("setup: %d of %d joins failed; first: %s", members-1-ok, members-1, ec.first())
	}
	b.logf("partialjoin setup: %d members joined", members)
	return bigRoomInfo{id: room, creator: users[0]}, nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}
