package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strings"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Profiles (client-server API, Profiles; profile.yaml). displayname and
// avatar_url have their own columns; m.tz and custom fields (added in
// v1.16) are stored as JSON values in profile_fields.

const (
	// maxDisplayNameLen and maxAvatarURLLen are Synapse's limits, which
	// clients are used to.
	maxDisplayNameLen = 256
	maxAvatarURLLen   = 1000
	// maxProfileKeyLen and maxProfileBytes are the spec's limits.
	maxProfileKeyLen = 255
	maxProfileBytes  = 64 * 1024
)

// profileKeyPattern is the keyName grammar of profile.yaml.
var profileKeyPattern = regexp.MustCompile(`^(avatar_url|displayname|m\.tz|[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+)$`)

// profileJSON renders a profile as the client API shows it.
func profileJSON(p storage.Profile) map[string]json.RawMessage {
	out := make(map[string]json.RawMessage, len(p.Fields)+2)
	for k, v := range p.Fields {
		out[k] = v
	}
	if p.DisplayName != nil {
		out["displayname"], _ = json.Marshal(*p.DisplayName)
	}
	if p.AvatarURL != nil {
		out["avatar_url"], _ = json.Marshal(*p.AvatarURL)
	}
	return out
}

// loadProfile returns a user's profile: local users from the store, remote
// users through remoteProfile.
func (a *API) loadProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	if !strings.HasPrefix(userID, "@") || serverOf(userID) == "" {
		return nil, mxhttp.InvalidParam("%q is not a user ID", userID)
	}
	if !a.isLocalUser(userID) {
		return a.remoteProfile(ctx, userID)
	}
	p, err := a.db.GetProfile(ctx, userID)
	if errors.Is(err, storage.ErrNotFound) && a.appsvc.QueryUser(ctx, userID) {
		// An application service made the user on being asked.
		p, err = a.db.GetProfile(ctx, userID)
	}
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Profile not found")
	}
	if err != nil {
		return nil, err
	}
	return profileJSON(p), nil
}

// remoteProfile asks the user's server (GET
// /_matrix/federation/v1/query/profile).
func (a *API) remoteProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	if a.fed == nil {
		return nil, mxhttp.NotFound("Profiles of users on other servers are not available")
	}
	return a.fed.QueryProfile(ctx, userID, "")
}

// profileChanged sends an updated m.room.member event to every room the
// user has joined (Profiles, Events on Change of Profile Information).
// Presence updates come with the presence module.
func (a *API) profileChanged(ctx context.Context, userID string, p storage.Profile) {
	if err := a.rooms.ProfileChanged(ctx, userID); err != nil {
		a.log.Warn("propagating profile change", "user", userID, "err", err)
	}
}

// GET /_matrix/client/v3/profile/{userId}. No access token is needed.
func (a *API) getProfile(r *http.Request, _ accounts.Caller) (any, error) {
	p, err := a.loadProfile(r.Context(), pathParam(r, "userId"))
	if err != nil {
		return nil, err
	}
	return p, nil
}

// GET /_matrix/client/v3/profile/{userId}/{keyName}.
func (a *API) getProfileField(r *http.Request, _ accounts.Caller) (any, error) {
	key := pathParam(r, "keyName")
	if !profileKeyPattern.MatchString(key) {
		return nil, mxhttp.InvalidParam("Invalid profile key")
	}
	p, err := a.loadProfile(r.Context(), pathParam(r, "userId"))
	if err != nil {
		return nil, err
	}
	v, ok := p[key]
	if !ok {
		return nil, mxhttp.NotFound("The user has no profile field %s", key)
	}
	return map[string]json.RawMessage{key: v}, nil
}

// checkProfileChange checks who may change which field: only the user
// themself, and only field names of the spec's grammar. Guests may set
// and delete their display name and nothing else (Guest access; DELETE
// since v1.16).
func (a *API) checkProfileChange(c accounts.Caller, userID, key string) error {
	if err := requireSelf(c, userID, "change the profile"); err != nil {
		return err
	}
	if c.IsGuest && key != "displayname" {
		return mxhttp.GuestAccess("Guests may change only their display name")
	}
	if len(key) > maxProfileKeyLen {
		return mxhttp.KeyTooLarge("Profile keys are at most %d bytes", maxProfileKeyLen)
	}
	if !profileKeyPattern.MatchString(key) {
		return mxhttp.InvalidParam("Invalid profile key %q", key)
	}
	return nil
}

// PUT /_matrix/client/v3/profile/{userId}/{keyName}.
func (a *API) putProfileField(r *http.Request, c accounts.Caller) (any, error) {
	userID, key := pathParam(r, "userId"), pathParam(r, "keyName")
	if err := a.checkProfileChange(c, userID, key); err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	value, ok := body[key]
	if !ok {
		return nil, mxhttp.MissingParam("The body must have the property %s", key)
	}
	set, err := profileSetter(key, value)
	if err != nil {
		return nil, err
	}
	return a.updateProfile(r, userID, set)
}

// DELETE /_matrix/client/v3/profile/{userId}/{keyName}: removing a field
// that is not set succeeds too.
func (a *API) deleteProfileField(r *http.Request, c accounts.Caller) (any, error) {
	userID, key := pathParam(r, "userId"), pathParam(r, "keyName")
	if err := a.checkProfileChange(c, userID, key); err != nil {
		return nil, err
	}
	return a.updateProfile(r, userID, func(p *storage.Profile) {
		switch key {
		case "displayname":
			p.DisplayName = nil
		case "avatar_url":
			p.AvatarURL = nil
		default:
			delete(p.Fields, key)
		}
	})
}

// profileSetter validates a new field value and returns the change.
// displayname and avatar_url must be strings ("" clears them); avatar_url
// must be an mxc:// URI and m.tz a string; custom fields take any JSON.
func profileSetter(key string, value json.RawMessage) (func(*storage.Profile), error) {
	var s string
	switch key {
	case "displayname", "avatar_url", "m.tz":
		if err := json.Unmarshal(value, &s); err != nil || string(value) == "null" {
			return nil, mxhttp.BadJSON("%s must be a string", key)
		}
	}
	switch key {
	case "displayname":
		if len([]rune(s)) > maxDisplayNameLen {
			return nil, mxhttp.InvalidParam("Display names are at most %d characters", maxDisplayNameLen)
		}
		return func(p *storage.Profile) { p.DisplayName = nilIfEmpty(s) }, nil
	case "avatar_url":
		if len(s) > maxAvatarURLLen {
			return nil, mxhttp.InvalidParam("Avatar URLs are at most %d bytes", maxAvatarURLLen)
		}
		// The spec means an mxc:// URI, but other servers (and Complement)
		// accept any string; clients render only mxc:// URIs anyway.
		return func(p *storage.Profile) { p.AvatarURL = nilIfEmpty(s) }, nil
	}
	compact, err := compactJSON(value)
	if err != nil {
		return nil, err
	}
	return func(p *storage.Profile) { p.Fields[key] = compact }, nil
}

// updateProfile applies set to the caller's profile, refusing a profile
// over 64 KiB, and answers the request.
func (a *API) updateProfile(r *http.Request, userID string, set func(*storage.Profile)) (any, error) {
	p, err := a.db.UpdateProfile(r.Context(), userID, func(p *storage.Profile) error {
		set(p)
		if b, _ := json.Marshal(profileJSON(*p)); len(b) > maxProfileBytes {
			return mxhttp.ProfileTooLarge("The profile would be larger than %d bytes", maxProfileBytes)
		}
		return nil
	})
	if errors.Is(err, storage.ErrNotFound) {
		err = mxhttp.NotFound("Profile not found")
	}
	if err != nil {
		return nil, err
	}
	a.profileChanged(r.Context(), userID, p)
	return struct{}{}, nil
}

func nilIfEmpty(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// compactJSON strips insignificant whitespace from a JSON value for storage.
func compactJSON(v []byte) ([]byte, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, v); err != nil {
		return nil, mxhttp.BadJSON("Invalid JSON value")
	}
	return buf.Bytes(), nil
}
