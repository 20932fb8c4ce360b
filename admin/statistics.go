package admin

import (
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Statistics (Synapse's docs/admin_api/statistics.md).

// GET /_synapse/admin/v1/statistics/users/media: per uploader, the count
// and bytes of their media; from_ts, until_ts, search_term, order_by
// (user_id, displayname, media_length, media_count), dir, paging.
func (a *API) userMediaStatistics(r *http.Request, c accounts.Caller) (any, error) {
	from, limit, err := paging(r, 100)
	if err != nil {
		return nil, err
	}
	q := storage.UserMediaStatsQuery{From: from, Limit: limit, SearchTerm: r.URL.Query().Get("search_term"),
		OrderBy: r.URL.Query().Get("order_by")}
	if q.OrderBy == "" {
		q.OrderBy = "user_id"
	}
	if _, ok := storage.UserMediaStatsOrder[q.OrderBy]; !ok {
		return nil, mxhttp.InvalidParam("Unknown value for order_by: %s", q.OrderBy)
	}
	if q.FromTS, err = int64Param(r, "from_ts", 0); err != nil {
		return nil, err
	}
	if q.UntilTS, err = int64Param(r, "until_ts", 0); err != nil {
		return nil, err
	}
	if q.UntilTS != 0 && q.UntilTS < q.FromTS {
		return nil, mxhttp.InvalidParam("Query parameter until_ts must be greater than from_ts.")
	}
	if _, ok := r.URL.Query()["search_term"]; ok && q.SearchTerm == "" {
		return nil, mxhttp.InvalidParam("Query parameter search_term cannot be an empty string.")
	}
	if q.Backwards, err = dirParam(r, "f"); err != nil {
		return nil, err
	}
	stats, total, err := a.db.MediaStatsByUser(r.Context(), q)
	if err != nil {
		return nil, err
	}
	list := make([]map[string]any, 0, len(stats))
	for _, s := range stats {
		list = append(list, map[string]any{"user_id": s.UserID, "displayname": emptyNil(s.DisplayName),
			"media_count": s.MediaCount, "media_length": s.MediaLength})
	}
	body := map[string]any{"users": list, "total": total}
	nextToken(body, from, len(stats), total, false)
	return body, nil
}

// GET /_synapse/admin/v1/statistics/database/rooms: the ten rooms whose
// events take the most bytes (Synapse estimates its tables' sizes; the
// events' JSON is the bulk of a room here).
func (a *API) largestRooms(r *http.Request, c accounts.Caller) (any, error) {
	rs, err := a.db.LargestRooms(r.Context())
	if err != nil {
		return nil, err
	}
	list := make([]map[string]any, 0, len(rs))
	for _, s := range rs {
		list = append(list, map[string]any{"room_id": s.RoomID, "estimated_size": s.Bytes})
	}
	return map[string]any{"rooms": list}, nil
}
