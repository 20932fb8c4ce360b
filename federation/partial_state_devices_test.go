package federation_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// remoteDeviceName is the display name hs keeps for a remote user's
// device, "" if it keeps none.
func remoteDeviceName(t *testing.T, hs *hearthtest.Server, userID, deviceID string) string {
	t.Helper()
	devs, err := storage.RemoteDevicesWithKeys(context.Background(), hs.DB.Read(), userID, []string{deviceID})
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) == 0 {
		return ""
	}
	return devs[0].DisplayName
}

func pendingDeviceLists(t *testing.T, hs *hearthtest.Server, userID string) int {
	t.Helper()
	var n int
	if err := hs.DB.Read().QueryRowContext(context.Background(), `SELECT COUNT(*) FROM pending_remote_device_lists WHERE user_id = $1`, userID).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Device lists across a partial-state join (MSC3902, Device management),
// between three Hearth servers: B holds the room (alice, bob), C is in it
// (carol), and A joins it (charlie) with partial state; B's send_join
// answer leaves C out of servers_in_room, and B holds the resync back.
// While the state is partial: charlie's device change reaches B (named)
// but not C; bob's device change is kept pending on A (bob is not known
// to be in the room); a key query for bob keeps no list. Once complete:
// C gets charlie's missed change, charlie's sync shows bob as changed, and
// a key query for bob keeps his list.
func TestPartialStateJoinDeviceLists(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 3, nil)
		a, bsrv, csrv := fed[0], fed[1], fed[2]
		alice, bob := newFedUser(t, bsrv, "alice"), newFedUser(t, bsrv, "bob")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Big room"})
		joinVia(t, bob, roomID, alice)
		carol := newFedUser(t, csrv, "carol")
		joinVia(t, carol, roomID, alice)
		bobDev := newE2EDevice(t, bob)
		bobDev.uploadKeys(t, 0)

		release := make(chan struct{})
		var releaseOnce sync.Once
		t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
		bsrv.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				switch {
				case strings.Contains(req.URL.Path, "/state_ids/"):
					select {
					case <-release:
					case <-req.Context().Done():
						return
					}
				case strings.Contains(req.URL.Path, "/v2/send_join/"):
					rec := httptest.NewRecorder()
					fedH.ServeHTTP(rec, req)
					var body map[string]any
					if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &body) != nil {
						t.Errorf("send_join answered %d: %s", rec.Code, rec.Body)
						return
					}
					body["servers_in_room"] = []string{bsrv.Config.ServerName}
					out, _ := json.Marshal(body)
					w.Header().Set("Content-Type", "application/json")
					w.Header().Set("Content-Length", strconv.Itoa(len(out)))
					_, _ = w.Write(out)
					return
				}
				fedH.ServeHTTP(w, req)
			})
		})

		charlie := newFedUser(t, a, "charlie")
		charlieDev := newE2EDevice(t, charlie)
		charlieDev.uploadKeys(t, 0)
		joinVia(t, charlie, roomID, alice)
		ctx := context.Background()
		if partial, err := a.Rooms.IsPartialState(ctx, roomID); err != nil || !partial {
			t.Fatalf("after the join: partial %v, %v", partial, err)
		}
		charlieSync := newSyncer(t, charlie)
		carol.waitMembership(t, roomID, charlie.id, "join")

		// Incoming: kept pending, not followed.
		hearthtest.Expect(t, bob.do(t, "PUT", "/_matrix/client/v3/devices/"+url.PathEscape(bobDev.deviceID), map[string]any{"display_name": "bob's phone"}), http.StatusOK, "")
		eventually(t, "A keeps bob's update pending", func() bool { return pendingDeviceLists(t, a, bob.id) == 1 })
		if r := charlieDev.queryKeys(t, bob.id); get(r.JSON, "device_keys", bob.id, bobDev.deviceID) == nil {
			t.Fatalf("charlie's query during the resync lacks bob's device: %s", r.Body)
		}
		if _, have, err := storage.RemoteDeviceListStreamID(ctx, a.DB.Read(), bob.id); err != nil || have {
			t.Fatalf("A keeps bob's device list during the resync (%v)", err)
		}

		// Outgoing: to the servers named, and only them.
		hearthtest.Expect(t, charlie.do(t, "PUT", "/_matrix/client/v3/devices/"+url.PathEscape(charlieDev.deviceID), map[string]any{"display_name": "during the resync"}), http.StatusOK, "")
		eventually(t, "B has charlie's change", func() bool {
			return remoteDeviceName(t, bsrv, charlie.id, charlieDev.deviceID) == "during the resync"
		})
		time.Sleep(300 * time.Millisecond) // sent together with B's, had it gone to C
		if name := remoteDeviceName(t, csrv, charlie.id, charlieDev.deviceID); name == "during the resync" {
			t.Fatal("C, not named by send_join, got charlie's change during the resync")
		}

		releaseOnce.Do(func() { close(release) })
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := a.Rooms.AwaitFullState(actx, roomID); err != nil {
			t.Fatal(err)
		}
		// The servers in the room that were not told get the change now.
		eventually(t, "C has charlie's change made during the resync", func() bool {
			return remoteDeviceName(t, csrv, charlie.id, charlieDev.deviceID) == "during the resync"
		})
		// Bob's update is shown, and no longer pending.
		charlieSync.until(t, "bob as changed", func(resp map[string]any) bool {
			return contains(get(resp, "device_lists", "changed"), bob.id)
		})
		if n := pendingDeviceLists(t, a, bob.id); n != 0 {
			t.Fatalf("bob is still pending after the resync: %d", n)
		}
		// Bob now shares a room with charlie: his list is fetched and kept.
		if r := charlieDev.queryKeys(t, bob.id); get(r.JSON, "device_keys", bob.id, bobDev.deviceID, "unsigned", "device_display_name") != "bob's phone" {
			t.Fatalf("charlie's query after the resync: %s", r.Body)
		}
		if _, have, err := storage.RemoteDeviceListStreamID(ctx, a.DB.Read(), bob.id); err != nil || !have {
			t.Fatalf("A keeps no device list for bob after the resync (%v)", err)
		}
		// And changes flow as in any room.
		hearthtest.Expect(t, charlie.do(t, "PUT", "/_matrix/client/v3/devices/"+url.PathEscape(charlieDev.deviceID), map[string]any{"display_name": "after the resync"}), http.StatusOK, "")
		eventually(t, "B and C have charlie's change after the resync", func() bool {
			return remoteDeviceName(t, bsrv, charlie.id, charlieDev.deviceID) == "after the resync" &&
				remoteDeviceName(t, csrv, charlie.id, charlieDev.deviceID) == "after the resync"
		})
	})
}

// A local user joining a room whose state is partial (MSC3902) is joined
// through a server with the full state: our partial state lacks the
// members, so it cannot see a ban. A user B banned is refused; another
// joins through B's make_join and send_join; one already joined stays.
func TestPartialStateLocalJoinThroughResident(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		fed := hearthtest.NewFederation(t, b, 2, nil)
		a, bsrv := fed[0], fed[1]
		alice := newFedUser(t, bsrv, "alice")
		roomID := alice.createRoom(t, map[string]any{"preset": "public_chat", "name": "Big room"})
		dave := "@dave:" + a.Config.ServerName
		hearthtest.Expect(t, alice.do(t, "POST", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/ban", map[string]any{"user_id": dave}), http.StatusOK, "")

		release := make(chan struct{})
		var releaseOnce sync.Once
		t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
		var mu sync.Mutex
		sendJoins := 0
		var pushed []string // the bodies of the transactions A sent B
		bsrv.WrapFederation(func(fedH, _ http.Handler) http.Handler {
			return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/federation/v1/send/") {
					body, _ := io.ReadAll(req.Body)
					req.Body = io.NopCloser(bytes.NewReader(body))
					mu.Lock()
					pushed = append(pushed, string(body))
					mu.Unlock()
				}
				if strings.Contains(req.URL.Path, "/state_ids/") {
					select {
					case <-release:
					case <-req.Context().Done():
						return
					}
				}
				if strings.Contains(req.URL.Path, "/send_join/") {
					mu.Lock()
					sendJoins++
					mu.Unlock()
				}
				fedH.ServeHTTP(w, req)
			})
		})
		charlie := newFedUser(t, a, "charlie")
		joinVia(t, charlie, roomID, alice)
		ctx := context.Background()
		if partial, err := a.Rooms.IsPartialState(ctx, roomID); err != nil || !partial {
			t.Fatalf("after the join: partial %v, %v", partial, err)
		}

		daveUser := newFedUser(t, a, "dave")
		r := daveUser.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{})
		hearthtest.Expect(t, r, http.StatusForbidden, "M_FORBIDDEN")
		if m, _, err := a.Rooms.MembershipOf(ctx, roomID, dave); err == nil && m == "join" {
			t.Fatal("dave, banned on B, joined through A's partial state")
		}

		erin := newFedUser(t, a, "erin")
		hearthtest.Expect(t, erin.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}), http.StatusOK, "")
		alice.waitMembership(t, roomID, erin.id, "join")
		if m, _, err := a.Rooms.MembershipOf(ctx, roomID, erin.id); err != nil || m != "join" {
			t.Fatalf("erin on A: %q, %v", m, err)
		}
		// B, which took the join, sends it to the room: A does not send it
		// to B again (a later event of erin's, sent after it, arrives).
		r = erin.do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/t1", map[string]any{"msgtype": "m.text", "body": "erin is here"})
		hearthtest.Expect(t, r, http.StatusOK, "")
		alice.waitForMessage(t, roomID, "erin is here")
		mu.Lock()
		for _, body := range pushed {
			if strings.Contains(body, `"state_key":"`+erin.id+`"`) {
				t.Errorf("A sent erin's join to B in a transaction: %s", body)
			}
		}
		mu.Unlock()
		// Joining again while joined (a profile change) stays local.
		hearthtest.Expect(t, erin.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}), http.StatusOK, "")
		mu.Lock()
		n := sendJoins
		mu.Unlock()
		if n != 2 { // charlie's and erin's
			t.Fatalf("B answered %d send_join requests, want 2", n)
		}
		releaseOnce.Do(func() { close(release) })
		actx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := a.Rooms.AwaitFullState(actx, roomID); err != nil {
			t.Fatal(err)
		}
		// Complete: a join is local again.
		frank := newFedUser(t, a, "frank")
		hearthtest.Expect(t, frank.do(t, "POST", "/_matrix/client/v3/join/"+url.PathEscape(roomID), map[string]any{}), http.StatusOK, "")
		alice.waitMembership(t, roomID, frank.id, "join")
		mu.Lock()
		n = sendJoins
		mu.Unlock()
		if n != 2 {
			t.Fatalf("B answered %d send_join requests after the resync, want 2", n)
		}
	})
}
