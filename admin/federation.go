package admin

import (
	"errors"
	"net/http"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Federation destinations (Synapse's docs/admin_api/federation.md): the
// servers this one shares rooms with or has sent to, and the retry state
// of those it fails to reach. Hearth does not track the last event each
// destination accepted: last_successful_stream_ordering and the rooms'
// stream_ordering are null.

// destinations maps every known destination to its rooms shared with us.
func (a *API) destinations(r *http.Request) (map[string][]string, map[string]storage.DestinationRetry, error) {
	out := map[string][]string{}
	members, err := a.db.JoinedMembers(r.Context())
	if err != nil {
		return nil, nil, err
	}
	for _, m := range members {
		_, server, ok := strings.Cut(m[1], ":")
		if !ok || server == a.cfg.ServerName {
			continue
		}
		if l := out[server]; len(l) == 0 || l[len(l)-1] != m[0] {
			out[server] = append(l, m[0])
		}
	}
	queued, err := storage.QueueDestinations(r.Context(), a.db.Read())
	if err != nil {
		return nil, nil, err
	}
	retries, err := a.db.DestinationRetries(r.Context())
	if err != nil {
		return nil, nil, err
	}
	for _, d := range queued {
		if _, ok := out[d]; !ok {
			out[d] = nil
		}
	}
	for d := range retries {
		if _, ok := out[d]; !ok {
			out[d] = nil
		}
	}
	return out, retries, nil
}

func destinationJSON(dest string, rt storage.DestinationRetry, failing bool) map[string]any {
	j := map[string]any{"destination": dest, "retry_last_ts": 0, "retry_interval": 0, "failure_ts": nil,
		"last_successful_stream_ordering": nil}
	if failing {
		j["retry_last_ts"], j["retry_interval"], j["failure_ts"] = rt.RetryLastTS, rt.RetryInterval, rt.FailureTS
	}
	return j
}

// GET /_synapse/admin/v1/federation/destinations: destination (substring
// filter), order_by, dir, paging.
func (a *API) listDestinations(r *http.Request, c accounts.Caller) (any, error) {
	from, limit, err := paging(r, 100)
	if err != nil {
		return nil, err
	}
	backwards, err := dirParam(r, "f")
	if err != nil {
		return nil, err
	}
	orderBy := r.URL.Query().Get("order_by")
	if orderBy == "" {
		orderBy = "destination"
	}
	switch orderBy {
	case "destination", "retry_last_ts", "retry_interval", "failure_ts", "last_successful_stream_ordering":
	default:
		return nil, mxhttp.InvalidParam("Unknown value for order_by: %s", orderBy)
	}
	all, retries, err := a.destinations(r)
	if err != nil {
		return nil, err
	}
	filter := strings.ToLower(r.URL.Query().Get("destination"))
	var names []string
	for d := range all {
		if strings.Contains(strings.ToLower(d), filter) {
			names = append(names, d)
		}
	}
	key := func(d string) int64 {
		rt := retries[d]
		switch orderBy {
		case "retry_last_ts":
			return rt.RetryLastTS
		case "retry_interval":
			return rt.RetryInterval
		case "failure_ts":
			return rt.FailureTS
		}
		return 0
	}
	sort.Slice(names, func(i, j int) bool {
		ki, kj := key(names[i]), key(names[j])
		if ki != kj {
			return (ki < kj) != backwards
		}
		return (names[i] < names[j]) != backwards
	})
	total := len(names)
	page := names[min(from, total):min(from+limit, total)]
	list := make([]map[string]any, 0, len(page))
	for _, d := range page {
		rt, failing := retries[d]
		list = append(list, destinationJSON(d, rt, failing))
	}
	body := map[string]any{"destinations": list, "total": total}
	nextToken(body, from, len(page), total, true)
	return body, nil
}

// destinationParam is {destination}: a server name this server knows.
func (a *API) destinationParam(r *http.Request) (string, map[string][]string, map[string]storage.DestinationRetry, error) {
	dest := pathParam(r, "destination")
	if _, _, ok := spec.ParseAndValidateServerName(spec.ServerName(dest)); !ok {
		return "", nil, nil, mxhttp.InvalidParam("%q is not a valid server name", dest)
	}
	all, retries, err := a.destinations(r)
	if err != nil {
		return "", nil, nil, err
	}
	if _, ok := all[dest]; !ok {
		return "", nil, nil, mxhttp.NotFound("Unknown destination")
	}
	return dest, all, retries, nil
}

// GET /_synapse/admin/v1/federation/destinations/{destination}.
func (a *API) getDestination(r *http.Request, c accounts.Caller) (any, error) {
	dest, _, retries, err := a.destinationParam(r)
	if err != nil {
		return nil, err
	}
	rt, failing := retries[dest]
	return destinationJSON(dest, rt, failing), nil
}

// GET /_synapse/admin/v1/federation/destinations/{destination}/rooms.
func (a *API) destinationRooms(r *http.Request, c accounts.Caller) (any, error) {
	from, limit, err := paging(r, 100)
	if err != nil {
		return nil, err
	}
	backwards, err := dirParam(r, "f")
	if err != nil {
		return nil, err
	}
	dest, all, _, err := a.destinationParam(r)
	if err != nil {
		return nil, err
	}
	rooms := append([]string(nil), all[dest]...)
	sort.Strings(rooms)
	if backwards {
		sort.Sort(sort.Reverse(sort.StringSlice(rooms)))
	}
	total := len(rooms)
	page := rooms[min(from, total):min(from+limit, total)]
	list := make([]map[string]any, 0, len(page))
	for _, id := range page {
		list = append(list, map[string]any{"room_id": id, "stream_ordering": nil})
	}
	body := map[string]any{"rooms": list, "total": total}
	nextToken(body, from, len(page), total, true)
	return body, nil
}

// POST /_synapse/admin/v1/federation/destinations/{destination}/reset_connection:
// forgets the failures and has the sender try again now.
func (a *API) resetDestination(r *http.Request, c accounts.Caller) (any, error) {
	dest, _, _, err := a.destinationParam(r)
	if err != nil {
		return nil, err
	}
	if _, err := a.db.DestinationRetryOf(r.Context(), dest); errors.Is(err, storage.ErrNotFound) {
		return struct{}{}, nil // not failing: nothing to reset
	} else if err != nil {
		return nil, err
	}
	if err := a.db.ClearDestinationFailure(r.Context(), dest); err != nil {
		return nil, err
	}
	if a.senders != nil {
		a.senders.ResetBackoff(spec.ServerName(dest))
	}
	return struct{}{}, nil
}
