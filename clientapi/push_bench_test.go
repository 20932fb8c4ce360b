package clientapi_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// BenchmarkSendWithDeadPushers measures PUT /send latency while the
// recipient has 1,000 pushers whose gateway accepts connections and never
// answers, against the same room with no pushers and with one: evaluation
// and delivery run off the request path and cost per recipient, never per
// pusher, so the three should be the same (compare with benchstat).
//
//	go test ./clientapi -run '^$' -bench SendWithDeadPushers -benchtime 300x
func BenchmarkSendWithDeadPushers(b *testing.B) {
	for _, pushers := range []int{0, 1, 1000} {
		b.Run(fmt.Sprintf("pushers=%d", pushers), func(b *testing.B) {
			hang := make(chan struct{})
			dead := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-hang }))
			defer dead.Close()
			defer close(hang)
			hs := hearthtest.NewServer(b, hearthtest.SQLite, func(c *config.Config) { c.PushGatewayAllowCIDRs = []string{"127.0.0.0/8"} })
			alice, bob := newUser(b, hs, "alice"), newUser(b, hs, "bob")
			for i := 0; i < pushers; i++ {
				r := bob.do(b, "POST", "/_matrix/client/v3/pushers/set", pusherBody(dead.URL+"/_matrix/push/v1/notify", fmt.Sprintf("key%d", i), nil))
				hearthtest.Expect(b, r, http.StatusOK, "")
			}
			roomID := alice.createRoom(b, map[string]any{"preset": "public_chat"})
			hearthtest.Expect(b, bob.member(b, roomID, "join", nil), http.StatusOK, "")
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				hearthtest.Expect(b, alice.send(b, roomID, "hello"), http.StatusOK, "")
			}
		})
	}
}
