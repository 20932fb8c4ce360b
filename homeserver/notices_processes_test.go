package homeserver_test

import (
	"fmt"
	"net/http"
	"sync"
	"testing"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// First notices to the same users sent at once through two processes make
// one notices room per user: the lock on making a user's room is held in
// PostgreSQL, not only in each process.
func TestServerNoticeRoomAcrossProcesses(t *testing.T) {
	onPostgres(t, func(t *testing.T) {
		p1 := hearthtest.NewServer(t, hearthtest.Postgres, func(c *config.Config) { c.ServerNoticesLocalpart = "notices" })
		p2 := p1.AnotherProcess(t)
		login, err := p1.Accounts.Register(t.Context(), accounts.NewUser{Localpart: "admin", Password: "password", Admin: true})
		if err != nil {
			t.Fatal(err)
		}
		const users, perProcess = 4, 3
		var ids []string
		for i := range users {
			id, _ := p1.RegisterUser(t, fmt.Sprintf("user%d", i))
			ids = append(ids, id)
		}
		var wg sync.WaitGroup
		failures := make(chan string, users*2*perProcess)
		for _, id := range ids {
			for _, p := range []*hearthtest.Server{p1, p2} {
				for n := range perProcess {
					wg.Go(func() {
						r := p.Do(t, "POST", "/_synapse/admin/v1/send_server_notice", login.AccessToken,
							map[string]any{"user_id": id, "content": map[string]any{"msgtype": "m.text", "body": fmt.Sprint("notice ", n)}})
						if r.Status != http.StatusOK {
							failures <- fmt.Sprintf("%s: %d %s", id, r.Status, r.Body)
						}
					})
				}
			}
		}
		wg.Wait()
		close(failures)
		for f := range failures {
			t.Error("notice failed:", f)
		}
		ctx := t.Context()
		for _, id := range ids {
			recorded, err := storage.ServerNoticeRoom(ctx, p1.DB.Read(), id)
			if err != nil {
				t.Fatal(err)
			}
			invited, err := storage.RoomsOfUser(ctx, p1.DB.Read(), id, "invite")
			if err != nil {
				t.Fatal(err)
			}
			if len(invited) != 1 || invited[0].RoomID != recorded {
				t.Errorf("%s is invited to %d rooms (recorded notices room %s): %+v", id, len(invited), recorded, invited)
			}
		}
		made, err := storage.RoomsOfUser(ctx, p1.DB.Read(), "@notices:"+p1.Config.ServerName, "join")
		if err != nil {
			t.Fatal(err)
		}
		if len(made) != users {
			t.Errorf("the notices account is in %d rooms for %d users", len(made), users)
		}
	})
}
