package clientapi

import (
	"encoding/json"
	"net/http"
	"sort"
	"strings"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// User directory (client-server API, User directory) and mutual rooms.

const (
	defaultUserDirectoryLimit = 10
	maxUserDirectoryLimit     = 100
)

type userDirectoryResult struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// POST /v3/user_directory/search: the users who share a joined room with
// the caller or are joined to a public room (join rule public, or history
// visibility world_readable), matched case-insensitively on user ID and
// display name. Local users are shown with their global profile, never a
// per-room name; remote users with the name of their membership event.
//
// The caller is a result only as a member of a public room: the spec's
// "users who are joined to rooms ... that have a public join rule" includes
// them there (Complement's msc3902 user-directory test finds the searcher),
// while sharing a room with oneself is no reason (Complement's csapi
// directory tests expect only the other user). Synapse behaves the same
// way: its users_in_public_rooms holds the searcher, users_who_share_private_rooms
// never pairs a user with themself.
func (a *API) searchUserDirectory(r *http.Request, c accounts.Caller) (any, error) {
	var body struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if body.SearchTerm == nil {
		return nil, mxhttp.MissingParam("search_term is required")
	}
	limit := defaultUserDirectoryLimit
	if body.Limit != nil {
		if *body.Limit < 0 {
			return nil, mxhttp.InvalidParam("limit must not be negative")
		}
		limit = min(*body.Limit, maxUserDirectoryLimit)
	}
	ctx := r.Context()
	roomIDs, err := a.rooms.JoinedRooms(ctx, c.UserID)
	if err != nil {
		return nil, err
	}
	public, err := a.findableRooms(r)
	if err != nil {
		return nil, err
	}
	callerPublic := false
	for _, id := range roomIDs {
		callerPublic = callerPublic || public[id]
	}
	for id := range public {
		roomIDs = append(roomIDs, id)
	}
	users, err := storage.JoinedMembersOfRooms(ctx, a.db.Read(), roomIDs)
	if err != nil {
		return nil, err
	}
	term := strings.ToLower(strings.TrimSpace(*body.SearchTerm))
	results := []userDirectoryResult{}
	for _, u := range users {
		if u.UserID == c.UserID && !callerPublic {
			continue
		}
		res := userDirectoryResult{UserID: u.UserID, DisplayName: u.DisplayName, AvatarURL: u.AvatarURL}
		if !a.isLocalUser(u.UserID) {
			var ev struct {
				Content struct {
					DisplayName *string `json:"displayname"`
					AvatarURL   *string `json:"avatar_url"`
				} `json:"content"`
			}
			_ = json.Unmarshal(u.MemberJSON, &ev)
			res.DisplayName, res.AvatarURL = ev.Content.DisplayName, ev.Content.AvatarURL
		}
		name := ""
		if res.DisplayName != nil {
			name = strings.ToLower(*res.DisplayName)
		}
		if strings.Contains(strings.ToLower(u.UserID), term) || strings.Contains(name, term) {
			results = append(results, res)
		}
	}
	sort.Slice(results, func(i, j int) bool { return results[i].UserID < results[j].UserID })
	limited := len(results) > limit
	if limited {
		results = results[:limit]
	}
	return map[string]any{"results": results, "limited": limited}, nil
}

// findableRooms is the set of rooms whose joined members every user may find:
// join rule public or history visibility world_readable (client-server
// API, User directory).
func (a *API) findableRooms(r *http.Request) (map[string]bool, error) {
	out := map[string]bool{}
	for _, c := range []struct{ typ, field, value string }{
		{spec.MRoomJoinRules, "join_rule", spec.Public},
		{spec.MRoomHistoryVisibility, "history_visibility", "world_readable"},
	} {
		rooms, err := storage.CurrentStateOfType(r.Context(), a.db.Read(), c.typ)
		if err != nil {
			return nil, err
		}
		for roomID, js := range rooms {
			var ev struct {
				Content map[string]any `json:"content"`
			}
			if json.Unmarshal(js, &ev) == nil && ev.Content[c.field] == c.value {
				out[roomID] = true
			}
		}
	}
	return out, nil
}

// GET /v1/mutual_rooms?user_id=: the rooms both users are joined to, in
// one batch (no next_batch).
func (a *API) mutualRooms(r *http.Request, c accounts.Caller) (any, error) {
	q := r.URL.Query()
	other := q.Get("user_id")
	if other == "" {
		return nil, mxhttp.MissingParam("user_id is required")
	}
	if _, err := spec.NewUserID(other, true); err != nil {
		return nil, mxhttp.InvalidParam("Invalid user_id %q", other)
	}
	if other == c.UserID {
		return nil, mxhttp.InvalidParam("user_id must not be your own user ID")
	}
	if q.Get("from") != "" {
		return nil, mxhttp.InvalidParam("Unknown pagination token")
	}
	mine, err := a.rooms.JoinedRooms(r.Context(), c.UserID)
	if err != nil {
		return nil, err
	}
	theirs, err := a.rooms.JoinedRooms(r.Context(), other)
	if err != nil {
		return nil, err
	}
	in := map[string]bool{}
	for _, id := range theirs {
		in[id] = true
	}
	joined := []string{}
	for _, id := range mine {
		if in[id] {
			joined = append(joined, id)
		}
	}
	sort.Strings(joined)
	return map[string]any{"joined": joined, "count": len(joined)}, nil
}
