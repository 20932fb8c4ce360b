package storage

import (
	"context"
	"fmt"
)

// ServerStats are the counts the metrics endpoint reports from the
// database: what is stored and what is waiting to be sent. Each is one
// indexed or small-table count, cheap enough for a scrape every few
// seconds.
type ServerStats struct {
	Users, DeactivatedUsers int64
	Devices                 int64
	// ActiveUsers are users with a device seen since the cutoff given.
	ActiveUsers int64
	Rooms       int64
	// LocalMediaBytes is the size of media uploaded here (not cached
	// remote media); LocalMedia their number.
	LocalMedia, LocalMediaBytes int64
	// PushQueue is the notifications waiting for push gateways.
	PushQueue int64
	// DelayedPending is the delayed events scheduled and not yet sent.
	DelayedPending int64
	// FederationQueue is the PDUs and EDUs waiting per destination.
	FederationQueue map[string]int64
	// AppServiceLag is, per application service, how many stream
	// positions its delivery is behind the newest event.
	AppServiceLag map[string]int64
}

// CollectServerStats reads ServerStats; activeSince is a time in ms.
func CollectServerStats(ctx context.Context, q Reader, activeSince int64) (ServerStats, error) {
	var s ServerStats
	for _, c := range []struct {
		dst   *int64
		query string
		args  []any
	}{
		{&s.Users, `SELECT COUNT(*) FROM users WHERE NOT deactivated`, nil},
		{&s.DeactivatedUsers, `SELECT COUNT(*) FROM users WHERE deactivated`, nil},
		{&s.Devices, `SELECT COUNT(*) FROM devices`, nil},
		{&s.ActiveUsers, `SELECT COUNT(DISTINCT user_id) FROM devices WHERE last_seen_ts >= $1`, []any{activeSince}},
		{&s.Rooms, `SELECT COUNT(*) FROM rooms`, nil},
		{&s.LocalMedia, `SELECT COUNT(*) FROM media WHERE uploader IS NOT NULL AND size IS NOT NULL`, nil},
		{&s.LocalMediaBytes, `SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM media WHERE uploader IS NOT NULL`, nil},
		{&s.PushQueue, `SELECT COUNT(*) FROM push_queue`, nil},
		{&s.DelayedPending, `SELECT COUNT(*) FROM delayed_events WHERE status IN ('scheduled', 'sending')`, nil},
	} {
		if err := q.QueryRowContext(ctx, c.query, c.args...).Scan(c.dst); err != nil {
			return s, fmt.Errorf("server stats: %w", err)
		}
	}
	var err error
	s.FederationQueue, err = queryMap[string, int64](ctx, q, "federation queue depth", `SELECT destination, CAST(SUM(n) AS BIGINT) FROM (
		SELECT destination, COUNT(*) AS n FROM federation_queue_pdus GROUP BY destination
		UNION ALL SELECT destination, COUNT(*) AS n FROM federation_queue_edus GROUP BY destination) q GROUP BY destination`)
	if err != nil {
		return s, err
	}
	s.AppServiceLag, err = queryMap[string, int64](ctx, q, "appservice lag", `SELECT a.as_id,
		COALESCE((SELECT MAX(stream_pos) FROM events), 0) - a.delivered_pos FROM appservice_streams a`)
	return s, err
}
