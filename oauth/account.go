package oauth

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Account management (client-server API, Account management, v1.18;
// MSC4191): the account page and the actions clients deep-link to.
const (
	actionDevicesList       = "org.matrix.devices_list"
	actionDeviceView        = "org.matrix.device_view"
	actionDeviceDelete      = "org.matrix.device_delete"
	actionCrossSigningReset = "org.matrix.cross_signing_reset"
	actionProfile           = "org.matrix.profile"
	actionDeactivate        = "org.matrix.account_deactivate"
)

// accountActions are the actions clients may deep-link to.
var accountActions = []string{actionProfile, actionDevicesList, actionDeviceView, actionDeviceDelete, actionDeactivate, actionCrossSigningReset}

// crossSigningResetWindow is how long an approved reset may take to reach
// /keys/device_signing/upload.
const crossSigningResetWindow = 10 * time.Minute

// AccountManagementURL is the account page for an action, for other
// packages' links (the m.oauth UIA stage).
func AccountManagementURL(base, action string) string {
	return strings.TrimRight(base, "/") + accountPath + "?action=" + url.QueryEscape(action)
}

// deviceView is one row of the device list.
type deviceView struct {
	ID, Name, LastSeen, IP, Client string
	Selected                       bool
}

// GET /_hearth/account[?action=...&device_id=...]: the user's devices
// (name, last seen, address, client), each renamable and removable, and
// the action asked for.
func (a *API) accountPage(w http.ResponseWriter, r *http.Request) error {
	user, err := a.requireUser(w, r)
	if err != nil || user == "" {
		return err
	}
	q := r.URL.Query()
	data, err := a.accountData(r, user, q.Get("action"), q.Get("device_id"))
	if err != nil {
		return err
	}
	a.render(w, r, http.StatusOK, "account", data)
	return nil
}

// accountData is what the account page shows: the devices, the profile,
// and the action asked for.
func (a *API) accountData(r *http.Request, user, action, selected string) (map[string]any, error) {
	devices, err := a.db.ListDevices(r.Context(), user)
	if err != nil {
		return nil, err
	}
	clients, err := a.db.OAuthSessionClients(r.Context(), user)
	if err != nil {
		return nil, err
	}
	profile, err := a.db.GetProfile(r.Context(), user)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	var views []deviceView
	var chosen *deviceView
	for _, d := range devices {
		v := deviceView{ID: d.DeviceID, Selected: d.DeviceID == selected}
		if d.DisplayName != nil {
			v.Name = *d.DisplayName
		}
		if d.LastSeenTS != nil {
			v.LastSeen = time.UnixMilli(*d.LastSeenTS).UTC().Format("2006-01-02 15:04 UTC")
		}
		if d.LastSeenIP != nil {
			v.IP = *d.LastSeenIP
		}
		if id, ok := clients[d.DeviceID]; ok {
			v.Client = id
			if c, ok, err := a.loadClient(r, id); err == nil && ok {
				v.Client = a.clientView(r, c, map[string]any{})["ClientName"].(string)
			}
		}
		views = append(views, v)
		if v.Selected {
			chosen = &views[len(views)-1]
		}
	}
	data := map[string]any{"UserID": user, "Devices": views, "Action": action, "PasswordLogin": a.conf().PasswordLogin}
	if profile.DisplayName != nil {
		data["DisplayName"] = *profile.DisplayName
	}
	if cfg := a.conf(); cfg.SignInAlerts && cfg.ServerNoticesLocalpart != "" {
		on, err := a.accounts.SignInAlertsOn(r.Context(), user)
		if err != nil {
			return nil, err
		}
		data["Alerts"] = map[string]bool{"On": on}
	}
	switch action {
	case "", actionDevicesList:
	case actionDeviceView, actionDeviceDelete:
		if chosen == nil {
			data["Error"] = say("You have no device %s.", selected)
		} else {
			data["Chosen"] = *chosen
		}
	case actionCrossSigningReset:
		data["CrossSigningReset"] = true
	case actionProfile, actionDeactivate:
		// The page shows that section first.
	default:
		data["Error"] = say("This page does not support the action %s.", action)
	}
	return data, nil
}

// POST /_hearth/account/device: rename (op=rename, name) or sign out
// (op=delete) one of the user's devices.
func (a *API) accountDevice(w http.ResponseWriter, r *http.Request) error {
	user, err := a.formUser(r)
	if err != nil {
		return err
	}
	deviceID := r.PostForm.Get("device_id")
	if _, err := a.db.GetDevice(r.Context(), user, deviceID); errors.Is(err, storage.ErrNotFound) {
		return badPage("You have no such device.")
	} else if err != nil {
		return err
	}
	ctx := r.Context()
	switch r.PostForm.Get("op") {
	case "rename":
		name := strings.TrimSpace(r.PostForm.Get("name"))
		if len(name) > 255 {
			return badPage("The name is too long.")
		}
		err = a.db.WriteTx(ctx, func(tx *sql.Tx) error {
			var p *string
			if name != "" {
				p = &name
			}
			if err := storage.SetDeviceDisplayName(ctx, tx, user, deviceID, p); err != nil {
				return err
			}
			return a.deviceRenamed(ctx, tx, user, deviceID)
		})
	case "delete":
		err = a.db.WriteTx(ctx, func(tx *sql.Tx) error { return a.accounts.DeleteDevices(ctx, tx, user, []string{deviceID}) })
	default:
		return badPage("Unknown operation.")
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, accountPath+"?action="+actionDevicesList, http.StatusSeeOther)
	return nil
}

// POST /_hearth/account/sign-in-alerts (alerts=on|off): the user's choice
// of sign-in alerts, kept as account data (accounts.SignInAlertsType).
func (a *API) accountAlerts(w http.ResponseWriter, r *http.Request) error {
	user, err := a.formUser(r)
	if err != nil {
		return err
	}
	v := r.PostForm.Get("alerts")
	if v != "on" && v != "off" {
		return badPage("Choose on or off.")
	}
	pos, err := a.accounts.SetSignInAlerts(r.Context(), user, v == "on")
	if err != nil {
		return err
	}
	if a.onAccountData != nil {
		a.onAccountData(user, pos)
	}
	http.Redirect(w, r, accountPath+"?action="+actionDevicesList, http.StatusSeeOther)
	return nil
}

func (a *API) deviceRenamed(ctx context.Context, tx *sql.Tx, userID, deviceID string) error {
	if a.onRename == nil {
		return nil
	}
	return a.onRename(ctx, tx, userID, deviceID)
}

// POST /_hearth/account/cross-signing-reset: the user approves replacing
// their cross-signing keys; the client's next upload passes the m.oauth
// UIA stage (client-server API, OAuth authentication).
func (a *API) crossSigningReset(w http.ResponseWriter, r *http.Request) error {
	user, err := a.formUser(r)
	if err != nil {
		return err
	}
	until := time.Now().Add(crossSigningResetWindow).UnixMilli()
	if err := a.db.WriteTx(r.Context(), func(tx *sql.Tx) error {
		return storage.ApproveCrossSigningReset(r.Context(), tx, user, until)
	}); err != nil {
		return err
	}
	a.done(w, r, "Approved. Go back to your application within 10 minutes to finish resetting your identity.")
	return nil
}

// POST /_hearth/account/profile: the user's display name (empty: none).
// Their rooms get it as new membership events, as with PUT /profile.
func (a *API) accountProfile(w http.ResponseWriter, r *http.Request) error {
	user, err := a.formUser(r)
	if err != nil {
		return err
	}
	name := strings.TrimSpace(r.PostForm.Get("displayname"))
	if len(name) > 255 {
		return badPage("The name is too long.")
	}
	if _, err := a.db.UpdateProfile(r.Context(), user, func(p *storage.Profile) error {
		p.DisplayName = nil
		if name != "" {
			p.DisplayName = &name
		}
		return nil
	}); err != nil {
		return err
	}
	if a.onProfile != nil {
		if err := a.onProfile(r.Context(), user); err != nil {
			return err
		}
	}
	http.Redirect(w, r, accountPath+"?action="+actionProfile, http.StatusSeeOther)
	return nil
}

// POST /_hearth/account/deactivate: the user deactivates their account,
// confirming with their password (or, when password login is off, by
// typing their user ID), by the road POST /account/deactivate takes: the
// password, every device and browser session go, the user leaves every
// room, the user ID stays taken.
func (a *API) accountDeactivate(w http.ResponseWriter, r *http.Request) error {
	user, err := a.formUser(r)
	if err != nil {
		return err
	}
	again := func(status int, m msg) error {
		data, err := a.accountData(r, user, actionDeactivate, "")
		if err != nil {
			return err
		}
		data["DeactivateError"] = m
		a.render(w, r, status, "account", data)
		return nil
	}
	if a.conf().PasswordLogin {
		if !allow(a.passwordIP, clientIP(r)) {
			return again(http.StatusTooManyRequests, say("Too many attempts. Wait a minute and try again."))
		}
		localpart, _, _ := strings.Cut(strings.TrimPrefix(user, "@"), ":")
		_, err := a.accounts.CheckPassword(r.Context(), localpart, r.PostForm.Get("password"))
		var me *mxhttp.Error
		if errors.As(err, &me) && me.Status == http.StatusForbidden {
			return again(http.StatusForbidden, say("That is not your password."))
		}
		if err != nil {
			return err
		}
	} else if strings.TrimSpace(r.PostForm.Get("confirm_user_id")) != user {
		return again(http.StatusBadRequest, say("Type your user ID exactly as shown to confirm."))
	}
	if err := a.accounts.Deactivate(r.Context(), user, r.PostForm.Get("erase") == "true", nil); err != nil {
		return err
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: cookiePath, MaxAge: -1, HttpOnly: true, Secure: a.secure(r)})
	a.done(w, r, "Your account %s is deactivated.", user)
	return nil
}
