package federation

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/netguard"
)

func TestACLGlobs(t *testing.T) {
	acl := `{"allow": ["*.example.org", "good.?om", "EXACT.net", 5], "deny": ["evil.example.org", "*.BAD.example.org"], "allow_ip_literals": false}`
	for server, want := range map[spec.ServerName]bool{
		"a.example.org":          true,
		"A.EXAMPLE.ORG:8448":     true, // case-insensitive, port ignored
		"evil.example.org":       false,
		"Evil.Example.Org:1234":  false,
		"x.bad.example.org":      false,
		"good.com":               true,
		"good.coom":              false,
		"exact.net":              true,
		"example.org":            false, // *.example.org needs a dot before
		"1.2.3.4":                false, // IP literals denied
		"[::1]:8448":             false,
		"other.net":              false,
		"a.example.org.evil.com": false,
	} {
		if got := aclAllows([]byte(acl), server); got != want {
			t.Errorf("%s: allowed %v, want %v", server, got, want)
		}
	}
	// allow_ip_literals defaults to true; no allow list denies everyone.
	if !aclAllows([]byte(`{"allow": ["*"]}`), "1.2.3.4") || aclAllows([]byte(`{"deny": []}`), "a.org") {
		t.Error("defaults")
	}
	// A malformed list field does not make the rest unreadable.
	if aclAllows([]byte(`{"allow": ["*"], "deny": "not a list", "allow_ip_literals": false}`), "1.2.3.4") {
		t.Error("IP literal allowed beside a malformed deny")
	}
}

func TestNetguard(t *testing.T) {
	g, err := netguard.New([]string{"10.1.0.0/16"})
	if err != nil {
		t.Fatal(err)
	}
	for addr, want := range map[string]bool{
		"127.0.0.1": false, "::1": false, "10.0.0.1": false, "10.1.2.3": true, "192.168.1.1": false,
		"169.254.169.254": false, "100.64.0.1": false, "::ffff:127.0.0.1": false, "fe80::1": false,
		"8.8.8.8": true, "2001:4860:4860::8888": true, "0.0.0.0": false,
	} {
		if got := g.Permitted(netip.MustParseAddr(addr)); got != want {
			t.Errorf("%s: permitted %v, want %v", addr, got, want)
		}
	}
	if err := g.Control("tcp4", "127.0.0.1:80", nil); !errors.Is(err, netguard.ErrBlocked) {
		t.Errorf("Control: %v", err)
	}
	if _, err := netguard.New([]string{"nonsense"}); err == nil {
		t.Error("bad CIDR accepted")
	}
}

func TestCacheTTL(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		h    http.Header
		want time.Duration
	}{
		{http.Header{}, wellKnownDefaultTTL},
		{http.Header{"Cache-Control": {"public, max-age=3600"}}, time.Hour},
		{http.Header{"Cache-Control": {"max-age=999999999"}}, wellKnownMaxTTL},
		{http.Header{"Cache-Control": {"no-store"}}, 0},
		{http.Header{"Expires": {now.Add(2 * time.Hour).Format(http.TimeFormat)}}, 2 * time.Hour},
		{http.Header{"Expires": {now.Add(2 * time.Hour).Format(http.TimeFormat)}, "Cache-Control": {"max-age=60"}}, time.Minute},
	} {
		if got := cacheTTL(c.h, now); got != c.want {
			t.Errorf("%v: %v, want %v", c.h, got, c.want)
		}
	}
}

// TestResolveWellKnownExpires checks the discovery rules' cache: a
// .well-known answer is reused until its max-age runs out, then fetched
// again; explicit ports and IP literals need no lookup.
func TestResolveWellKnownExpires(t *testing.T) {
	var fetches atomic.Int32
	wk := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		if r.URL.Path != "/.well-known/matrix/server" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte(`{"m.server": "delegated.example:8449"}`))
	}))
	defer wk.Close()
	g, _ := netguard.New([]string{"127.0.0.0/8"})
	tr := newTransport(g, nil, true, nil)
	target, _ := url.Parse(wk.URL)
	// Every .well-known request goes to the test server, whatever the host.
	tr.wellKnown = &http.Client{Transport: rewriteHost{host: target.Host, rt: wk.Client().Transport}}
	tr.lookupSRV = func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error) {
		return "", nil, errors.New("no SRV here")
	}
	now := time.Now()
	var mu sync.Mutex
	tr.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		res, err := tr.resolve(ctx, "example.org")
		if err != nil || len(res) != 1 || res[0].Destination != "delegated.example:8449" || res[0].Host != "delegated.example:8449" || res[0].TLSServerName != "delegated.example" {
			t.Fatalf("resolution: %+v %v", res, err)
		}
	}
	if fetches.Load() != 1 {
		t.Fatalf(".well-known fetched %d times within max-age", fetches.Load())
	}
	mu.Lock()
	now = now.Add(61 * time.Second)
	mu.Unlock()
	if _, err := tr.resolve(ctx, "example.org"); err != nil || fetches.Load() != 2 {
		t.Fatalf("after expiry: %d fetches, %v", fetches.Load(), err)
	}
	for name, dest := range map[spec.ServerName]string{"1.2.3.4": "1.2.3.4:8448", "[::1]:99": "[::1]:99", "host.example:1234": "host.example:1234"} {
		res, err := tr.resolve(ctx, name)
		if err != nil || res[0].Destination != dest || res[0].Host != name {
			t.Errorf("%s: %+v %v", name, res, err)
		}
	}
	if fetches.Load() != 2 {
		t.Error("literal names caused a .well-known lookup")
	}
}

type rewriteHost struct {
	host string
	rt   http.RoundTripper
}

func (r rewriteHost) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.URL.Host = r.host
	return r.rt.RoundTrip(req)
}

// countingFetcher counts fetches and blocks until released.
type countingFetcher struct {
	calls   atomic.Int32
	release chan struct{}
}

func (f *countingFetcher) FetcherName() string { return "counting" }
func (f *countingFetcher) FetchKeys(ctx context.Context, reqs map[lookupReq]spec.Timestamp) (map[lookupReq]lookupRes, error) {
	f.calls.Add(1)
	<-f.release
	out := map[lookupReq]lookupRes{}
	for req := range reqs {
		out[req] = lookupRes{VerifyKey: gomatrixserverlib.VerifyKey{Key: []byte("k-" + string(req.ServerName))}}
	}
	return out, nil
}

func TestKeyFetchesCoalesced(t *testing.T) {
	inner := &countingFetcher{release: make(chan struct{})}
	f := newCoalescingFetcher(inner)
	var wg sync.WaitGroup
	results := make([]map[lookupReq]lookupRes, 10)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], _ = f.FetchKeys(context.Background(), map[lookupReq]spec.Timestamp{{ServerName: "a.example", KeyID: "ed25519:x"}: 0})
		}()
	}
	// Wait until the one fetch is in flight and give every caller time to
	// join it.
	for inner.calls.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(inner.release)
	wg.Wait()
	if n := inner.calls.Load(); n != 1 {
		t.Errorf("%d fetches for one server", n)
	}
	for i, r := range results {
		if string(r[lookupReq{ServerName: "a.example", KeyID: "ed25519:x"}].Key) != "k-a.example" {
			t.Errorf("caller %d got %v", i, r)
		}
	}
	// A later fetch is a new one.
	if _, err := f.FetchKeys(context.Background(), map[lookupReq]spec.Timestamp{{ServerName: "a.example", KeyID: "ed25519:x"}: 0}); err != nil || inner.calls.Load() != 2 {
		t.Errorf("second fetch: %v, %d calls", err, inner.calls.Load())
	}
}

// A partial send_join answer split with gjson holds what the library's
// decoding would, each event as sent; anything but a JSON object with
// arrays of events is refused with an error, not a panic.
func TestParseSendJoinAnswer(t *testing.T) {
	ok := `{"origin":"b.test","members_omitted":true,"servers_in_room":["b.test","c.test",3],
		"event":{"type":"m.room.member"},"state":[{"type":"a","x":[1,{"y":"]"}]},{"type":"b"}],"auth_chain":[{"type":"c"}]}`
	res, err := parseSendJoinAnswer([]byte(ok))
	if err != nil {
		t.Fatal(err)
	}
	if res.Origin != "b.test" || !res.MembersOmitted || len(res.ServersInRoom) != 2 || string(res.Event) != `{"type":"m.room.member"}` {
		t.Fatalf("answer: %+v", res)
	}
	if len(res.StateEvents) != 2 || string(res.StateEvents[0]) != `{"type":"a","x":[1,{"y":"]"}]}` || string(res.StateEvents[1]) != `{"type":"b"}` {
		t.Fatalf("state: %q", res.StateEvents)
	}
	if len(res.AuthEvents) != 1 || string(res.AuthEvents[0]) != `{"type":"c"}` {
		t.Fatalf("auth_chain: %q", res.AuthEvents)
	}
	for _, bad := range []string{``, `[]`, `{"state":[{}`, `{"state":{}}`, `{"state":[1]}`, `{"auth_chain":"x"}`, `{"state":[{"a":1},]}`} {
		if _, err := parseSendJoinAnswer([]byte(bad)); err == nil {
			t.Errorf("%q was taken", bad)
		}
	}
}
