// Package backoff computes the delay before retrying a failed delivery:
// federation transactions, pushes to gateways and application-service
// transactions all wait the same way.
package backoff

import (
	"math/rand/v2"
	"time"
)

// Delay is lo doubled per earlier failure (failures counts the one just
// seen, so 1 gives lo), capped at hi, with "equal jitter": a uniform
// value in [d/2, d]. The jitter keeps many senders that failed together
// from retrying in step; it never waits longer than hi.
func Delay(failures int, lo, hi time.Duration) time.Duration {
	if lo <= 0 {
		return 0
	}
	d := lo
	for i := 1; i < failures && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}
