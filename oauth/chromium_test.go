package oauth_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"golang.org/x/oauth2"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/hearthtest/browsertest"
)

// TestOAuthInChromium drives the pages in headless Chromium against a real
// Hearth, with golang.org/x/oauth2 as the application: a new user
// registers (prompt=create) and consents, signs out of the pages and signs
// in again for a second device, then on the account page sees both
// devices, renames one and signs the other out, switches the page to
// Korean, sets a display name and deactivates the account. The
// application's redirect URI is a loopback server of the test, so the
// browser really leaves the pages for the client, under their CSP.
func TestOAuthInChromium(t *testing.T) {
	browsertest.Chromium(t)
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		s := hearthtest.NewServer(t, b, nil)
		app := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			fmt.Fprint(w, `<!doctype html><title>App</title><p id="callback">Back in the app</p>`)
		}))
		defer app.Close()
		md := metadata(t, s)
		clientID := nativeClient(t, s)
		conf := func(device string) *oauth2.Config {
			c := clientConfig(md, clientID, device)
			c.RedirectURL = app.URL + "/callback" // any port of the registered loopback URI
			return c
		}

		br := browsertest.New(t, chromedp.Flag("accept-lang", "en-US,en"))
		run, text, attr := br.Run, br.Text, br.Attribute
		// exchange runs the browser from the authorization URL through consent
		// back to the application, then exchanges the code.
		exchange := func(c *oauth2.Config, verifier, state string) *oauth2.Token {
			t.Helper()
			run("consent", chromedp.WaitVisible(chromedp.ID("allow")))
			if h := text("h1"); h != "Allow Test app to use your account?" {
				t.Fatalf("consent heading %q", h)
			}
			run("allow", chromedp.Click(chromedp.ID("allow")), chromedp.WaitVisible(chromedp.ID("callback")))
			loc, err := chromedp.Run(br.Ctx, chromedp.Location())
			if err != nil {
				t.Fatal(err)
			}
			u, _ := url.Parse(loc)
			if u.Host != strings.TrimPrefix(app.URL, "http://") || u.Path != "/callback" || u.Query().Get("state") != state {
				t.Fatalf("back at %s", loc)
			}
			tok, err := c.Exchange(ctx, u.Query().Get("code"), oauth2.VerifierOption(verifier))
			if err != nil {
				t.Fatalf("exchange: %v", err)
			}
			return tok
		}

		// Register through prompt=create, and consent.
		c1, v1 := conf("CHROMEDEV1"), oauth2.GenerateVerifier()
		run("sign-up page", chromedp.Navigate(c1.AuthCodeURL("s1", oauth2.S256ChallengeOption(v1), oauth2.SetAuthURLParam("prompt", "create"))),
			chromedp.WaitVisible(chromedp.ID("register")))
		if lang := attr("html", "lang"); lang != "en" {
			t.Fatalf("page language %q", lang)
		}
		run("register", chromedp.SendKeys(chromedp.ID("username"), "carol"), chromedp.SendKeys(chromedp.ID("password"), "correct horse"),
			chromedp.SendKeys(chromedp.ID("password2"), "correct horse"), chromedp.Click(chromedp.ID("register")))
		tok1 := exchange(c1, v1, "s1")
		if r := whoami(t, s, tok1.AccessToken); r.JSON["user_id"] != "@carol:hearth.test" || r.JSON["device_id"] != "CHROMEDEV1" {
			t.Fatalf("whoami: %s", r.Body)
		}

		// Sign out of the pages, then sign in (a wrong password first) for a second device.
		run("page sign-out", chromedp.Navigate(s.URL+"/_hearth/account"), chromedp.WaitVisible(chromedp.ID("page-signout")),
			chromedp.Click(chromedp.ID("page-signout")), chromedp.WaitVisible(chromedp.ID("signin")))
		c2, v2 := conf("CHROMEDEV2"), oauth2.GenerateVerifier()
		run("wrong password", chromedp.Navigate(c2.AuthCodeURL("s2", oauth2.S256ChallengeOption(v2))), chromedp.WaitVisible(chromedp.ID("signin")),
			chromedp.SendKeys(chromedp.ID("username"), "carol"), chromedp.SendKeys(chromedp.ID("password"), "wrong"),
			chromedp.Click(chromedp.ID("signin")), chromedp.WaitVisible(chromedp.ID("form-error")))
		if e, inv, desc := text("#form-error"), attr("#password", "aria-invalid"), attr("#password", "aria-describedby"); e != "Invalid username or password." || inv != "true" || desc != "form-error" {
			t.Fatalf("wrong password: error %q, aria-invalid %q, aria-describedby %q", e, inv, desc)
		}
		run("sign in", chromedp.SendKeys(chromedp.ID("password"), "correct horse"), chromedp.Click(chromedp.ID("signin")))
		tok2 := exchange(c2, v2, "s2")
		hearthtest.Expect(t, whoami(t, s, tok2.AccessToken), http.StatusOK, "")

		// The account page lists both; rename one, sign the other out.
		run("account page", chromedp.Navigate(s.URL+"/_hearth/account"), chromedp.WaitVisible(chromedp.ID("device-CHROMEDEV1")),
			chromedp.WaitVisible(chromedp.ID("device-CHROMEDEV2")))
		if row := text("#device-CHROMEDEV2"); !strings.Contains(row, "CHROMEDEV2") || !strings.Contains(row, "Test app") {
			t.Fatalf("device row: %q", row)
		}
		run("rename", chromedp.SetValue(chromedp.ID("name-CHROMEDEV1"), "Carol laptop"), chromedp.Click(chromedp.ID("rename-CHROMEDEV1")),
			chromedp.WaitVisible(chromedp.Search(`//input[@id="name-CHROMEDEV1" and @value="Carol laptop"]`)))
		if r := s.Do(t, "GET", "/_matrix/client/v3/devices/CHROMEDEV1", tok1.AccessToken, nil); r.JSON["display_name"] != "Carol laptop" {
			t.Fatalf("renamed device: %s", r.Body)
		}
		run("sign out a device", chromedp.Click(chromedp.ID("delete-CHROMEDEV2")), chromedp.WaitVisible(chromedp.ID("device-list")),
			chromedp.WaitNotPresent(chromedp.ID("device-CHROMEDEV2")))
		hearthtest.Expect(t, whoami(t, s, tok2.AccessToken), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		hearthtest.Expect(t, whoami(t, s, tok1.AccessToken), http.StatusOK, "")

		// Switch to Korean: it sticks on the next page.
		run("Korean", chromedp.Click(chromedp.CSS(`a[hreflang="ko"]`)), chromedp.WaitVisible(chromedp.Search(`//html[@lang="ko"]`)),
			chromedp.Navigate(s.URL+"/_hearth/account"), chromedp.WaitVisible(chromedp.ID("device-list")))
		if lang, h := attr("html", "lang"), text("h1"); lang != "ko" || h != "내 계정" {
			t.Fatalf("after switching to Korean: lang %q, heading %q", lang, h)
		}

		// Display name.
		run("profile", chromedp.SetValue(chromedp.ID("displayname"), "캐롤"), chromedp.Click(chromedp.ID("save-profile")),
			chromedp.WaitVisible(chromedp.Search(`//input[@id="displayname" and @value="캐롤"]`)))
		if r := s.Do(t, "GET", "/_matrix/client/v3/profile/@carol:hearth.test/displayname", "", nil); r.JSON["displayname"] != "캐롤" {
			t.Fatalf("display name: %s", r.Body)
		}

		// Deactivation: a wrong password is said at the field; the right one ends the account.
		run("deactivate, wrong password", chromedp.SendKeys(chromedp.ID("confirm"), "nope"), chromedp.Click(chromedp.ID("deactivate-account")),
			chromedp.WaitVisible(chromedp.ID("deactivate-error")))
		if e := text("#deactivate-error"); e != "비밀번호가 올바르지 않습니다." {
			t.Fatalf("deactivation error %q", e)
		}
		hearthtest.Expect(t, whoami(t, s, tok1.AccessToken), http.StatusOK, "")
		run("deactivate", chromedp.SendKeys(chromedp.ID("confirm"), "correct horse"), chromedp.Click(chromedp.ID("deactivate-account")),
			chromedp.WaitVisible(chromedp.CSS(`p[role="status"]`)))
		if m := text(`p[role="status"]`); m != "@carol:hearth.test 계정이 비활성화되었습니다." {
			t.Fatalf("after deactivation: %q", m)
		}
		hearthtest.Expect(t, whoami(t, s, tok1.AccessToken), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		run("signed out", chromedp.Navigate(s.URL+"/_hearth/account"), chromedp.WaitVisible(chromedp.ID("signin")))
	})
}
