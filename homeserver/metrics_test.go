package homeserver_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
)

// scrape reads the metrics listener's /metrics, parsed.
func scrape(t *testing.T, metricsURL string) map[string]*dto.MetricFamily {
	t.Helper()
	r := hearthtest.Do(t, http.DefaultClient, "GET", metricsURL+"/metrics", "", nil)
	if r.Status != http.StatusOK {
		t.Fatalf("scrape: %d %s", r.Status, r.Body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(bytes.NewReader(r.Body))
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	return fams
}

// value is the value of the sample of family name whose labels include
// labels ("k=v" each); ok is false when there is none.
func value(fams map[string]*dto.MetricFamily, name string, labels ...string) (float64, bool) {
	f, ok := fams[name]
	if !ok {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for _, kv := range labels {
			k, v, _ := strings.Cut(kv, "=")
			if have[k] != v {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.GetCounter().GetValue(), true
		case m.Gauge != nil:
			return m.GetGauge().GetValue(), true
		case m.Histogram != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// waitMetric scrapes until cond holds for the metric's value.
func waitMetric(t *testing.T, metricsURL, name string, cond func(float64) bool, labels ...string) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		fams := scrape(t, metricsURL)
		if v, ok := value(fams, name, labels...); ok && cond(v) {
			return fams
		}
		if time.Now().After(deadline) {
			v, ok := value(fams, name, labels...)
			t.Fatalf("%s%v: %v (present %v), condition never held", name, labels, v, ok)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMatrixMetrics drives real traffic through two federating servers
// and checks that /metrics on the metrics listener tells what happened:
// events persisted, a waiting sync, media stored, a delayed event
// pending, work queued for a destination that is down and its failures,
// cache and database activity.
func TestMatrixMetrics(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		// A bridge that is down: its delivery falls behind.
		reg := filepath.Join(t.TempDir(), "bridge.yaml")
		if err := os.WriteFile(reg, []byte("id: bridge\nurl: http://127.0.0.1:1\nas_token: as_token\nhs_token: hs_token\n"+
			"sender_localpart: bridgebot\nnamespaces:\n  users: []\n  aliases: []\n  rooms:\n    - exclusive: false\n      regex: '!.*'\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fed := hearthtest.NewFederation(t, b, 2, func(i int, c *config.Config) {
			if i == 0 {
				c.AppServiceConfigFiles = []string{reg}
			}
		})
		hs1, hs2 := fed[0], fed[1]
		metrics := httptest.NewServer(hs1.MetricsHandler())
		defer metrics.Close()
		_, alice := hs1.RegisterUser(t, "alice")
		bobID, bob := hs2.RegisterUser(t, "bob")

		r := hs1.Do(t, "POST", "/_matrix/client/v3/createRoom", alice, map[string]any{"preset": "public_chat"})
		hearthtest.Expect(t, r, 200, "")
		room := url.PathEscape(r.JSON["room_id"].(string))
		r = hs2.Do(t, "POST", "/_matrix/client/v3/join/"+room+"?server_name="+url.QueryEscape(hs1.Config.ServerName), bob, map[string]any{})
		hearthtest.Expect(t, r, 200, "")
		for i := range 3 {
			hearthtest.Expect(t, hs1.Do(t, "PUT", fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/m%d", room, i), alice,
				map[string]any{"msgtype": "m.text", "body": "hello"}), 200, "")
		}
		fams := waitMetric(t, metrics.URL, "hearth_events_persisted_total", func(v float64) bool { return v >= 3 },
			"origin=local", "kind=message", "outcome=accepted")
		if v, _ := value(fams, "hearth_events_persisted_total", "origin=remote", "kind=state", "outcome=accepted"); v < 1 {
			t.Errorf("bob's join from the other server is not counted as a remote state event: %v", v)
		}
		if v, _ := value(fams, "hearth_users", "state=active"); v != 2 {
			t.Errorf("hearth_users{active} = %v, want 2 (alice and the bridge bot)", v)
		}
		if v, _ := value(fams, "hearth_rooms"); v < 1 {
			t.Errorf("hearth_rooms = %v", v)
		}
		if v, _ := value(fams, "hearth_active_users_24h"); v != 1 {
			t.Errorf("hearth_active_users_24h = %v, want 1", v)
		}

		// Media: the bytes of an upload.
		upload := bytes.Repeat([]byte("x"), 1234)
		req, _ := http.NewRequest("POST", hs1.URL+"/_matrix/media/v3/upload?filename=a.txt", bytes.NewReader(upload))
		req.Header.Set("Authorization", "Bearer "+alice)
		req.Header.Set("Content-Type", "text/plain")
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("upload: %v %v", err, resp)
		}
		resp.Body.Close()

		// A delayed event, an hour away.
		hearthtest.Expect(t, hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/later?org.matrix.msc4140.delay=3600000",
			alice, map[string]any{"msgtype": "m.text", "body": "later"}), 200, "")
		fams = scrape(t, metrics.URL)
		if v, _ := value(fams, "hearth_local_media_bytes"); v != 1234 {
			t.Errorf("hearth_local_media_bytes = %v, want 1234", v)
		}
		if v, _ := value(fams, "hearth_delayed_events_pending"); v != 1 {
			t.Errorf("hearth_delayed_events_pending = %v, want 1", v)
		}

		// A sync waiting for news shows, and leaves when news comes.
		r = hs1.Do(t, "GET", "/_matrix/client/v3/sync", alice, nil)
		hearthtest.Expect(t, r, 200, "")
		since := r.JSON["next_batch"].(string)
		done := make(chan hearthtest.Response, 1)
		go func() {
			done <- hs1.Do(t, "GET", "/_matrix/client/v3/sync?timeout=20000&since="+url.QueryEscape(since), alice, nil)
		}()
		waitMetric(t, metrics.URL, "hearth_sync_waiting", func(v float64) bool { return v >= 1 })

		// The other server goes down: what alice sends now waits for it.
		hs2.FederationDown(t)
		hearthtest.Expect(t, hs1.Do(t, "PUT", "/_matrix/client/v3/rooms/"+room+"/send/m.room.message/down", alice,
			map[string]any{"msgtype": "m.text", "body": "are you there?"}), 200, "")
		if r := <-done; r.Status != 200 {
			t.Fatalf("waiting sync: %d", r.Status)
		}
		dest := "destination=" + hs2.Config.ServerName
		fams = waitMetric(t, metrics.URL, "hearth_federation_send_failures_total", func(v float64) bool { return v >= 1 }, dest)
		if v, _ := value(fams, "hearth_federation_queue", dest); v < 1 {
			t.Errorf("hearth_federation_queue{%s} = %v, want the unsent event", dest, v)
		}
		if v, _ := value(fams, "hearth_federation_destination_failing", dest); v < 1 {
			t.Errorf("hearth_federation_destination_failing{%s} = %v", dest, v)
		}
		if v, _ := value(fams, "hearth_federation_destinations", "state=down"); v != 1 {
			t.Errorf("hearth_federation_destinations{down} = %v, want 1", v)
		}
		if v, _ := value(fams, "hearth_appservice_lag", "appservice=bridge"); v < 1 {
			t.Errorf("hearth_appservice_lag{bridge} = %v, want the undelivered events", v)
		}
		if v, _ := value(fams, "hearth_sync_waiting"); v != 0 {
			t.Errorf("hearth_sync_waiting = %v after the sync returned", v)
		}
		if v, _ := value(fams, "hearth_cache_requests_total", "cache=access_tokens", "result=hit"); v < 1 {
			t.Errorf("no access-token cache hit counted: %v", v)
		}
		if v, _ := value(fams, "hearth_cache_requests_total", "cache=events", "result=miss"); v < 1 {
			t.Errorf("no event cache lookups counted: %v", v)
		}
		if v, _ := value(fams, "hearth_db_write_transaction_seconds", "outcome=committed"); v < 5 {
			t.Errorf("write transactions observed: %v", v)
		}
		if _, ok := value(fams, "hearth_db_connections", "pool=write", "state=idle"); !ok {
			t.Error("no database pool metrics")
		}
		if v, _ := value(fams, "hearth_http_request_duration_seconds", "route=/_matrix/client/v3/sync"); v < 2 {
			t.Errorf("sync latency histogram count %v", v)
		}
		_ = bobID
		checkDashboard(t, fams)
	})
}

// checkDashboard fails when docs/grafana-dashboard.json plots a hearth_
// metric the server does not export (a renamed metric would leave an
// empty panel).
func checkDashboard(t *testing.T, fams map[string]*dto.MetricFamily) {
	t.Helper()
	b, err := os.ReadFile("../docs/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if len(dash.Panels) == 0 {
		t.Fatal("grafana-dashboard.json has no panels")
	}
	names := regexp.MustCompile(`\b(hearth|process|go)_[a-z0-9_]+`)
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, n := range names.FindAllString(tg.Expr, -1) {
				base := n
				for _, suf := range []string{"_bucket", "_count", "_sum"} {
					if _, ok := fams[base]; !ok {
						base = strings.TrimSuffix(base, suf)
					}
				}
				if _, ok := fams[base]; !ok {
					t.Errorf("dashboard panel %q uses %s, which /metrics does not export", p.Title, n)
				}
			}
		}
	}
}
