package clientapi

import (
	"errors"
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// GET /_matrix/client/v3/capabilities (client-server API, Capabilities
// negotiation). m.get_login_token says whether the caller may use POST
// /login/get_token (guests may not), which clients read before offering
// to sign in a new device.
func (a *API) capabilities(r *http.Request, c accounts.Caller) (any, error) {
	available := make(map[string]string, len(rooms.SupportedVersions)+len(rooms.UnstableVersions))
	for _, v := range rooms.SupportedVersions {
		available[string(v)] = "stable"
	}
	for _, v := range rooms.UnstableVersions {
		available[string(v)] = "unstable"
	}
	enabled := func(on bool) map[string]bool { return map[string]bool{"enabled": on} }
	// Guests may change only their display name (Guest access).
	profileFields := map[string]any{"enabled": true}
	if c.IsGuest {
		profileFields["allowed"] = []string{"displayname"}
	}
	caps := map[string]any{
		"m.change_password": enabled(!c.IsGuest), // account.go refuses guests
		"m.room_versions":   map[string]any{"default": string(rooms.DefaultVersion), "available": available},
		"m.set_displayname": enabled(true),
		"m.set_avatar_url":  enabled(!c.IsGuest),
		"m.profile_fields":  profileFields,
		"m.3pid_changes":    enabled(a.mail != nil),
		"m.get_login_token": enabled(!c.IsGuest),
		// Leaving a room does not forget it; /forget does (v1.18).
		"m.forget_forced_upon_leave": enabled(false),
	}
	// Admins may lock accounts (v1.18); suspension is not implemented. The
	// capability is left out for everyone else, as the spec asks.
	u, err := a.db.GetUser(r.Context(), c.UserID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if u.IsAdmin {
		caps["m.account_moderation"] = map[string]bool{"lock": true, "suspend": true}
	}
	return map[string]any{"capabilities": caps}, nil
}
