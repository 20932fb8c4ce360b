package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// TestSmokeAgainstHearth runs every workload with smoke counts against an
// in-process Hearth on each backend: the benchmark must finish without a
// single error or missed delivery, report every figure, and compare the
// send workload with the limit server.
func TestSmokeAgainstHearth(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		rep, stdout := runBench(t, "--url", hs.URL, "--smoke", "--hash-cost", "4", "--data-dir", hs.Config.DataDir)
		got := map[string]*result{}
		for _, r := range rep.Results {
			if r.Errors != 0 || r.Misses != 0 || r.Duplicates != 0 || r.Lost != 0 {
				t.Errorf("%s @ %s: %d errors, %d misses, %d duplicates, %d lost: %v", r.Workload, r.Target, r.Errors, r.Misses,
					r.Duplicates, r.Lost, r.ErrorSamples)
			}
			got[r.Workload+"@"+r.Target] = r
		}
		target := strings.TrimPrefix(hs.URL, "http://")
		for _, w := range []string{"send", "fanout", "multidevice", "initialsync", "register+login", "joins", "resources"} {
			r, ok := got[w+"@"+target]
			if !ok || len(r.Metrics) == 0 {
				t.Errorf("no figures for %s", w)
			}
		}
		send := got["send@"+target]
		if send == nil || send.Metrics[0].Name != "throughput" || send.Metrics[0].Value <= 0 {
			t.Fatalf("send throughput missing: %+v", send)
		}
		if lim := got["send@"+limitTarget]; lim == nil || lim.Metrics[0].Value <= 0 {
			t.Fatalf("limit throughput missing: %+v", lim)
		}
		for _, w := range []string{"send", "fanout", "multidevice"} {
			if !hasMetric(got[w+"@"+target], "lost acknowledged") {
				t.Errorf("%s did not check its acknowledged events", w)
			}
		}
		if !hasMetric(send, "fraction of limit") {
			t.Errorf("send has no fraction of limit: %+v", send.Metrics)
		}
		if !hasMetric(got["resources@"+target], "database on disk") {
			t.Errorf("resources has no database size")
		}
		if !strings.Contains(stdout, "fraction of limit") {
			t.Errorf("the table lacks the limit comparison:\n%s", stdout)
		}
	})
}

func hasMetric(r *result, name string) bool {
	if r == nil {
		return false
	}
	for _, m := range r.Metrics {
		if m.Name == name {
			return true
		}
	}
	return false
}

// TestRefusesNonLoopback: the benchmark only drives remote machines when told.
func TestRefusesNonLoopback(t *testing.T) {
	var stdout, stderr bytes.Buffer
	_, err := run(context.Background(), []string{"--url", "http://192.0.2.1:8008", "--smoke"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("got %v, want a loopback error", err)
	}
}

// TestSharedSecretRegistration: with --shared-secret the users come from the
// Synapse-style admin API, so a server with registration closed works too.
func TestSharedSecretRegistration(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, func(c *config.Config) {
		c.Registration = config.RegistrationClosed
		c.RegistrationSharedSecret = "bench-secret"
	})
	var stdout, stderr bytes.Buffer
	code, err := run(context.Background(), []string{"--url", hs.URL, "--smoke", "--workloads", "send,multidevice",
		"--limit=false", "--shared-secret", "bench-secret", "--json", filepath.Join(t.TempDir(), "r.json")}, &stdout, &stderr)
	if err != nil || code != 0 {
		t.Fatalf("hearth-bench: code %d, err %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), stderr.String())
	}
}

// TestSmokePartialJoin runs the partialjoin workload against two in-process
// servers that federate: the user of the second joins the first's room
// over federation, sends, and sees every member once the state is full.
func TestSmokePartialJoin(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 3, nil)
		pj, stdout := partialJoinResult(t, "--url", fed[0].URL, "--partialjoin-url", fed[0].URL+","+fed[1].URL, "--smoke", "--workloads", "partialjoin")
		checkPartialJoin(t, pj, map[string]float64{"members once complete": float64(smokeParams().PartialMembers + 1)})
		// The room again, from a third server, without building it: the
		// members now include the first joiner and the run's observer.
		_, roomID, ok := strings.Cut(pj.Note, "the room: ")
		roomID, _, _ = strings.Cut(roomID, " ")
		if !ok || !strings.HasPrefix(roomID, "!") {
			t.Fatalf("the note names no room: %q\n%s", pj.Note, stdout)
		}
		again, _ := partialJoinResult(t, "--url", fed[0].URL, "--partialjoin-url", fed[0].URL+","+fed[2].URL, "--partialjoin-room", roomID, "--smoke", "--workloads", "partialjoin")
		n := float64(smokeParams().PartialMembers + 2)
		checkPartialJoin(t, again, map[string]float64{"members before the join": n, "members once complete": n + 1})
	})
}

// partialJoinResult runs hearth-bench with args and returns its
// partialjoin result, which must have no errors.
func partialJoinResult(t *testing.T, args ...string) (*result, string) {
	t.Helper()
	rep, stdout := runBench(t, args...)
	for _, r := range rep.Results {
		if r.Workload == "partialjoin" {
			if r.Errors > 0 {
				t.Fatalf("partialjoin had %d errors: %v\n%s", r.Errors, r.ErrorSamples, stdout)
			}
			return r, stdout
		}
	}
	t.Fatalf("no partialjoin result:\n%s", stdout)
	return nil, ""
}

// checkPartialJoin checks a partialjoin result's timings are there and
// its counts are want.
func checkPartialJoin(t *testing.T, pj *result, want map[string]float64) {
	t.Helper()
	for _, m := range pj.Metrics {
		if v, ok := want[m.Name]; ok && m.Value != v {
			t.Errorf("%s = %v, want %v", m.Name, m.Value, v)
		}
		delete(want, m.Name)
	}
	for _, name := range []string{"join", "join to first send", "join to full state", "join to message at the resident"} {
		if !hasMetric(pj, name) {
			t.Errorf("partialjoin has no %q", name)
		}
	}
	if len(want) > 0 {
		t.Errorf("partialjoin lacks %v", want)
	}
}

// TestPartialJoinNeedsTwoServers: against one running server the workload
// says it was skipped, without failing the run.
func TestPartialJoinNeedsTwoServers(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	var stdout, stderr bytes.Buffer
	code, err := run(context.Background(), []string{"--url", hs.URL, "--smoke", "--workloads", "partialjoin"}, &stdout, &stderr)
	if err != nil || code != 0 || !strings.Contains(stdout.String(), "skipped: needs two federating servers") {
		t.Fatalf("code %d, err %v\nstdout:\n%s", code, err, stdout.String())
	}
}

// runBench runs hearth-bench with args and returns its JSON report and
// the table it printed.
func runBench(t *testing.T, args ...string) (report, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "report.json")
	var stdout, stderr bytes.Buffer
	code, err := run(context.Background(), append(args, "--json", out), &stdout, &stderr)
	if err != nil || code != 0 {
		t.Fatalf("hearth-bench: code %d, err %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout.String(), stderr.String())
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep report
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("decoding the JSON report: %v", err)
	}
	return rep, stdout.String()
}
