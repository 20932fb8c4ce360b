package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// Through a balancer, a request that met a dying process (502 from the
// balancer, or no connection) is sent again, with the same transaction ID
// for a send, and counted; other failures are not retried.
func TestClientRetriesThroughBalancer(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		switch {
		case r.URL.Path == "/_matrix/client/v3/rooms/!r/send/m.room.message/t1" && n <= 2:
			http.Error(w, "bad gateway", http.StatusBadGateway)
		case r.URL.Path == "/_matrix/client/v3/rooms/!r/send/m.room.message/t1":
			_, _ = w.Write([]byte(`{"event_id":"$e"}`))
		default:
			http.Error(w, `{"errcode":"M_FORBIDDEN"}`, http.StatusForbidden)
		}
	}))
	defer srv.Close()
	retried := &atomic.Int64{}
	c := &client{base: srv.URL, http: srv.Client(), retry: retried, backoff: time.Millisecond}
	id, err := c.send(context.Background(), session{Token: "x"}, "!r", "t1", benchContent{MsgType: "m.text", Body: "b"})
	if err != nil || id != "$e" || retried.Load() != 2 {
		t.Fatalf("send: %q, %v after %d retries; want $e after 2", id, err, retried.Load())
	}
	if _, err := c.send(context.Background(), session{Token: "x"}, "!r", "t2", benchContent{MsgType: "m.text"}); err == nil || retried.Load() != 2 {
		t.Fatalf("a 403 was retried or not reported: %v, %d retries", err, retried.Load())
	}
	down := &client{base: "http://127.0.0.1:1", http: srv.Client(), retry: &atomic.Int64{}, backoff: time.Millisecond}
	if err := down.do(context.Background(), "GET", "/x", "", nil, nil); err == nil || down.retry.Load() != maxRetries-1 {
		t.Fatalf("unreachable server: %v after %d retries, want an error after %d", err, down.retry.Load(), maxRetries-1)
	}
}

func TestGroupSizes(t *testing.T) {
	if got, err := groupSizes("1, 3,3k"); err != nil || len(got) != 3 || got[0] != (groupSpec{1, false}) ||
		got[1] != (groupSpec{3, false}) || got[2] != (groupSpec{3, true}) {
		t.Fatalf("groupSizes(1, 3,3k) = %v, %v", got, err)
	}
	for _, bad := range []string{"0", "x", "17", "-1", "1k", "k"} {
		if _, err := groupSizes(bad); err == nil {
			t.Errorf("groupSizes(%q) accepted", bad)
		}
	}
}
