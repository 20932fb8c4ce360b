package clientapi

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/url"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/oauth"
	"github.com/hearth-matrix/hearth/rooms"
)

// New sign-in alerts: when a device signs in to an account that has other
// devices, the user gets a server notice naming the client, the address
// (and place, with a GeoIP database) and the time, with a link to sign
// that device out. accounts.LoginDevice, which every login goes through,
// calls signedIn after the login commits; the notice is sent in the
// background, so it neither slows nor fails the login.

// signInAlertTimeout bounds one alert's work (finding or making the
// notices room, sending the event).
const signInAlertTimeout = time.Minute

// signInAlertGrace is how long Close lets alerts in flight finish.
const signInAlertGrace = 5 * time.Second

// Locator places an IP address: "Seoul, South Korea", or "" when unknown.
type Locator interface {
	Locate(ip net.IP) string
}

// signInAlerts runs the alerts in flight, so Close can wait for them.
type signInAlerts struct {
	mu     sync.Mutex
	wg     sync.WaitGroup
	closed bool
	ctx    context.Context
	cancel context.CancelFunc
	geo    Locator // nil: no GeoIP database
}

// signInAlert is what an alert says, taken from the login's request while
// it runs.
type signInAlert struct {
	accounts.SignIn
	IP, UserAgent, AccountURL string
}

// signedIn is the accounts.SignInHook: it reads the request (address,
// user agent, public URL) and sends the notice in the background.
func (a *API) signedIn(ctx context.Context, s accounts.SignIn) {
	cfg := a.conf()
	if !cfg.SignInAlerts || cfg.ServerNoticesLocalpart == "" {
		return
	}
	al := signInAlert{SignIn: s}
	if r := mxhttp.RequestOrigin(ctx); r != nil {
		al.IP, al.UserAgent = clientIP(r), r.UserAgent()
	}
	// The link's base is configured, never the request's Host: whoever
	// signs in chooses that, and the notice must not carry their link.
	if base := cfg.WellKnownClient; base != "" {
		al.AccountURL = oauth.AccountManagementURL(base, "org.matrix.device_delete") + "&device_id=" + url.QueryEscape(s.DeviceID)
	}
	a.alerts.mu.Lock()
	defer a.alerts.mu.Unlock()
	if a.alerts.closed {
		return
	}
	a.alerts.wg.Add(1)
	go func() {
		defer a.alerts.wg.Done()
		ctx, cancel := context.WithTimeout(a.alerts.ctx, signInAlertTimeout)
		defer cancel()
		if err := a.sendSignInAlert(ctx, al); err != nil {
			a.log.Warn("sign-in alert not sent", "user_id", al.UserID, "device_id", al.DeviceID, "err", err)
		}
	}()
}

// Close stops sign-in alerts: later ones are not sent, those in flight
// get a few seconds to finish and are then cancelled.
func (a *API) Close() {
	a.alerts.mu.Lock()
	a.alerts.closed = true
	a.alerts.mu.Unlock()
	done := make(chan struct{})
	go func() {
		a.alerts.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(signInAlertGrace):
		a.alerts.cancel()
		<-done
	}
	a.alerts.cancel()
}

// sendSignInAlert sends the notice unless the user turned alerts off.
func (a *API) sendSignInAlert(ctx context.Context, al signInAlert) error {
	on, err := a.accounts.SignInAlertsOn(ctx, al.UserID)
	if err != nil || !on {
		return err
	}
	place := ""
	if ip := net.ParseIP(al.IP); a.alerts.geo != nil && ip != nil {
		place = a.alerts.geo.Locate(ip)
	}
	content, err := json.Marshal(signInNotice(al, place))
	if err != nil {
		return err
	}
	roomID, err := a.serverNoticeRoom(ctx, al.UserID)
	if err != nil {
		return fmt.Errorf("server notices room: %w", err)
	}
	_, err = a.rooms.Send(ctx, roomID, rooms.Proto{Sender: a.noticesUserID(), Type: "m.room.message", Content: content})
	return err
}

// signInNotice is the notice's content: an m.text message (every client
// shows it, and the default push rules notify for it, where m.notice is
// silent) with the facts also under org.hearth.sign_in for clients that
// want them.
func signInNotice(al signInAlert, place string) map[string]any {
	name := al.DisplayName
	if al.Client != "" {
		name = al.Client
	}
	device := al.DeviceID
	if name != "" {
		device = fmt.Sprintf("%q (%s)", clip(name, 100), al.DeviceID)
	}
	what := "A new device signed in to your account"
	if al.Reused {
		what = "A device signed in to your account again"
	}
	when := al.At.UTC().Format("2006-01-02 15:04:05 UTC")
	// Device and Client come from the client: in the HTML they are code,
	// which clients do not linkify.
	type line struct {
		name, value string
		theirs      bool
	}
	lines := []line{{"Device", device, true}}
	if al.UserAgent != "" {
		lines = append(lines, line{"Client", clip(al.UserAgent, 200), true})
	}
	switch {
	case al.IP != "" && place != "":
		lines = append(lines, line{"From", al.IP + " (" + place + ")", false})
	case al.IP != "":
		lines = append(lines, line{"From", al.IP, false})
	}
	lines = append(lines, line{"When", when, false})
	var body, formatted strings.Builder
	body.WriteString(what + ".\n")
	formatted.WriteString("<p><strong>" + what + ".</strong></p><ul>")
	for _, l := range lines {
		body.WriteString(l.name + ": " + l.value + "\n")
		v := html.EscapeString(l.value)
		if l.theirs {
			v = "<code>" + v + "</code>"
		}
		formatted.WriteString("<li>" + l.name + ": " + v + "</li>")
	}
	formatted.WriteString("</ul>")
	const notYou = "If this was not you, sign that device out and change your password"
	if al.AccountURL != "" {
		body.WriteString(notYou + ": " + al.AccountURL)
		formatted.WriteString("<p>" + notYou + `: <a href="` + html.EscapeString(al.AccountURL) + `">sign it out</a>.</p>`)
	} else {
		const where = " (on your account page, /_hearth/account on your homeserver, or in your app's list of sessions)"
		body.WriteString(notYou + where + ".")
		formatted.WriteString("<p>" + notYou + html.EscapeString(where) + ".</p>")
	}
	facts := map[string]any{"device_id": al.DeviceID, "new_device": !al.Reused, "ts": al.At.UnixMilli()}
	for k, v := range map[string]string{"device_display_name": al.DisplayName, "client_name": al.Client,
		"user_agent": clip(al.UserAgent, 200), "ip": al.IP, "location": place,
		"account_management_url": al.AccountURL} {
		if v != "" {
			facts[k] = v
		}
	}
	return map[string]any{"msgtype": "m.text", "body": body.String(),
		"format": "org.matrix.custom.html", "formatted_body": formatted.String(), "org.hearth.sign_in": facts}
}

// clip shortens s to at most n bytes on a rune boundary: user agents and
// device names come from the client.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
