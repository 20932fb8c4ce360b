package homeserver

import (
	"context"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Matrix-level metrics, next to the HTTP ones of requestMetrics (whose
// per-route latency histogram is the send and sync latency: route
// "/_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}" and
// "/_matrix/client/v3/sync"). Served only on metrics_listen. See
// docs/operations.md, Monitoring, and docs/grafana-dashboard.json.

// registerMetrics registers the metrics of the server's parts; call it once
// every part exists.
func (s *Server) registerMetrics() {
	persisted := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "hearth_events_persisted_total",
		Help: "Events committed to rooms, by origin (local or remote), kind (message, state, other) and outcome.",
	}, []string{"origin", "kind", "outcome"})
	suffix := ":" + s.Config.ServerName
	s.Rooms.Observe(func(evs []*rooms.Event) {
		for _, ev := range evs {
			origin := "remote"
			if strings.HasSuffix(ev.Sender, suffix) {
				origin = "local"
			}
			kind := "other"
			switch {
			case ev.IsState():
				kind = "state"
			case ev.Type == "m.room.message" || ev.Type == "m.room.encrypted":
				kind = "message"
			}
			outcome := "accepted"
			switch {
			case ev.Rejected:
				outcome = "rejected"
			case ev.SoftFailed:
				outcome = "soft_failed"
			case ev.Outlier:
				outcome = "outlier"
			}
			persisted.WithLabelValues(origin, kind, outcome).Inc()
		}
	})

	writeTx := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "hearth_db_write_transaction_seconds",
		Help:    "Duration of database write transactions, BEGIN to COMMIT or rollback, by outcome.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5},
	}, []string{"outcome"})
	s.DB.ObserveWriteTx(func(d time.Duration, committed bool) {
		outcome := "committed"
		if !committed {
			outcome = "rolled_back"
		}
		writeTx.WithLabelValues(outcome).Observe(d.Seconds())
	})

	waiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "hearth_sync_waiting", Help: "Long-polling /sync requests waiting for something new.",
	}, func() float64 { return float64(s.Notifier.WaitingSyncs()) })

	s.metrics.MustRegister(persisted, writeTx, waiting, &stateCollector{s: s})
}

// stateCollector reads, at each scrape, what the server holds and what
// waits to be sent: from the database (one count each) and from the
// in-memory state of the caches, pools and federation senders.
type stateCollector struct {
	s           *Server
	statsErrors atomic.Int64
}

var (
	descUsers          = prometheus.NewDesc("hearth_users", "Accounts, by state (active or deactivated).", []string{"state"}, nil)
	descDevices        = prometheus.NewDesc("hearth_devices", "Devices (sessions) of all users.", nil, nil)
	descActiveUsers    = prometheus.NewDesc("hearth_active_users_24h", "Users with a device seen in the last 24 hours.", nil, nil)
	descRooms          = prometheus.NewDesc("hearth_rooms", "Rooms this server knows.", nil, nil)
	descMedia          = prometheus.NewDesc("hearth_local_media", "Media files uploaded to this server.", nil, nil)
	descMediaBytes     = prometheus.NewDesc("hearth_local_media_bytes", "Bytes of media uploaded to this server.", nil, nil)
	descPushQueue      = prometheus.NewDesc("hearth_push_queue", "Notifications waiting to be sent to push gateways.", nil, nil)
	descDelayed        = prometheus.NewDesc("hearth_delayed_events_pending", "Delayed events (MSC4140) scheduled and not yet sent.", nil, nil)
	descFedQueue       = prometheus.NewDesc("hearth_federation_queue", "PDUs and EDUs waiting to be sent, by destination.", []string{"destination"}, nil)
	descASLag          = prometheus.NewDesc("hearth_appservice_lag", "Stream positions an application service's delivery is behind.", []string{"appservice"}, nil)
	descFedFailing     = prometheus.NewDesc("hearth_federation_destination_failing", "Consecutive failed sends to a destination (0: up).", []string{"destination"}, nil)
	descFedFailures    = prometheus.NewDesc("hearth_federation_send_failures_total", "Failed transaction sends, by destination, since start.", []string{"destination"}, nil)
	descFedDests       = prometheus.NewDesc("hearth_federation_destinations", "Destinations sent to since start, by state (up or down).", []string{"state"}, nil)
	descCache          = prometheus.NewDesc("hearth_cache_requests_total", "Cache lookups, by cache and result (hit or miss).", []string{"cache", "result"}, nil)
	descDBConns        = prometheus.NewDesc("hearth_db_connections", "Database connections, by pool (write, read) and state (in_use, idle).", []string{"pool", "state"}, nil)
	descDBWait         = prometheus.NewDesc("hearth_db_wait_seconds_total", "Time spent waiting for a database connection, by pool.", []string{"pool"}, nil)
	descDBWaits        = prometheus.NewDesc("hearth_db_waits_total", "Waits for a database connection, by pool.", []string{"pool"}, nil)
	descStatsErrors    = prometheus.NewDesc("hearth_metrics_database_errors_total", "Scrapes whose database counts failed (see the log).", nil, nil)
	stateCollectorDesc = []*prometheus.Desc{descUsers, descDevices, descActiveUsers, descRooms, descMedia, descMediaBytes,
		descPushQueue, descDelayed, descFedQueue, descASLag, descFedFailing, descFedFailures, descFedDests, descCache,
		descDBConns, descDBWait, descDBWaits, descStatsErrors}
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range stateCollectorDesc {
		ch <- d
	}
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := storage.CollectServerStats(ctx, s.DB.Read(), time.Now().Add(-24*time.Hour).UnixMilli())
	if err != nil {
		// A slow or failing database must not fail the whole scrape: the
		// in-memory metrics still tell what is going on.
		c.statsErrors.Add(1)
		s.Log.Warn("metrics: reading counts from the database", "err", err)
	} else {
		gauge(descUsers, st.Users, "active")
		gauge(descUsers, st.DeactivatedUsers, "deactivated")
		gauge(descDevices, st.Devices)
		gauge(descActiveUsers, st.ActiveUsers)
		gauge(descRooms, st.Rooms)
		gauge(descMedia, st.LocalMedia)
		gauge(descMediaBytes, st.LocalMediaBytes)
		gauge(descPushQueue, st.PushQueue)
		gauge(descDelayed, st.DelayedPending)
		for dest, n := range st.FederationQueue {
			gauge(descFedQueue, n, dest)
		}
		for as, lag := range st.AppServiceLag {
			gauge(descASLag, max(lag, 0), as)
		}
	}
	counter(descStatsErrors, float64(c.statsErrors.Load()))

	up, down := 0, 0
	for _, d := range s.Federation.QueueStatus() {
		gauge(descFedFailing, int64(d.Failing), d.Destination)
		counter(descFedFailures, float64(d.FailedTotal), d.Destination)
		if d.Failing > 0 {
			down++
		} else {
			up++
		}
	}
	gauge(descFedDests, int64(up), "up")
	gauge(descFedDests, int64(down), "down")

	for name, cs := range s.Rooms.CacheStats() {
		counter(descCache, float64(cs.Hits), name, "hit")
		counter(descCache, float64(cs.Misses), name, "miss")
	}
	hits, misses := s.Accounts.TokenCacheStats()
	counter(descCache, float64(hits), "access_tokens", "hit")
	counter(descCache, float64(misses), "access_tokens", "miss")

	write, read := s.DB.PoolStats()
	for name, ps := range map[string]struct {
		inUse, idle, waits int64
		wait               time.Duration
	}{
		"write": {int64(write.InUse), int64(write.Idle), write.WaitCount, write.WaitDuration},
		"read":  {int64(read.InUse), int64(read.Idle), read.WaitCount, read.WaitDuration},
	} {
		gauge(descDBConns, ps.inUse, name, "in_use")
		gauge(descDBConns, ps.idle, name, "idle")
		counter(descDBWaits, float64(ps.waits), name)
		counter(descDBWait, ps.wait.Seconds(), name)
	}
}
