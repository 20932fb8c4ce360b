package console

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/admin"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Admin API paths the console invokes.
const (
	v1 = "/_synapse/admin/v1"
	v2 = "/_synapse/admin/v2"
)

func esc(s string) string { return url.PathEscape(s) }

// back redirects to a console page after an action (303: the browser
// GETs it, so reloading does not repeat the action).
func back(w http.ResponseWriter, r *http.Request, path string, q url.Values) error {
	u := Prefix + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	http.Redirect(w, r, u, http.StatusSeeOther)
	return nil
}

func (c *Console) call(r *http.Request, s *session, method, path string, q url.Values, body any) (map[string]any, error) {
	return c.admin.Invoke(r.Context(), s.caller, method, path, q, body)
}

// GET /: the dashboard, 60 days of daily counts.
func (c *Console) dashboard(w http.ResponseWriter, r *http.Request, s *session) error {
	c.Sample(r.Context())
	today := time.Now().UnixMilli() / 86400000
	rows, err := c.db.DailyStatsSince(r.Context(), today-59)
	if err != nil {
		return err
	}
	series := func(title string, f func(storage.DailyStats) int64) plot {
		var p plot
		p.Title = title
		for _, d := range rows {
			p.Points = append(p.Points, point{Day: d.Day, Value: f(d)})
		}
		return p.layout()
	}
	plots := []plot{
		series("Users", func(d storage.DailyStats) int64 { return d.Users }),
		series("Devices", func(d storage.DailyStats) int64 { return d.Devices }),
		series("Active users (24 h)", func(d storage.DailyStats) int64 { return d.ActiveUsers }),
		series("Messages per day", func(d storage.DailyStats) int64 { return d.Messages }),
		series("Rooms", func(d storage.DailyStats) int64 { return d.Rooms }),
		series("Media bytes", func(d storage.DailyStats) int64 { return d.MediaBytes }),
		series("Federation destinations up", func(d storage.DailyStats) int64 { return d.FedUp }),
		series("Federation destinations down", func(d storage.DailyStats) int64 { return d.FedDown }),
	}
	c.render(w, http.StatusOK, "dashboard", s, page{Title: "Dashboard", Data: plots})
	return nil
}

// GET /users?q=&from=
func (c *Console) users(w http.ResponseWriter, r *http.Request, s *session) error {
	q := url.Values{"limit": {"50"}, "guests": {"false"}}
	if name := strings.TrimSpace(r.URL.Query().Get("q")); name != "" {
		q.Set("name", name)
	}
	if from := r.URL.Query().Get("from"); from != "" {
		q.Set("from", from)
	}
	res, err := c.call(r, s, "GET", v2+"/users", q, nil)
	if err != nil {
		return err
	}
	c.render(w, http.StatusOK, "users", s, page{Title: "Users", Query: r.URL.Query().Get("q"), Data: res})
	return nil
}

// POST /users: create a user (localpart, password, admin).
func (c *Console) createUser(w http.ResponseWriter, r *http.Request, s *session) error {
	lp := strings.TrimSpace(r.PostFormValue("localpart"))
	if lp == "" || r.PostFormValue("password") == "" {
		return mxhttp.MissingParam("A user name and a password are required")
	}
	id := "@" + strings.TrimPrefix(lp, "@")
	if !strings.Contains(id, ":") {
		id += ":" + c.cfg.ServerName
	}
	if _, err := c.call(r, s, "GET", v2+"/users/"+esc(id), nil, nil); err == nil {
		return mxhttp.InvalidParam("User %s already exists", id)
	}
	body := map[string]any{"password": r.PostFormValue("password"), "admin": r.PostFormValue("admin") == "on"}
	if _, err := c.call(r, s, "PUT", v2+"/users/"+esc(id), nil, body); err != nil {
		return err
	}
	return back(w, r, "/user", url.Values{"id": {id}, "flash": {"User created"}})
}

// GET /user?id=: details, devices and sessions, rooms.
func (c *Console) user(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.URL.Query().Get("id")
	u, err := c.call(r, s, "GET", v2+"/users/"+esc(id), nil, nil)
	if err != nil {
		return err
	}
	devices, err := c.call(r, s, "GET", v2+"/users/"+esc(id)+"/devices", nil, nil)
	if err != nil {
		return err
	}
	joined, err := c.call(r, s, "GET", v1+"/users/"+esc(id)+"/joined_rooms", nil, nil)
	if err != nil {
		return err
	}
	c.render(w, http.StatusOK, "user", s, page{Title: id, Flash: r.URL.Query().Get("flash"),
		Data: map[string]any{"id": id, "user": u, "devices": devices["devices"], "rooms": joined["joined_rooms"]}})
	return nil
}

// POST /user/password (id, password, logout).
func (c *Console) resetPassword(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PostFormValue("id")
	body := map[string]any{"new_password": r.PostFormValue("password"), "logout_devices": r.PostFormValue("logout") == "on"}
	if _, err := c.call(r, s, "POST", v1+"/reset_password/"+esc(id), nil, body); err != nil {
		return err
	}
	return back(w, r, "/user", url.Values{"id": {id}, "flash": {"Password reset"}})
}

// POST /user/deactivate (id, erase).
func (c *Console) deactivate(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PostFormValue("id")
	if _, err := c.call(r, s, "POST", v1+"/deactivate/"+esc(id), nil, map[string]any{"erase": r.PostFormValue("erase") == "on"}); err != nil {
		return err
	}
	return back(w, r, "/user", url.Values{"id": {id}, "flash": {"User deactivated"}})
}

// POST /user/admin (id, admin=true|false).
func (c *Console) setAdmin(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PostFormValue("id")
	if _, err := c.call(r, s, "PUT", v1+"/users/"+esc(id)+"/admin", nil, map[string]any{"admin": r.PostFormValue("admin") == "true"}); err != nil {
		return err
	}
	return back(w, r, "/user", url.Values{"id": {id}, "flash": {"Admin flag changed"}})
}

// POST /user/device/delete (id, device): signs the session out.
func (c *Console) deleteDevice(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PostFormValue("id")
	if _, err := c.call(r, s, "DELETE", v2+"/users/"+esc(id)+"/devices/"+esc(r.PostFormValue("device")), nil, nil); err != nil {
		return err
	}
	return back(w, r, "/user", url.Values{"id": {id}, "flash": {"Device signed out"}})
}

// GET /rooms?q=
func (c *Console) rooms(w http.ResponseWriter, r *http.Request, s *session) error {
	q := url.Values{"limit": {"50"}, "order_by": {"joined_members"}}
	if term := strings.TrimSpace(r.URL.Query().Get("q")); term != "" {
		q.Set("search_term", term)
	}
	if from := r.URL.Query().Get("from"); from != "" {
		q.Set("from", from)
	}
	res, err := c.call(r, s, "GET", v1+"/rooms", q, nil)
	if err != nil {
		return err
	}
	c.render(w, http.StatusOK, "rooms", s, page{Title: "Rooms", Query: r.URL.Query().Get("q"), Data: res})
	return nil
}

// GET /room?id=: details, members, state, and its deletions' progress.
func (c *Console) room(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.URL.Query().Get("id")
	data := map[string]any{"id": id}
	del, err := c.call(r, s, "GET", v2+"/rooms/"+esc(id)+"/delete_status", nil, nil)
	if err == nil {
		data["deletions"] = del["results"]
	}
	block, err := c.call(r, s, "GET", v1+"/rooms/"+esc(id)+"/block", nil, nil)
	if err != nil {
		return err
	}
	data["block"] = block
	details, err := c.call(r, s, "GET", v1+"/rooms/"+esc(id), nil, nil)
	if err != nil && (mxhttp.AsError(err).Status != http.StatusNotFound || data["deletions"] == nil) {
		return err
	}
	// While a deletion runs the room's parts go one by one: show what is left.
	if err == nil {
		data["details"] = details
		if m, err := c.call(r, s, "GET", v1+"/rooms/"+esc(id)+"/members", nil, nil); err == nil {
			data["members"] = m["members"]
		}
		if st, err := c.call(r, s, "GET", v1+"/rooms/"+esc(id)+"/state", nil, nil); err == nil {
			data["state"] = st["state"]
		}
	}
	c.render(w, http.StatusOK, "room", s, page{Title: id, Flash: r.URL.Query().Get("flash"), Data: data})
	return nil
}

// POST /room/delete (id, block, purge): a durable deletion that runs in
// the background and resumes after a restart; the room page shows it.
func (c *Console) deleteRoom(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PostFormValue("id")
	body := map[string]any{"block": r.PostFormValue("block") == "on", "purge": r.PostFormValue("purge") == "on"}
	if _, err := c.call(r, s, "DELETE", v2+"/rooms/"+esc(id), nil, body); err != nil {
		return err
	}
	return back(w, r, "/room", url.Values{"id": {id}, "flash": {"Deletion started"}})
}

// POST /room/block (id, block=true|false).
func (c *Console) blockRoom(w http.ResponseWriter, r *http.Request, s *session) error {
	id := r.PostFormValue("id")
	if _, err := c.call(r, s, "PUT", v1+"/rooms/"+esc(id)+"/block", nil, map[string]any{"block": r.PostFormValue("block") == "true"}); err != nil {
		return err
	}
	return back(w, r, "/room", url.Values{"id": {id}, "flash": {"Block changed"}})
}

// GET /media?user=: usage by user, and one user's uploads.
func (c *Console) media(w http.ResponseWriter, r *http.Request, s *session) error {
	usage, err := c.db.MediaUsageByUser(r.Context(), 50)
	if err != nil {
		return err
	}
	data := map[string]any{"usage": usage}
	if u := r.URL.Query().Get("user"); u != "" {
		res, err := c.call(r, s, "GET", v1+"/users/"+esc(u)+"/media", url.Values{"limit": {"100"}}, nil)
		if err != nil {
			return err
		}
		data["user"], data["media"] = u, res["media"]
	}
	c.render(w, http.StatusOK, "media", s, page{Title: "Media", Flash: r.URL.Query().Get("flash"), Data: data})
	return nil
}

func mediaPath(r *http.Request) string {
	return esc(r.PostFormValue("server")) + "/" + esc(r.PostFormValue("media"))
}

// POST /media/quarantine (server, media, on=true|false, user).
func (c *Console) quarantine(w http.ResponseWriter, r *http.Request, s *session) error {
	op := "unquarantine"
	if r.PostFormValue("on") == "true" {
		op = "quarantine"
	}
	if _, err := c.call(r, s, "POST", v1+"/media/"+op+"/"+mediaPath(r), nil, nil); err != nil {
		return err
	}
	return back(w, r, "/media", url.Values{"user": {r.PostFormValue("user")}, "flash": {"Media " + op + "d"}})
}

// POST /media/delete (server, media, user).
func (c *Console) deleteMedia(w http.ResponseWriter, r *http.Request, s *session) error {
	if _, err := c.call(r, s, "DELETE", v1+"/media/"+mediaPath(r), nil, nil); err != nil {
		return err
	}
	return back(w, r, "/media", url.Values{"user": {r.PostFormValue("user")}, "flash": {"Media deleted"}})
}

// GET /reports: the queue of event and user reports no admin acted on.
func (c *Console) reports(w http.ResponseWriter, r *http.Request, s *session) error {
	q, err := c.db.ReportQueue(r.Context(), 200)
	if err != nil {
		return err
	}
	c.render(w, http.StatusOK, "reports", s, page{Title: "Reports", Flash: r.URL.Query().Get("flash"), Data: q})
	return nil
}

// POST /reports/act (kind, id, action=resolve|dismiss).
func (c *Console) actOnReport(w http.ResponseWriter, r *http.Request, s *session) error {
	action := r.PostFormValue("action")
	if action != "resolve" && action != "dismiss" {
		return mxhttp.InvalidParam("action must be resolve or dismiss")
	}
	id, err := strconv.ParseInt(r.PostFormValue("id"), 10, 64)
	if err != nil {
		return mxhttp.InvalidParam("Bad report ID")
	}
	err = c.db.ActOnReport(r.Context(), r.PostFormValue("kind"), id, action, s.caller.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return mxhttp.NotFound("No such report")
	}
	if err != nil {
		return err
	}
	return back(w, r, "/reports", url.Values{"flash": {fmt.Sprintf("Report %d: %sd", id, action)}})
}

// GET /tokens: registration tokens.
func (c *Console) tokens(w http.ResponseWriter, r *http.Request, s *session) error {
	res, err := c.call(r, s, "GET", v1+"/registration_tokens", nil, nil)
	if err != nil {
		return err
	}
	c.render(w, http.StatusOK, "tokens", s, page{Title: "Registration tokens", Flash: r.URL.Query().Get("flash"), Data: res})
	return nil
}

// POST /tokens (uses_allowed, days): a new random token.
func (c *Console) newToken(w http.ResponseWriter, r *http.Request, s *session) error {
	body := map[string]any{}
	if v := r.PostFormValue("uses_allowed"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return mxhttp.InvalidParam("uses_allowed must be a non-negative number")
		}
		body["uses_allowed"] = n
	}
	if v := r.PostFormValue("days"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 3650 {
			return mxhttp.InvalidParam("days must be between 1 and 3650")
		}
		body["expiry_time"] = time.Now().Add(time.Duration(n) * 24 * time.Hour).UnixMilli()
	}
	res, err := c.call(r, s, "POST", v1+"/registration_tokens/new", nil, body)
	if err != nil {
		return err
	}
	return back(w, r, "/tokens", url.Values{"flash": {fmt.Sprintf("Token %v created", res["token"])}})
}

// POST /tokens/delete (token).
func (c *Console) deleteToken(w http.ResponseWriter, r *http.Request, s *session) error {
	if _, err := c.call(r, s, "DELETE", v1+"/registration_tokens/"+esc(r.PostFormValue("token")), nil, nil); err != nil {
		return err
	}
	return back(w, r, "/tokens", url.Values{"flash": {"Token deleted"}})
}

// GET /federation: the destinations Hearth sends to, with their backoff.
func (c *Console) federation(w http.ResponseWriter, r *http.Request, s *session) error {
	q := url.Values{"limit": {"200"}}
	if f := r.URL.Query().Get("q"); f != "" {
		q.Set("destination", f)
	}
	res, err := c.call(r, s, "GET", v1+"/federation/destinations", q, nil)
	if err != nil {
		return err
	}
	c.render(w, http.StatusOK, "federation", s, page{Title: "Federation", Query: r.URL.Query().Get("q"), Flash: r.URL.Query().Get("flash"), Data: res})
	return nil
}

// POST /federation/retry (dest): clear the destination's backoff so its
// sender tries again now.
func (c *Console) retryDestination(w http.ResponseWriter, r *http.Request, s *session) error {
	dest := r.PostFormValue("dest")
	if _, err := c.call(r, s, "POST", v1+"/federation/destinations/"+esc(dest)+"/reset_connection", nil, nil); err != nil {
		return err
	}
	if c.queue != nil {
		c.queue.ServerAlive(spec.ServerName(dest))
	}
	return back(w, r, "/federation", url.Values{"flash": {"Retrying " + dest + " now"}})
}

// GET /tasks: room deletions scheduled or running.
func (c *Console) tasks(w http.ResponseWriter, r *http.Request, s *session) error {
	ds, err := c.db.UnfinishedRoomDeletions(r.Context())
	if err != nil {
		return err
	}
	c.render(w, http.StatusOK, "tasks", s, page{Title: "Background tasks", Data: ds})
	return nil
}

// GET /notices: the server notice form.
func (c *Console) noticesPage(w http.ResponseWriter, r *http.Request, s *session) error {
	c.render(w, http.StatusOK, "notices", s, page{Title: "Server notices", Flash: r.URL.Query().Get("flash"),
		Data: map[string]any{"enabled": c.cfg.ServerNoticesLocalpart != "" && c.notices != nil}})
	return nil
}

// POST /notices (user, body): a text notice in the user's notices room.
func (c *Console) sendNotice(w http.ResponseWriter, r *http.Request, s *session) error {
	if c.notices == nil {
		return mxhttp.Unknown("Server notices are not available")
	}
	body := strings.TrimSpace(r.PostFormValue("body"))
	if body == "" {
		return mxhttp.MissingParam("The notice is empty")
	}
	req := map[string]any{"user_id": strings.TrimSpace(r.PostFormValue("user")), "content": map[string]string{"msgtype": "m.text", "body": body}}
	res, err := admin.Call(r.Context(), s.caller, c.notices, "POST", v1+"/send_server_notice", req)
	if err != nil {
		return err
	}
	return back(w, r, "/notices", url.Values{"flash": {fmt.Sprintf("Notice sent (%v)", res["event_id"])}})
}
