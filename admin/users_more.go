package admin

import (
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// More of the user admin API (Synapse's docs/admin_api/user_admin_api.md).

// GET /_synapse/admin/v1/users/{userId}/memberships: every room with a
// membership of the user, and which.
func (a *API) userMemberships(r *http.Request, c accounts.Caller) (any, error) {
	id, err := a.userParam(r, false)
	if err != nil {
		return nil, err
	}
	m, err := a.db.MembershipsOf(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return map[string]any{"memberships": m}, nil
}

// GET /_synapse/admin/v1/users/{userId}/accountdata.
func (a *API) userAccountData(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	all, err := a.db.AllAccountData(r.Context(), u.UserID)
	if err != nil {
		return nil, err
	}
	global, rooms := map[string]json.RawMessage{}, map[string]map[string]json.RawMessage{}
	for _, d := range all {
		if d.RoomID == "" {
			global[d.Type] = d.Content
			continue
		}
		if rooms[d.RoomID] == nil {
			rooms[d.RoomID] = map[string]json.RawMessage{}
		}
		rooms[d.RoomID][d.Type] = d.Content
	}
	return map[string]any{"account_data": map[string]any{"global": global, "rooms": rooms}}, nil
}

// GET /_synapse/admin/v1/users/{userId}/pushers.
func (a *API) userPushers(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	ps, err := storage.PushersOfUser(r.Context(), a.db.Read(), u.UserID)
	if err != nil {
		return nil, err
	}
	list := make([]map[string]any, 0, len(ps))
	for _, p := range ps {
		data := map[string]any{}
		_ = json.Unmarshal([]byte(p.Data), &data)
		list = append(list, map[string]any{"app_display_name": p.AppDisplayName, "app_id": p.AppID, "data": data,
			"device_display_name": p.DeviceDisplayName, "kind": p.Kind, "lang": p.Lang, "profile_tag": p.ProfileTag,
			"pushkey": p.PushKey, "pushkey_ts": p.PushKeyTS, "user_name": p.UserID, "device_id": p.DeviceID})
	}
	return map[string]any{"pushers": list, "total": len(list)}, nil
}

// GET /_synapse/admin/v1/users/{userId}/sent_invite_count?from_ts=.
func (a *API) sentInviteCount(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	from, err := int64Param(r, "from_ts", 0)
	if err != nil {
		return nil, err
	}
	n, err := a.db.SentInviteCount(r.Context(), u.UserID, from)
	if err != nil {
		return nil, err
	}
	return map[string]int{"invite_count": n}, nil
}

// GET /_synapse/admin/v1/users/{userId}/cumulative_joined_room_count.
func (a *API) joinedRoomCount(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	n, err := a.db.JoinedRoomCountEver(r.Context(), u.UserID)
	if err != nil {
		return nil, err
	}
	return map[string]int{"cumulative_joined_room_count": n}, nil
}

// int64Param reads an optional non-negative integer query parameter.
func int64Param(r *http.Request, name string, def int64) (int64, error) {
	s := r.URL.Query().Get(name)
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, mxhttp.InvalidParam("Query parameter %s must be a string representing a non-negative integer", name)
	}
	return n, nil
}

// GET /_synapse/admin/v1/search_users/{userId}?term=: users whose ID or
// display name contain term (Synapse's older search API).
func (a *API) searchUsers(r *http.Request, c accounts.Caller) (any, error) {
	if _, err := a.userParam(r, true); err != nil {
		return nil, err
	}
	term := r.URL.Query().Get("term")
	if term == "" {
		return nil, mxhttp.MissingParam("Missing string query argument term")
	}
	users, _, err := a.db.ListUsers(r.Context(), storage.UserQuery{Name: term, OrderBy: "name", Limit: 100})
	if err != nil {
		return nil, err
	}
	list := make([]map[string]any, 0, len(users))
	for _, u := range users {
		list = append(list, map[string]any{"name": u.UserID, "is_guest": u.IsGuest, "admin": u.IsAdmin,
			"user_type": u.UserType, "deactivated": u.Deactivated, "displayname": u.DisplayName, "avatar_url": u.AvatarURL})
	}
	return list, nil
}

// POST /_synapse/admin/v1/users/{userId}/login {"valid_until_ms"}: an
// access token of the user for the admin, on a new device of its own
// (Hearth's tokens always belong to a device). Not for oneself.
func (a *API) loginAsUser(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	if u.UserID == c.UserID {
		return nil, mxhttp.BadJSON("Cannot use admin API to login as self")
	}
	if u.Deactivated {
		return nil, mxhttp.BadJSON("Cannot log in as a deactivated user")
	}
	var req struct {
		ValidUntil *int64 `json:"valid_until_ms"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	now := time.Now()
	if req.ValidUntil != nil && *req.ValidUntil <= now.UnixMilli() {
		return nil, mxhttp.InvalidParam("'valid_until_ms' is in the past")
	}
	var login accounts.Login
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		var err error
		login, err = a.accounts.LoginDevice(r.Context(), tx, accounts.NewDevice{UserID: u.UserID, DisplayName: "Admin login by " + c.UserID}, now)
		if err != nil || req.ValidUntil == nil {
			return err
		}
		return storage.SetDeviceTokensExpiry(r.Context(), tx, u.UserID, login.DeviceID, *req.ValidUntil)
	})
	if err != nil {
		return nil, err
	}
	return map[string]string{"access_token": login.AccessToken}, nil
}

// POST and DELETE /_synapse/admin/v1/users/{userId}/shadow_ban: a
// shadow-banned user's sends, state changes and invites look successful
// to them but reach nobody (clientapi checks the flag).
func (a *API) shadowBan(ban bool) handler {
	return func(r *http.Request, c accounts.Caller) (any, error) {
		u, err := a.existingUser(r)
		if err != nil {
			return nil, err
		}
		if err := a.accounts.SetShadowBanned(r.Context(), u.UserID, ban); err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
}

// GET, POST and DELETE /_synapse/admin/v1/users/{userId}/override_ratelimit:
// the user's own message rate limit (0 and 0: none).
func (a *API) getRatelimit(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	o, err := a.db.GetRatelimitOverride(r.Context(), u.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return struct{}{}, nil
	}
	if err != nil {
		return nil, err
	}
	return map[string]int64{"messages_per_second": o.MessagesPerSecond, "burst_count": o.BurstCount}, nil
}

func (a *API) setRatelimit(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		MessagesPerSecond *json.Number `json:"messages_per_second"`
		BurstCount        *json.Number `json:"burst_count"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	num := func(n *json.Number, name string) (int64, error) {
		if n == nil {
			return 0, nil
		}
		v, err := n.Int64()
		if err != nil || v < 0 {
			return 0, mxhttp.InvalidParam("%s must be a positive integer", name)
		}
		return v, nil
	}
	var o storage.RatelimitOverride
	if o.MessagesPerSecond, err = num(req.MessagesPerSecond, "messages_per_second"); err != nil {
		return nil, err
	}
	if o.BurstCount, err = num(req.BurstCount, "burst_count"); err != nil {
		return nil, err
	}
	if err := a.accounts.SetMessageLimit(r.Context(), u.UserID, &o); err != nil {
		return nil, err
	}
	return map[string]int64{"messages_per_second": o.MessagesPerSecond, "burst_count": o.BurstCount}, nil
}

func (a *API) deleteRatelimit(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	if err := a.accounts.SetMessageLimit(r.Context(), u.UserID, nil); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// PUT /_synapse/admin/v2/users/{userId}/devices/{deviceId} {"display_name"}.
func (a *API) putDevice(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	dev := pathParam(r, "deviceId")
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		ok, err := storage.DeviceExists(r.Context(), tx, u.UserID, dev)
		if err != nil {
			return err
		}
		if !ok {
			return mxhttp.NotFound("No device found")
		}
		if req.DisplayName == nil {
			return nil
		}
		return storage.SetDeviceDisplayName(r.Context(), tx, u.UserID, dev, req.DisplayName)
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// POST /_synapse/admin/v2/users/{userId}/devices {"device_id"}: creates
// a device with no access token (Synapse's, for MAS).
func (a *API) createDevice(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		DeviceID string `json:"device_id"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.DeviceID == "" {
		return nil, mxhttp.MissingParam("Missing device_id")
	}
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		ok, err := storage.DeviceExists(r.Context(), tx, u.UserID, req.DeviceID)
		if err != nil || ok {
			return err
		}
		return a.accounts.AddDevice(r.Context(), tx, u.UserID, req.DeviceID, "", time.Now())
	})
	if err != nil {
		return nil, err
	}
	return created(struct{}{}), nil
}

// GET /_synapse/admin/v1/auth_providers/{provider}/users/{externalId}:
// the account a company SSO identity (provider id, subject) signs in to.
func (a *API) userByExternalID(r *http.Request, c accounts.Caller) (any, error) {
	userID, err := storage.SSOUserByProvider(r.Context(), a.db.Read(), pathParam(r, "provider"), pathParam(r, "externalId"))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("User not found")
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"user_id": userID}, nil
}

// POST /_synapse/admin/v1/users/{userId}/_allow_cross_signing_replacement_without_uia:
// for ten minutes the user may replace their master cross-signing key
// without user-interactive auth (how Synapse lets a user whose password
// is managed elsewhere reset their keys).
func (a *API) allowCrossSigningReplacement(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	keys, err := storage.CrossSigningKeys(r.Context(), a.db.Read(), u.UserID)
	if err != nil {
		return nil, err
	}
	if _, ok := keys["master"]; !ok {
		return nil, mxhttp.NotFound("User has no master cross-signing key")
	}
	until := time.Now().Add(10 * time.Minute).UnixMilli()
	if err := a.db.AllowCrossSigningReplacement(r.Context(), u.UserID, until); err != nil {
		return nil, err
	}
	return map[string]int64{"updatable_without_uia_before_ms": until}, nil
}

// GET /_synapse/admin/v1/threepid/{medium}/users/{address}: the user an
// identifier is bound to (email addresses compared in lower case, as they
// are stored).
func (a *API) userByThreePID(r *http.Request, c accounts.Caller) (any, error) {
	medium, address := pathParam(r, "medium"), pathParam(r, "address")
	if medium == "email" {
		address = strings.ToLower(address)
	}
	id, err := storage.UserOfThreePID(r.Context(), a.db.Read(), medium, address)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("User not found")
	}
	if err != nil {
		return nil, err
	}
	return map[string]string{"user_id": id}, nil
}

// threePIDsJSON is a user's identifiers as the user details show them.
func (a *API) threePIDsJSON(r *http.Request, userID string) ([]map[string]any, error) {
	ts, err := storage.ThreePIDsOfUser(r.Context(), a.db.Read(), userID)
	out := make([]map[string]any, 0, len(ts))
	for _, t := range ts {
		out = append(out, map[string]any{"medium": t.Medium, "address": t.Address, "added_at": t.AddedTS, "validated_at": t.ValidatedTS})
	}
	return out, err
}

// PUT /_synapse/admin/v1/suspend/{userId} {"suspend"}: suspends or
// unsuspends a local account (the client API's account suspension).
func (a *API) suspendUser(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Suspend *bool `json:"suspend"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Suspend == nil {
		return nil, mxhttp.MissingParam("Missing key 'suspend'")
	}
	if err := a.accounts.SetSuspended(r.Context(), u.UserID, *req.Suspend); err != nil {
		return nil, err
	}
	return map[string]bool{"user_" + u.UserID + "_suspended": *req.Suspend}, nil
}
