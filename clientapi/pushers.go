package clientapi

import (
	"database/sql"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
	"unicode/utf8"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Pushers (client-server API, Push Notifications: Pushers; pusher.yaml).
// A pusher belongs to the device whose access token set it and goes when
// that device does (push.DevicesDeleted).

const notifyPath = "/_matrix/push/v1/notify"

type pusherJSON struct {
	PushKey           string         `json:"pushkey"`
	Kind              string         `json:"kind"`
	AppID             string         `json:"app_id"`
	AppDisplayName    string         `json:"app_display_name"`
	DeviceDisplayName string         `json:"device_display_name"`
	ProfileTag        string         `json:"profile_tag,omitempty"`
	Lang              string         `json:"lang"`
	Data              map[string]any `json:"data"`
}

// GET /_matrix/client/v3/pushers
func (a *API) getPushers(r *http.Request, c accounts.Caller) (any, error) {
	ps, err := storage.PushersOfUser(r.Context(), a.db.Read(), c.UserID)
	if err != nil {
		return nil, err
	}
	out := make([]pusherJSON, 0, len(ps))
	for _, p := range ps {
		pj := pusherJSON{PushKey: p.PushKey, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag, Lang: p.Lang, Data: map[string]any{}}
		_ = json.Unmarshal([]byte(p.Data), &pj.Data)
		out = append(out, pj)
	}
	return map[string]any{"pushers": out}, nil
}

// POST /_matrix/client/v3/pushers/set
func (a *API) setPusher(r *http.Request, c accounts.Caller) (any, error) {
	var req struct {
		PushKey           *string         `json:"pushkey"`
		Kind              json.RawMessage `json:"kind"`
		AppID             *string         `json:"app_id"`
		AppDisplayName    *string         `json:"app_display_name"`
		DeviceDisplayName *string         `json:"device_display_name"`
		ProfileTag        string          `json:"profile_tag"`
		Lang              *string         `json:"lang"`
		Data              map[string]any  `json:"data"`
		Append            bool            `json:"append"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	p, deleting, err := validatePusher(c, req.PushKey, req.Kind, req.AppID, req.AppDisplayName, req.DeviceDisplayName, req.Lang, req.Data)
	if err != nil {
		return nil, err
	}
	p.ProfileTag = req.ProfileTag
	err = a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		if deleting {
			return storage.DeletePusher(r.Context(), tx, c.UserID, p.AppID, p.PushKey)
		}
		return storage.PutPusher(r.Context(), tx, p, req.Append)
	})
	return writeEmptyOrError(r, err)
}

// validatePusher checks a /pushers/set body: M_MISSING_PARAM for absent
// required fields, M_INVALID_PARAM for bad values. deleting is kind null.
func validatePusher(c accounts.Caller, pushKey *string, kind json.RawMessage, appID, appName, deviceName, lang *string,
	data map[string]any) (p storage.Pusher, deleting bool, err error) {
	switch {
	case kind == nil:
		return p, false, mxhttp.MissingParam("kind is required")
	case appID == nil:
		return p, false, mxhttp.MissingParam("app_id is required")
	case pushKey == nil:
		return p, false, mxhttp.MissingParam("pushkey is required")
	case len(*pushKey) > 512:
		return p, false, mxhttp.InvalidParam("pushkey is longer than 512 bytes")
	case utf8.RuneCountInString(*appID) > 64:
		return p, false, mxhttp.InvalidParam("app_id is longer than 64 characters")
	}
	p = storage.Pusher{UserID: c.UserID, DeviceID: c.DeviceID, AppID: *appID, PushKey: *pushKey, PushKeyTS: time.Now().Unix()}
	if string(kind) == "null" {
		return p, true, nil
	}
	var k string
	if json.Unmarshal(kind, &k) != nil {
		return p, false, mxhttp.InvalidParam("kind must be a string or null")
	}
	if k != "http" {
		return p, false, mxhttp.InvalidParam("Only http pushers are supported, not %q", k)
	}
	switch {
	case appName == nil:
		return p, false, mxhttp.MissingParam("app_display_name is required")
	case deviceName == nil:
		return p, false, mxhttp.MissingParam("device_display_name is required")
	case lang == nil:
		return p, false, mxhttp.MissingParam("lang is required")
	case data == nil:
		return p, false, mxhttp.MissingParam("data is required")
	}
	rawURL, present := data["url"]
	if !present {
		return p, false, mxhttp.MissingParam("data.url is required for http pushers")
	}
	s, _ := rawURL.(string)
	u, err := url.Parse(s)
	if s == "" || err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != notifyPath ||
		u.User != nil || u.Fragment != "" {
		return p, false, mxhttp.InvalidParam("data.url must be an http(s) URL with the path %s", notifyPath)
	}
	if f, ok := data["format"]; ok && f != "event_id_only" {
		return p, false, mxhttp.InvalidParam("data.format must be event_id_only when given")
	}
	enc, err := json.Marshal(data)
	if err != nil {
		return p, false, mxhttp.BadJSON("data: %v", err)
	}
	p.Kind, p.AppDisplayName, p.DeviceDisplayName, p.Lang, p.Data = k, *appName, *deviceName, *lang, string(enc)
	return p, false, nil
}
