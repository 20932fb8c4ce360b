package console_test

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/hearthtest/browsertest"
)

// TestConsoleInChromium drives the console in headless Chromium against a
// real Hearth: sign in, find a user, reset their password (then log in
// with it through the client API), delete a room (then check through the
// API that it is gone), resolve a report.
func TestConsoleInChromium(t *testing.T) {
	browsertest.Chromium(t) // skip before starting servers
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		root, err := hs.Accounts.Register(t.Context(), accounts.NewUser{Localpart: "boss", Password: "bosspass", Admin: true})
		if err != nil {
			t.Fatal(err)
		}
		alice, aliceTok := hs.RegisterUser(t, "alice")
		_, bobTok := hs.RegisterUser(t, "bob")

		r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", aliceTok, map[string]any{"name": "Doomed room", "preset": "public_chat"})
		hearthtest.Expect(t, r, 200, "")
		roomID := r.JSON["room_id"].(string)
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), bobTok, map[string]any{}), 200, "")
		r = hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/t1", aliceTok, map[string]any{"msgtype": "m.text", "body": "spam"})
		hearthtest.Expect(t, r, 200, "")
		eventID := r.JSON["event_id"].(string)
		hearthtest.Expect(t, hs.Do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/report/"+url.PathEscape(eventID), bobTok,
			map[string]any{"reason": "spam"}), 200, "")

		br := browsertest.New(t)
		run, text := br.Run, br.Text
		base := hs.URL + "/_hearth/admin"

		// Sign in.
		run("sign in", chromedp.Navigate(base+"/login"),
			chromedp.SendKeys(chromedp.ID("user"), "boss"), chromedp.SendKeys(chromedp.ID("password"), "bosspass"),
			chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("logout")))

		// Find a user and reset their password.
		run("find alice", chromedp.Navigate(base+"/users"), chromedp.SendKeys(chromedp.ID("q"), "alice"),
			chromedp.Click(chromedp.ID("search")), chromedp.WaitVisible(chromedp.Search(`//input[@id="q" and @value="alice"]`)),
			chromedp.Click(chromedp.Search(`//a[text()="`+alice+`"]`)), chromedp.WaitVisible(chromedp.ID("newpassword")))
		run("reset password", chromedp.SendKeys(chromedp.ID("newpassword"), "fresh-secret"),
			chromedp.Click(chromedp.ID("resetpassword")), chromedp.WaitVisible(chromedp.ID("flash")))
		flash := text("#flash")
		if flash != "Password reset" {
			t.Fatalf("after reset: %q", flash)
		}
		login := func(password string) int {
			return hs.Do(t, "POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.password",
				"identifier": map[string]string{"type": "m.id.user", "user": "alice"}, "password": password}).Status
		}
		if st := login("fresh-secret"); st != 200 {
			t.Fatalf("login with the new password: %d", st)
		}
		if st := login("password"); st != 403 {
			t.Fatalf("login with the old password: %d, want 403", st)
		}

		// Delete the room and follow its progress until complete.
		run("search rooms", chromedp.Navigate(base+"/rooms"), chromedp.SendKeys(chromedp.ID("q"), "Doomed"),
			chromedp.Click(chromedp.ID("search")), chromedp.WaitVisible(chromedp.Search(`//input[@id="q" and @value="Doomed"]`)))
		run("open room", chromedp.Click(chromedp.Search(`//code[text()="`+roomID+`"]`)), chromedp.WaitVisible(chromedp.ID("deleteroom")))
		run("delete room", chromedp.Click(chromedp.CSS(`input[name="block"]`)), chromedp.Click(chromedp.ID("deleteroom")), chromedp.WaitVisible(chromedp.ID("deletions")))
		for i := 0; ; i++ {
			run("room progress", chromedp.Navigate(base+"/room?id="+url.QueryEscape(roomID)), chromedp.WaitVisible(chromedp.ID("deletions")))
			status := text("#deletions .status")
			if status == "complete" {
				break
			}
			if status == "failed" || i > 100 {
				t.Fatalf("deletion status: %q", status)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// Gone through the API: nobody is in it any more and nobody can join (Hearth's purge
		// keeps a room's events, so the admin API still describes it).
		for _, tok := range []string{bobTok} {
			r = hs.Do(t, "GET", "/_matrix/client/v3/joined_rooms", tok, nil)
			hearthtest.Expect(t, r, 200, "")
			if strings.Contains(string(r.Body), roomID) {
				t.Fatalf("a member is still in the deleted room: %s", r.Body)
			}
		}
		r = hs.Do(t, "GET", "/_synapse/admin/v1/rooms/"+url.PathEscape(roomID)+"/members", root.AccessToken, nil)
		hearthtest.Expect(t, r, 200, "")
		if r.JSON["total"] != float64(0) {
			t.Fatalf("members of the deleted room: %s", r.Body)
		}
		if r = hs.Do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), bobTok, map[string]any{}); r.Status != 403 {
			t.Fatalf("joining the deleted and blocked room: %d %s", r.Status, r.Body)
		}

		// Resolve the report: it leaves the queue.
		run("resolve report", chromedp.Navigate(base+"/reports"), chromedp.WaitVisible(chromedp.CSS("#reports .resolve")),
			chromedp.Click(chromedp.CSS("#reports .resolve")), chromedp.WaitVisible(chromedp.ID("empty")))
		flash, empty := text("#flash"), text("#empty")
		if !strings.HasSuffix(flash, "resolved") || empty != "No reports waiting." {
			t.Fatalf("after resolving: flash %q, queue %q", flash, empty)
		}
		q, err := hs.DB.ReportQueue(t.Context(), 10)
		if err != nil || len(q) != 0 {
			t.Fatalf("report queue after resolving: %v %v", q, err)
		}
	})
}
