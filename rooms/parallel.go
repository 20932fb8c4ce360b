package rooms

import (
	"context"
	"encoding/json"
	"runtime"
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
