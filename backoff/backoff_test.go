package backoff

import (
	"testing"
	"time"
)

func TestDelayDoublesWithinJitterAndCap(t *testing.T) {
	lo, hi := 100*time.Millisecond, time.Second
	for failures, want := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond,
		4: 800 * time.Millisecond, 5: time.Second, 60: time.Second,
	} {
		for range 200 {
			d := Delay(failures, lo, hi)
			if d < want/2 || d > want {
				t.Fatalf("Delay(%d) = %v, want within [%v, %v]", failures, d, want/2, want)
			}
		}
	}
}

func TestDelayJitters(t *testing.T) {
	seen := map[time.Duration]bool{}
	for range 50 {
		seen[Delay(3, time.Second, time.Minute)] = true
	}
	if len(seen) < 10 {
		t.Fatalf("50 delays took only %d values: no jitter", len(seen))
	}
}

func TestDelayZeroMinimum(t *testing.T) {
	if d := Delay(5, 0, time.Second); d != 0 {
		t.Fatalf("Delay with lo=0 = %v, want 0", d)
	}
}
