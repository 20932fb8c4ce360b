package media

import (
	"sync"
	"time"
)

// tokenBuckets is a per-key token bucket: burst tokens, one more every
// `every`. It lives here because there is no shared rate-limit package yet.
type tokenBuckets struct {
	burst float64
	every time.Duration

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

func newTokenBuckets(burst int, every time.Duration) *tokenBuckets {
	return &tokenBuckets{burst: float64(burst), every: every, buckets: map[string]*bucket{}}
}

// take spends one token of key, returning 0, or how long until one is free.
func (t *tokenBuckets) take(key string, now time.Time) time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	b, ok := t.buckets[key]
	if !ok {
		if len(t.buckets) > 100_000 {
			t.prune(now)
		}
		b = &bucket{tokens: t.burst, last: now}
		t.buckets[key] = b
	}
	b.tokens = min(t.burst, b.tokens+float64(now.Sub(b.last))/float64(t.every))
	b.last = now
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) * float64(t.every))
	}
	b.tokens--
	return 0
}

// prune forgets full buckets, which behave like absent ones.
func (t *tokenBuckets) prune(now time.Time) {
	for k, b := range t.buckets {
		if b.tokens+float64(now.Sub(b.last))/float64(t.every) >= t.burst {
			delete(t.buckets, k)
		}
	}
}
