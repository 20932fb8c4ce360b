package accounts_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// newAccounts opens a fresh store on backend b and the accounts over it.
func newAccounts(t *testing.T, b hearthtest.Backend) *accounts.Accounts {
	t.Helper()
	db, err := storage.Open(context.Background(), hearthtest.DatabaseURL(t, b), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &accounts.Accounts{DB: db, ServerName: "hearth.test", Passwords: accounts.NewPasswords(4, 2)}
}

// authenticate presents token as a client would and returns the caller.
func authenticate(a *accounts.Accounts, token string) (accounts.Caller, error) {
	r := httptest.NewRequest("GET", "/_matrix/client/v3/account/whoami", nil)
	r.Header.Set("Authorization", "Bearer "+token)
	return a.Authenticate(r)
}

// errCode is the Matrix errcode of err, or "" when it is not a Matrix error.
func errCode(err error) string {
	var me *mxhttp.Error
	if errors.As(err, &me) {
		return me.ErrCode
	}
	return ""
}

func mustAuth(t *testing.T, a *accounts.Accounts, token, wantUser, wantDevice string) {
	t.Helper()
	c, err := authenticate(a, token)
	if err != nil {
		t.Fatalf("token of %s/%s does not authenticate: %v", wantUser, wantDevice, err)
	}
	if c.UserID != wantUser || c.DeviceID != wantDevice {
		t.Fatalf("token authenticates as %s/%s, want %s/%s", c.UserID, c.DeviceID, wantUser, wantDevice)
	}
}

func mustNotAuth(t *testing.T, a *accounts.Accounts, token, why string) {
	t.Helper()
	_, err := authenticate(a, token)
	if errCode(err) != "M_UNKNOWN_TOKEN" {
		t.Fatalf("%s: token still authenticates or fails oddly: %v", why, err)
	}
}

// dumpDatabase renders every value of every table of the store, for
// checking that a secret appears nowhere in it.
func dumpDatabase(t *testing.T, db *storage.DB) []byte {
	t.Helper()
	ctx := context.Background()
	q := `SELECT name FROM sqlite_master WHERE type = 'table'`
	if db.Dialect() == storage.Postgres {
		q = `SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'`
	}
	rows, err := db.Read().QueryContext(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	var tables []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, name)
	}
	rows.Close()
	if len(tables) < 10 {
		t.Fatalf("found only %d tables: %v", len(tables), tables)
	}
	var out bytes.Buffer
	for _, table := range tables {
		rows, err := db.Read().QueryContext(ctx, `SELECT * FROM `+table)
		if err != nil {
			t.Fatalf("reading %s: %v", table, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatalf("scanning %s: %v", table, err)
			}
			for _, v := range vals {
				switch v := v.(type) {
				case []byte:
					out.Write(v)
				default:
					fmt.Fprint(&out, v)
				}
				out.WriteByte('|')
			}
			out.WriteByte('\n')
		}
		rows.Close()
	}
	return out.Bytes()
}

// Passwords are stored as bcrypt hashes at the configured cost: the stored
// value is not the password and verifies against it; the right password
// logs in, a wrong one or an unknown user fails with the same error.
func TestPasswordsStoredHashed(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		a := newAccounts(t, b)
		const password = "correct horse battery staple"
		login, err := a.Register(ctx, accounts.NewUser{Localpart: "alice", Password: password})
		if err != nil {
			t.Fatal(err)
		}
		u, err := a.DB.GetUser(ctx, login.UserID)
		if err != nil {
			t.Fatal(err)
		}
		if u.PasswordHash == "" || strings.Contains(u.PasswordHash, password) {
			t.Fatalf("stored password value %q", u.PasswordHash)
		}
		if cost, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil || cost != 4 {
			t.Fatalf("stored value is not a bcrypt hash of cost 4: cost %d, %v", cost, err)
		}
		if bcrypt.CompareHashAndPassword([]byte(u.PasswordHash), []byte(password)) != nil {
			t.Fatal("stored hash does not verify the password")
		}
		if bytes.Contains(dumpDatabase(t, a.DB), []byte(password)) {
			t.Fatal("the password appears in the database in clear")
		}

		got, err := a.CheckPassword(ctx, "alice", password)
		if err != nil || got.UserID != "@alice:hearth.test" {
			t.Fatalf("right password: %v %v", got.UserID, err)
		}
		for _, c := range []struct{ user, pass string }{
			{"alice", password + "!"}, {"alice", ""}, {"alice", strings.ToUpper(password)}, {"nobody", password},
		} {
			got, err := a.CheckPassword(ctx, c.user, c.pass)
			if errCode(err) != "M_FORBIDDEN" || got.UserID != "" {
				t.Fatalf("%s with password %q: user %q, %v; want M_FORBIDDEN and no user", c.user, c.pass, got.UserID, err)
			}
		}
		// A user registered without a password cannot log in with one, not
		// even the empty one.
		if _, err := a.Register(ctx, accounts.NewUser{Localpart: "nopass"}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.CheckPassword(ctx, "nopass", ""); errCode(err) != "M_FORBIDDEN" {
			t.Fatalf("passwordless user, empty password: %v", err)
		}
		// Passwords bcrypt would truncate are refused, not silently cut.
		if _, err := a.Register(ctx, accounts.NewUser{Localpart: "long", Password: strings.Repeat("x", 73)}); errCode(err) != "M_WEAK_PASSWORD" {
			t.Fatalf("73-byte password: %v", err)
		}
	})
}

// Access and refresh tokens are stored only as hashes: after logins with
// refresh tokens, neither token appears anywhere in the database, and the
// access_tokens row is keyed by the token's SHA-256.
func TestTokensStoredHashed(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		a := newAccounts(t, b)
		first, err := a.Register(ctx, accounts.NewUser{Localpart: "alice", Password: "pw", RefreshToken: true})
		if err != nil {
			t.Fatal(err)
		}
		if first.AccessToken == "" || first.RefreshToken == "" {
			t.Fatalf("registration issued %+v", first)
		}
		refreshed, err := a.Refresh(ctx, first.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		dump := dumpDatabase(t, a.DB)
		for _, tok := range []string{first.AccessToken, first.RefreshToken, refreshed.AccessToken, refreshed.RefreshToken} {
			secret := strings.TrimPrefix(strings.TrimPrefix(tok, "mat_"), "mar_")
			if bytes.Contains(dump, []byte(secret)) {
				t.Fatalf("token %s… is stored in clear", tok[:8])
			}
		}
		var n int
		if err := a.DB.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM access_tokens WHERE token_hash = $1 AND user_id = $2`,
			storage.TokenHash(refreshed.AccessToken), "@alice:hearth.test").Scan(&n); err != nil || n != 1 {
			t.Fatalf("rows keyed by the token's hash: %d, %v", n, err)
		}
		mustAuth(t, a, refreshed.AccessToken, "@alice:hearth.test", first.DeviceID)
	})
}

// Each login makes its own device with its own token; logging in again
// with an existing device ID replaces only that device's token.
func TestEachDeviceHasItsOwnToken(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		a := newAccounts(t, b)
		const user = "@alice:hearth.test"
		reg, err := a.Register(ctx, accounts.NewUser{Localpart: "alice", Password: "pw", DeviceID: "PHONE"})
		if err != nil {
			t.Fatal(err)
		}
		logins := []accounts.Login{reg}
		for range 3 {
			var l accounts.Login
			err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
				var err error
				l, err = a.LoginDevice(ctx, tx, accounts.NewDevice{UserID: user}, time.Now())
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			logins = append(logins, l)
		}
		devices, tokens := map[string]bool{}, map[string]bool{}
		for _, l := range logins {
			if devices[l.DeviceID] || tokens[l.AccessToken] {
				t.Fatalf("device %s or its token was handed out twice", l.DeviceID)
			}
			devices[l.DeviceID], tokens[l.AccessToken] = true, true
			mustAuth(t, a, l.AccessToken, user, l.DeviceID)
		}
		ds, err := a.DB.ListDevices(ctx, user)
		if err != nil || len(ds) != 4 {
			t.Fatalf("%d devices stored, want 4: %v", len(ds), err)
		}

		// Logging in as PHONE again: its old token dies, the others live.
		var again accounts.Login
		err = a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
			var err error
			again, err = a.LoginDevice(ctx, tx, accounts.NewDevice{UserID: user, DeviceID: "PHONE"}, time.Now())
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		mustNotAuth(t, a, reg.AccessToken, "PHONE's token after a new login as PHONE")
		mustAuth(t, a, again.AccessToken, user, "PHONE")
		for _, l := range logins[1:] {
			mustAuth(t, a, l.AccessToken, user, l.DeviceID)
		}
		if ds, _ := a.DB.ListDevices(ctx, user); len(ds) != 4 {
			t.Fatalf("re-login with a device ID made a device: %d devices", len(ds))
		}
	})
}

// Logging out (deleting the device) revokes its token at once, even one
// the authentication cache holds, and leaves the user's other devices be.
func TestLogoutRevokesToken(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		a := newAccounts(t, b)
		revoked := []string{}
		a.TokensRevoked = func(userID string) { revoked = append(revoked, userID) }
		const user = "@alice:hearth.test"
		one, err := a.Register(ctx, accounts.NewUser{Localpart: "alice", Password: "pw"})
		if err != nil {
			t.Fatal(err)
		}
		var two accounts.Login
		if err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
			two, err = a.LoginDevice(ctx, tx, accounts.NewDevice{UserID: user}, time.Now())
			return err
		}); err != nil {
			t.Fatal(err)
		}
		// Authenticate first so the token sits in the cache.
		mustAuth(t, a, one.AccessToken, user, one.DeviceID)
		if err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
			return a.DeleteDevices(ctx, tx, user, []string{one.DeviceID})
		}); err != nil {
			t.Fatal(err)
		}
		mustNotAuth(t, a, one.AccessToken, "after logout")
		mustAuth(t, a, two.AccessToken, user, two.DeviceID)
		if _, err := a.DB.GetDevice(ctx, user, one.DeviceID); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("logged-out device still stored: %v", err)
		}
		if len(revoked) != 1 || revoked[0] != user {
			t.Fatalf("TokensRevoked told of %v, want [%s]", revoked, user)
		}

		// Logging out everywhere revokes the rest.
		if err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
			return a.DeleteOtherDevices(ctx, tx, user, "")
		}); err != nil {
			t.Fatal(err)
		}
		mustNotAuth(t, a, two.AccessToken, "after logout everywhere")
		if ds, err := a.DB.ListDevices(ctx, user); err != nil || len(ds) != 0 {
			t.Fatalf("devices left after logout everywhere: %d %v", len(ds), err)
		}
	})
}

// A deactivated user cannot log in with their old password, and their
// access tokens stop working even where a device row remained.
func TestDeactivatedUserCannotLogIn(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		a := newAccounts(t, b)
		const user = "@alice:hearth.test"
		reg, err := a.Register(ctx, accounts.NewUser{Localpart: "alice", Password: "pw"})
		if err != nil {
			t.Fatal(err)
		}
		// Deactivation alone, without the device deletion the API does
		// with it: the store itself must refuse the token.
		if err := a.DB.WriteTx(ctx, func(tx *sql.Tx) error {
			return storage.DeactivateUser(ctx, tx, user, false)
		}); err != nil {
			t.Fatal(err)
		}
		if _, err := a.CheckPassword(ctx, "alice", "pw"); errCode(err) != "M_FORBIDDEN" {
			t.Fatalf("deactivated user's password: %v", err)
		}
		mustNotAuth(t, a, reg.AccessToken, "a deactivated user's token")
		u, err := a.DB.GetUser(ctx, user)
		if err != nil || !u.Deactivated || u.PasswordHash != "" {
			t.Fatalf("after deactivation: %+v %v", u, err)
		}
		// The user ID stays taken forever.
		if _, err := a.Register(ctx, accounts.NewUser{Localpart: "alice", Password: "pw"}); errCode(err) != "M_USER_IN_USE" {
			t.Fatalf("registering a deactivated user's ID again: %v", err)
		}
	})
}

// A refresh token keeps working until the new generation is first used;
// then the old access and refresh tokens are dead and the new ones live.
func TestRefreshRotation(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		a := newAccounts(t, b)
		const user = "@alice:hearth.test"
		first, err := a.Register(ctx, accounts.NewUser{Localpart: "alice", Password: "pw", RefreshToken: true})
		if err != nil {
			t.Fatal(err)
		}
		if first.ExpiresInMS <= 0 {
			t.Fatalf("refreshable access token without a lifetime: %+v", first)
		}
		second, err := a.Refresh(ctx, first.RefreshToken)
		if err != nil {
			t.Fatal(err)
		}
		// The response could have been lost: the old refresh token still works.
		retry, err := a.Refresh(ctx, first.RefreshToken)
		if err != nil {
			t.Fatalf("old refresh token before the new generation's first use: %v", err)
		}
		if retry.DeviceID != first.DeviceID || second.DeviceID != first.DeviceID {
			t.Fatalf("refresh changed the device: %s %s %s", first.DeviceID, second.DeviceID, retry.DeviceID)
		}
		mustAuth(t, a, first.AccessToken, user, first.DeviceID)
		// First use of the retry's access token kills the first generation.
		mustAuth(t, a, retry.AccessToken, user, first.DeviceID)
		mustNotAuth(t, a, first.AccessToken, "first access token after the next generation's use")
		if _, err := a.Refresh(ctx, first.RefreshToken); errCode(err) != "M_UNKNOWN_TOKEN" {
			t.Fatalf("first refresh token after the next generation's use: %v", err)
		}
		if _, err := a.Refresh(ctx, "mar_not-a-token"); errCode(err) != "M_UNKNOWN_TOKEN" {
			t.Fatalf("unknown refresh token: %v", err)
		}
	})
}

// Registration folds the localpart to lower case, refuses taken and
// malformed IDs, and a failure inside the registration's transaction
// leaves no user, device or token behind.
func TestRegistrationIsAtomic(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		ctx := context.Background()
		a := newAccounts(t, b)
		l, err := a.Register(ctx, accounts.NewUser{Localpart: "Alice", Password: "pw"})
		if err != nil || l.UserID != "@alice:hearth.test" {
			t.Fatalf("registering Alice: %v %v", l.UserID, err)
		}
		if _, err := a.Register(ctx, accounts.NewUser{Localpart: "ALICE"}); errCode(err) != "M_USER_IN_USE" {
			t.Fatalf("ALICE after Alice: %v", err)
		}
		for _, bad := range []string{"", "al ice", "al:ice", "élise", strings.Repeat("a", 250)} {
			if _, err := a.Register(ctx, accounts.NewUser{Localpart: bad}); errCode(err) != "M_INVALID_USERNAME" {
				t.Fatalf("localpart %q: %v", bad, err)
			}
		}
		boom := errors.New("session already used")
		_, err = a.Register(ctx, accounts.NewUser{Localpart: "bob", Password: "pw",
			InTx: func(context.Context, *sql.Tx) error { return boom }})
		if !errors.Is(err, boom) {
			t.Fatalf("failing InTx: %v", err)
		}
		if ok, err := a.DB.UserExists(ctx, "bob"); err != nil || ok {
			t.Fatalf("rolled-back registration left a user: %v %v", ok, err)
		}
		var n int
		if err := a.DB.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM devices WHERE user_id = $1`, "@bob:hearth.test").Scan(&n); err != nil || n != 0 {
			t.Fatalf("rolled-back registration left %d devices: %v", n, err)
		}
		if err := a.DB.Read().QueryRowContext(ctx, `SELECT COUNT(*) FROM access_tokens WHERE user_id = $1`, "@bob:hearth.test").Scan(&n); err != nil || n != 0 {
			t.Fatalf("rolled-back registration left %d tokens: %v", n, err)
		}
		// InhibitLogin makes the user without a device or token.
		l, err = a.Register(ctx, accounts.NewUser{Localpart: "carol", Password: "pw", InhibitLogin: true})
		if err != nil || l.AccessToken != "" || l.DeviceID != "" {
			t.Fatalf("inhibit_login: %+v %v", l, err)
		}
		if ds, _ := a.DB.ListDevices(ctx, "@carol:hearth.test"); len(ds) != 0 {
			t.Fatalf("inhibit_login made %d devices", len(ds))
		}
	})
}
