package syncstream

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// BenchmarkFanoutWake measures the time from one room event to the moment
// every one of 1,000 long-polling devices in that room has been woken.
func BenchmarkFanoutWake(b *testing.B) {
	const devices = 1000
	users := make([]string, devices)
	for i := range users {
		users[i] = fmt.Sprintf("@u%d:bench", i)
	}
	n := NewNotifier(Position{}, func(context.Context, string) ([]string, error) { return users, nil })
	ctx := context.Background()
	n.RoomEvent(ctx, "!room:bench", 1, "", "") // load the room's users once
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		since := n.Current()
		var wg sync.WaitGroup
		chans := make([]<-chan struct{}, devices)
		cancels := make([]func(), devices)
		for d, u := range users {
			ch, hasNew, cancel := n.Wait(u, "DEV", since)
			if hasNew {
				b.Fatal("nothing new yet, but Wait says there is")
			}
			chans[d], cancels[d] = ch, cancel
		}
		wg.Add(devices)
		for _, ch := range chans {
			go func() { <-ch; wg.Done() }()
		}
		b.StartTimer()
		n.RoomEvent(ctx, "!room:bench", since.Events+1, "", "")
		wg.Wait()
		b.StopTimer()
		for _, c := range cancels {
			c()
		}
		b.StartTimer()
	}
}
