package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"runtime"
	"slices"
	"sync"

	"github.com/matrix-org/gomatrixserverlib"
)

// Checking the events of a big room's state (a send_join answer, a
// resync's /state: tens of thousands) is parsing, hashing and ed25519
// verification, each event on its own: split over the CPUs.

// inParallel calls fn on consecutive ranges covering [0, n), one per CPU
// when n is large enough to be worth the goroutines.
func inParallel(n int, fn func(lo, hi int)) {
	workers := min(runtime.GOMAXPROCS(0), n/256)
	if workers <= 1 {
		fn(0, n)
		return
	}
	step := (n + workers - 1) / workers
	var wg sync.WaitGroup
	for lo := 0; lo < n; lo += step {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			fn(lo, hi)
		}(lo, min(n, lo+step))
	}
	wg.Wait()
}

// parseAll parses remote events (parsePDU); a nil PDU has the error at the
// same index.
func parseAll(ver gomatrixserverlib.IRoomVersion, raws []json.RawMessage) ([]gomatrixserverlib.PDU, []error) {
	pdus, errs := make([]gomatrixserverlib.PDU, len(raws)), make([]error, len(raws))
	inParallel(len(raws), func(lo, hi int) {
		for i := lo; i < hi; i++ {
			pdus[i], errs[i] = parsePDU(ver, raws[i])
		}
	})
	return pdus, errs
}

// verifyAll checks the signatures of events (server-server API, checks on
// receipt of a PDU, 2), as gomatrixserverlib.VerifyAllEventSignatures.
func (r *Rooms) verifyAll(ctx context.Context, pdus []gomatrixserverlib.PDU) []error {
	errs := make([]error, len(pdus))
	inParallel(len(pdus), func(lo, hi int) {
		copy(errs[lo:hi], gomatrixserverlib.VerifyAllEventSignatures(ctx, pdus[lo:hi], r.verifier, userIDForSender))
	})
	return errs
}

// authOrder orders events so that each comes after those of its auth
// events that are among them (Kahn's algorithm, ties in the given order).
// The library's ReverseTopologicalOrdering sorts its ready set at every
// step: quadratic, and most of a resync's time when tens of thousands of
// state events share the same few auth events. An event caught in an auth
// cycle (possible only where event IDs are not hashes) comes last, where
// its auth events are still missing.
func authOrder(pdus []gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	index := make(map[string]int, len(pdus))
	for i, p := range pdus {
		index[p.EventID()] = i
	}
	waiting := make([]int, len(pdus))
	dependents := map[int][]int{}
	for i, p := range pdus {
		seen := map[int]bool{}
		for _, id := range p.AuthEventIDs() {
			if j, ok := index[id]; ok && j != i && !seen[j] {
				seen[j] = true
				waiting[i]++
				dependents[j] = append(dependents[j], i)
			}
		}
	}
	out := make([]gomatrixserverlib.PDU, 0, len(pdus))
	queue := make([]int, 0, len(pdus))
	for i := range pdus {
		if waiting[i] == 0 {
			queue = append(queue, i)
		}
	}
	placed := make([]bool, len(pdus))
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		placed[i] = true
		out = append(out, pdus[i])
		for _, d := range dependents[i] {
			if waiting[d]--; waiting[d] == 0 {
				queue = append(queue, d)
			}
		}
	}
	for i, p := range pdus {
		if !placed[i] {
			out = append(out, p)
		}
	}
	return out
}

// readInPartsFrom is how many IDs a read takes before it is split over
// the CPUs: a big room's state (a send_join answer, /state) is tens of
// thousands of rows, each read and parsed on its own.
const readInPartsFrom = 4096

// readInParts calls read on ids, or, from readInPartsFrom of them, on one
// part per CPU at once (read pool connections), and joins the results.
func readInParts[T any](ids []string, read func([]string) ([]T, error)) ([]T, error) {
	parts := 1
	if len(ids) >= readInPartsFrom {
		parts = runtime.GOMAXPROCS(0)
	}
	if parts <= 1 {
		return read(ids)
	}
	step := (len(ids) + parts - 1) / parts
	results := make([][]T, parts)
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for i := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = read(ids[min(i*step, len(ids)):min((i+1)*step, len(ids))])
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return slices.Concat(results...), nil
}
