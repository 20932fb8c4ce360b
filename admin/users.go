package admin

import (
	"database/sql"
	"errors"
	"net/http"
	"strings"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Users (Synapse's docs/admin_api/user_admin_api.md).

// userJSON is a user as the list shows it (creation_ts in milliseconds).
func userJSON(u storage.AdminUser) map[string]any {
	return map[string]any{
		"name": u.UserID, "is_guest": u.IsGuest, "admin": u.IsAdmin, "user_type": u.UserType,
		"deactivated": u.Deactivated, "erased": u.Erased, "shadow_banned": u.ShadowBanned, "locked": u.Locked, "approved": true,
		"displayname": u.DisplayName, "avatar_url": u.AvatarURL, "creation_ts": u.CreatedTS, "last_seen_ts": u.LastSeenTS,
	}
}

// GET /_synapse/admin/v2/users and v3: v2's deactivated=true includes
// deactivated users (default: excluded); v3's filters on it (default: all).
func (a *API) listUsers(version int) handler {
	return func(r *http.Request, c accounts.Caller) (any, error) {
		from, limit, err := paging(r, 100)
		if err != nil {
			return nil, err
		}
		q := storage.UserQuery{From: from, Limit: limit, UserID: r.URL.Query().Get("user_id"), Name: r.URL.Query().Get("name")}
		if q.Name != "" {
			q.UserID = "" // Synapse: user_id is ignored when name is given
		}
		guests, err := boolParam(r, "guests")
		if err != nil {
			return nil, err
		}
		if guests != nil && !*guests {
			q.Guests = guests // true (the default) includes guests: no filter
		}
		if q.Admins, err = boolParam(r, "admins"); err != nil {
			return nil, err
		}
		deact, err := boolParam(r, "deactivated")
		if err != nil {
			return nil, err
		}
		if version == 2 {
			if deact == nil || !*deact {
				f := false
				q.Deactivated = &f
			}
		} else {
			q.Deactivated = deact
		}
		q.OrderBy = r.URL.Query().Get("order_by")
		if q.OrderBy == "" {
			q.OrderBy = "name"
		}
		if _, ok := storage.UserOrderColumns[q.OrderBy]; !ok {
			return nil, mxhttp.InvalidParam("Unknown value for order_by: %s", q.OrderBy)
		}
		if q.Backwards, err = dirParam(r, "f"); err != nil {
			return nil, err
		}
		users, total, err := a.db.ListUsers(r.Context(), q)
		if err != nil {
			return nil, err
		}
		list := make([]map[string]any, 0, len(users))
		for _, u := range users {
			list = append(list, userJSON(u))
		}
		body := map[string]any{"users": list, "total": total}
		nextToken(body, from, len(users), total, true)
		return body, nil
	}
}

// userDetails is GET /v2/users/{userId}'s body (creation_ts in seconds,
// as Synapse's).
func (a *API) userDetails(r *http.Request, userID string) (map[string]any, error) {
	u, err := a.db.GetAdminUser(r.Context(), userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("User not found")
	}
	if err != nil {
		return nil, err
	}
	body := userJSON(u)
	body["creation_ts"] = u.CreatedTS / 1000
	if body["threepids"], err = a.threePIDsJSON(r, userID); err != nil {
		return nil, err
	}
	links, err := storage.SSOLinksOfUser(r.Context(), a.db.Read(), userID)
	if err != nil {
		return nil, err
	}
	ext := []map[string]string{}
	for _, l := range links {
		ext = append(ext, map[string]string{"auth_provider": l.IdPID, "external_id": l.Subject})
	}
	body["external_ids"] = ext
	body["appservice_id"] = nil
	body["consent_server_notice_sent"] = nil
	body["consent_version"] = nil
	body["consent_ts"] = nil
	full, err := a.db.GetUser(r.Context(), userID)
	if err != nil {
		return nil, err
	}
	body["suspended"] = full.Suspended
	return body, nil
}

// GET /_synapse/admin/v2/users/{userId}.
func (a *API) getUser(r *http.Request, c accounts.Caller) (any, error) {
	id, err := a.userParam(r, true)
	if err != nil {
		return nil, err
	}
	return a.userDetails(r, id)
}

// created sends body with 201 Created.
func created(body any) mxhttp.Stream {
	return func(w http.ResponseWriter, r *http.Request) { mxhttp.WriteJSON(w, http.StatusCreated, body) }
}

// PUT /_synapse/admin/v2/users/{userId}: creates the user (201) or
// modifies it (200): password (logging out devices unless
// logout_devices is false), displayname, avatar_url, admin, deactivated.
func (a *API) putUser(r *http.Request, c accounts.Caller) (any, error) {
	id, err := a.userParam(r, true)
	if err != nil {
		return nil, err
	}
	var req struct {
		Password      *string `json:"password"`
		LogoutDevices *bool   `json:"logout_devices"`
		DisplayName   *string `json:"displayname"`
		AvatarURL     *string `json:"avatar_url"`
		Admin         *bool   `json:"admin"`
		Deactivated   *bool   `json:"deactivated"`
		UserType      *string `json:"user_type"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Password != nil && (*req.Password == "" || len(*req.Password) > 512) {
		return nil, mxhttp.InvalidParam("Invalid password")
	}
	if req.UserType != nil && *req.UserType != "bot" && *req.UserType != "support" {
		return nil, mxhttp.InvalidParam("Invalid user type")
	}
	if req.AvatarURL != nil && *req.AvatarURL != "" && !strings.HasPrefix(*req.AvatarURL, "mxc://") {
		return nil, mxhttp.InvalidParam("avatar_url must be an mxc:// URI")
	}
	ctx := r.Context()
	existing, err := a.db.GetUser(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		if req.Deactivated != nil && *req.Deactivated {
			return nil, mxhttp.InvalidParam("Cannot create a deactivated user")
		}
		nu := accounts.NewUser{Localpart: strings.TrimPrefix(strings.SplitN(id, ":", 2)[0], "@"), InhibitLogin: true}
		if nu.Localpart != strings.ToLower(nu.Localpart) {
			return nil, mxhttp.InvalidUsername("User ID may not contain upper-case letters")
		}
		if req.Password != nil {
			nu.Password = *req.Password
		}
		if req.Admin != nil {
			nu.Admin = *req.Admin
		}
		if req.UserType != nil {
			nu.UserType = *req.UserType
		}
		if req.DisplayName != nil {
			nu.DisplayName = *req.DisplayName
		}
		if _, err := a.accounts.Register(ctx, nu); err != nil {
			return nil, err
		}
		if req.AvatarURL != nil && *req.AvatarURL != "" {
			if _, err := a.db.UpdateProfile(ctx, id, func(p *storage.Profile) error { p.AvatarURL = req.AvatarURL; return nil }); err != nil {
				return nil, err
			}
		}
		body, err := a.userDetails(r, id)
		if err != nil {
			return nil, err
		}
		return created(body), nil
	}
	if err != nil {
		return nil, err
	}
	if req.Deactivated != nil && !*req.Deactivated && existing.Deactivated && req.Password == nil {
		return nil, mxhttp.InvalidParam("Must provide a password to re-activate an account")
	}
	if req.Deactivated != nil && *req.Deactivated && !existing.Deactivated {
		if err := a.deactivate(r, id, false); err != nil {
			return nil, err
		}
	}
	var hash string
	if req.Password != nil && (req.Deactivated == nil || !*req.Deactivated) {
		if len(*req.Password) > 72 {
			return nil, mxhttp.WeakPassword("Passwords longer than 72 bytes are not supported")
		}
		if hash, err = a.accounts.Passwords.Hash(ctx, *req.Password); err != nil {
			return nil, err
		}
	}
	profileChanged := false
	err = a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if req.Deactivated != nil && !*req.Deactivated && existing.Deactivated {
			if err := storage.ReactivateUser(ctx, tx, id); err != nil {
				return err
			}
		}
		if hash != "" {
			if err := storage.SetPasswordHash(ctx, tx, id, hash); err != nil {
				return err
			}
			if req.LogoutDevices == nil || *req.LogoutDevices {
				if err := a.accounts.DeleteOtherDevices(ctx, tx, id, ""); err != nil {
					return err
				}
			}
		}
		if req.Admin != nil {
			if err := storage.SetAdmin(ctx, tx, id, *req.Admin); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if req.DisplayName != nil || req.AvatarURL != nil {
		_, err := a.db.UpdateProfile(ctx, id, func(p *storage.Profile) error {
			if req.DisplayName != nil {
				p.DisplayName = emptyNil(*req.DisplayName)
			}
			if req.AvatarURL != nil {
				p.AvatarURL = emptyNil(*req.AvatarURL)
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		profileChanged = true
	}
	if profileChanged {
		// The new profile reaches the user's rooms as membership events,
		// through the room core.
		if err := a.rooms.ProfileChanged(ctx, id); err != nil {
			return nil, err
		}
	}
	return a.userDetails(r, id)
}

func emptyNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// deactivate deactivates a user through the one road every deactivation
// takes (accounts.Deactivate: devices, password, sessions, rooms). A
// repeated deactivation finishes the leaving an interrupted one left
// undone.
func (a *API) deactivate(r *http.Request, userID string, erase bool) error {
	return a.accounts.Deactivate(r.Context(), userID, erase, nil)
}

// POST /_synapse/admin/v1/deactivate/{userId} {"erase": bool}.
func (a *API) deactivateUser(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Erase bool `json:"erase"`
	}
	if err := mxhttp.ReadOptionalJSON(r, &req); err != nil {
		return nil, err
	}
	if err := a.deactivate(r, u.UserID, req.Erase); err != nil {
		return nil, err
	}
	return map[string]string{"id_server_unbind_result": "success"}, nil
}

// POST /_synapse/admin/v1/reset_password/{userId}
// {"new_password", "logout_devices" (default true)}.
func (a *API) resetPassword(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		NewPassword   string `json:"new_password"`
		LogoutDevices *bool  `json:"logout_devices"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.NewPassword == "" {
		return nil, mxhttp.MissingParam("new_password is required")
	}
	if u.Deactivated {
		return nil, mxhttp.InvalidParam("The user is deactivated")
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	if err := a.accounts.ResetPassword(r.Context(), u.UserID, req.NewPassword, logout); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// GET /_synapse/admin/v1/whois/{userId}: the user's devices' last
// connections (Hearth keeps the last IP and time of each device).
func (a *API) whois(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	devs, err := a.db.ListDevices(r.Context(), u.UserID)
	if err != nil {
		return nil, err
	}
	var conns []map[string]any
	for _, d := range devs {
		if d.LastSeenTS == nil {
			continue
		}
		conns = append(conns, map[string]any{"ip": d.LastSeenIP, "last_seen": *d.LastSeenTS, "user_agent": nil})
	}
	if conns == nil {
		conns = []map[string]any{}
	}
	return map[string]any{
		"user_id": u.UserID,
		"devices": map[string]any{"": map[string]any{"sessions": []any{map[string]any{"connections": conns}}}},
	}, nil
}

// GET /_synapse/admin/v1/users/{userId}/admin.
func (a *API) getUserAdmin(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	return map[string]bool{"admin": u.IsAdmin}, nil
}

// PUT /_synapse/admin/v1/users/{userId}/admin {"admin": bool}. An admin
// cannot demote themselves (Synapse's rule, so a server keeps an admin).
func (a *API) putUserAdmin(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Admin *bool `json:"admin"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Admin == nil {
		return nil, mxhttp.MissingParam("Missing key 'admin'")
	}
	if u.UserID == c.UserID && !*req.Admin {
		return nil, mxhttp.Forbidden("You may not demote yourself.")
	}
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error { return storage.SetAdmin(r.Context(), tx, u.UserID, *req.Admin) })
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// GET /_synapse/admin/v1/users/{userId}/joined_rooms.
func (a *API) userJoinedRooms(r *http.Request, c accounts.Caller) (any, error) {
	id, err := a.userParam(r, false)
	if err != nil {
		return nil, err
	}
	joined, err := a.rooms.JoinedRooms(r.Context(), id)
	if err != nil {
		return nil, err
	}
	return map[string]any{"joined_rooms": joined, "total": len(joined)}, nil
}

func deviceJSON(d storage.Device) map[string]any {
	return map[string]any{"device_id": d.DeviceID, "display_name": d.DisplayName, "last_seen_ip": d.LastSeenIP,
		"last_seen_ts": d.LastSeenTS, "last_seen_user_agent": nil, "user_id": d.UserID}
}

// GET /_synapse/admin/v2/users/{userId}/devices.
func (a *API) listDevices(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	devs, err := a.db.ListDevices(r.Context(), u.UserID)
	if err != nil {
		return nil, err
	}
	list := make([]map[string]any, 0, len(devs))
	for _, d := range devs {
		list = append(list, deviceJSON(d))
	}
	return map[string]any{"devices": list, "total": len(list)}, nil
}

// GET /_synapse/admin/v2/users/{userId}/devices/{deviceId}.
func (a *API) getDevice(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	d, err := a.db.GetDevice(r.Context(), u.UserID, pathParam(r, "deviceId"))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("No device found")
	}
	if err != nil {
		return nil, err
	}
	return deviceJSON(d), nil
}

// DELETE /_synapse/admin/v2/users/{userId}/devices/{deviceId}: the
// device and its tokens go; an unknown device is not an error (Synapse).
func (a *API) deleteDevice(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	dev := pathParam(r, "deviceId")
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return a.accounts.DeleteDevices(r.Context(), tx, u.UserID, []string{dev})
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// POST /_synapse/admin/v2/users/{userId}/delete_devices {"devices": [...]}.
func (a *API) deleteDevices(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	var req struct {
		Devices *[]string `json:"devices"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if req.Devices == nil {
		return nil, mxhttp.MissingParam("Missing devices")
	}
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return a.accounts.DeleteDevices(r.Context(), tx, u.UserID, *req.Devices)
	})
	if err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// GET /_synapse/admin/v1/username_available?username=: as the client
// API's /register/available (400 M_USER_IN_USE or M_INVALID_USERNAME).
func (a *API) usernameAvailable(r *http.Request, c accounts.Caller) (any, error) {
	name := r.URL.Query().Get("username")
	if name == "" {
		return nil, mxhttp.MissingParam("Missing username")
	}
	name = strings.ToLower(name)
	if err := accounts.ValidateLocalpart(name, a.cfg.ServerName); err != nil {
		return nil, err
	}
	taken, err := a.db.UserExists(r.Context(), name)
	if err != nil {
		return nil, err
	}
	if taken || name == a.cfg.ServerNoticesLocalpart {
		return nil, mxhttp.UserInUse("User ID already taken.")
	}
	return map[string]bool{"available": true}, nil
}

// GET /_synapse/admin/v1/users/{userId}/media: the user's uploads,
// ordered by order_by (Synapse's values; default created_ts) and dir
// (default f: oldest first).
func (a *API) userMedia(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	from, limit, err := paging(r, 100)
	if err != nil {
		return nil, err
	}
	orderBy := r.URL.Query().Get("order_by")
	if orderBy == "" {
		orderBy = "created_ts"
	}
	if _, ok := storage.UserMediaOrder[orderBy]; !ok {
		return nil, mxhttp.InvalidParam("Unknown value for order_by: %s", orderBy)
	}
	backwards, err := dirParam(r, "f")
	if err != nil {
		return nil, err
	}
	ms, total, err := a.db.UserMedia(r.Context(), u.UserID, orderBy, from, limit, backwards)
	if err != nil {
		return nil, err
	}
	list := make([]map[string]any, 0, len(ms))
	for _, m := range ms {
		list = append(list, map[string]any{
			"media_id": m.MediaID, "media_type": m.ContentType, "media_length": m.Size, "upload_name": emptyNil(m.Filename),
			"created_ts": m.CreatedTS, "last_access_ts": m.UploadedTS, "quarantined_by": quarantinedBy(m.Quarantined),
			"safe_from_quarantine": m.Protected,
		})
	}
	body := map[string]any{"media": list, "total": total}
	nextToken(body, from, len(ms), total, false)
	return body, nil
}

func quarantinedBy(q bool) any {
	if q {
		return "admin"
	}
	return nil
}
