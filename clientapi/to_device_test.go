package clientapi_test

import (
	"context"
	"net/http"
	"sync"
	"testing"

	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/hearthtest"
)

func TestSendToDevice(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		ctx := context.Background()
		var mu sync.Mutex
		woken := map[string]int{}
		hs.E2EE.OnChange = func(users []string, device string) {
			mu.Lock()
			defer mu.Unlock()
			for _, u := range users {
				woken[u+"/"+device]++
			}
		}
		alice := newE2EDevice(t, hs, "alice")
		bob1 := newE2EDevice(t, hs, "bob")
		bob2 := addDevice(t, hs, bob1.user, "BOBTWO")

		send := func(txn string, messages map[string]any) {
			t.Helper()
			r := alice.do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/"+txn, map[string]any{"messages": messages})
			hearthtest.Expect(t, r, http.StatusOK, "")
		}
		send("t1", map[string]any{bob1.id: map[string]any{"*": map[string]any{"n": 1}}})
		send("t1", map[string]any{bob1.id: map[string]any{"*": map[string]any{"n": 1}}}) // retry: no second copy
		send("t2", map[string]any{bob1.id: map[string]any{"BOBTWO": map[string]any{"n": 2}, "UNKNOWN": map[string]any{"n": 0}}})

		in1, pos1, err := hs.E2EE.InboxSince(ctx, bob1.id, bob1.deviceID, 0, 100)
		if err != nil || len(in1) != 1 || string(in1[0].Content) != `{"n":1}` || in1[0].Sender != alice.id || in1[0].Type != "m.test" {
			t.Fatalf("bob1 inbox: %+v %v", in1, err)
		}
		in2, pos2, _ := hs.E2EE.InboxSince(ctx, bob2.id, bob2.deviceID, 0, 100)
		if len(in2) != 2 || string(in2[1].Content) != `{"n":2}` {
			t.Fatalf("bob2 inbox: %+v", in2)
		}
		toDevice, _, _ := hs.E2EE.MaxPositions(ctx)
		if pos1 != toDevice || pos2 != toDevice {
			t.Fatalf("next positions %d %d, head %d", pos1, pos2, toDevice)
		}
		// A limit cuts the list; the position stops at the last message given.
		lim, limPos, _ := hs.E2EE.InboxSince(ctx, bob2.id, bob2.deviceID, 0, 1)
		if len(lim) != 1 || limPos != in2[0].Position {
			t.Fatalf("limited: %+v at %d", lim, limPos)
		}
		// Acknowledging deletes only what the token covered.
		if err := hs.E2EE.AckInbox(ctx, bob2.id, bob2.deviceID, limPos); err != nil {
			t.Fatal(err)
		}
		rest, _, _ := hs.E2EE.InboxSince(ctx, bob2.id, bob2.deviceID, 0, 100)
		if len(rest) != 1 || rest[0].Position != in2[1].Position {
			t.Fatalf("after ack: %+v", rest)
		}
		mu.Lock()
		if woken[bob1.id+"/"+bob1.deviceID] != 1 || woken[bob2.id+"/BOBTWO"] != 2 {
			t.Errorf("notifications: %v", woken)
		}
		mu.Unlock()

		// A full inbox drops further messages for that device only.
		hs.E2EE.InboxCap = 2
		send("t3", map[string]any{bob1.id: map[string]any{"*": map[string]any{"n": 3}}})
		send("t4", map[string]any{bob1.id: map[string]any{"*": map[string]any{"n": 4}}})
		full, _, _ := hs.E2EE.InboxSince(ctx, bob1.id, bob1.deviceID, 0, 100)
		if len(full) != 2 {
			t.Fatalf("capped inbox holds %d", len(full))
		}
		// Bad input.
		r := alice.do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/t5", map[string]any{"messages": map[string]any{bob1.id: map[string]any{"*": "not an object"}}})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_BAD_JSON")
		r = alice.do(t, "PUT", "/_matrix/client/v3/sendToDevice/m.test/t6", map[string]any{})
		hearthtest.Expect(t, r, http.StatusBadRequest, "M_MISSING_PARAM")

		// Deleting a device empties its inbox and removes its keys.
		hearthtest.Expect(t, bob2.upload(t, map[string]any{"device_keys": bob2.deviceKeys(t), "one_time_keys": bob2.otks(t, 0, 1)}), http.StatusOK, "")
		_, before, _ := hs.E2EE.MaxPositions(ctx)
		if err := hs.E2EE.DeviceDeleted(ctx, nil, bob2.id, bob2.deviceID); err != nil {
			t.Fatal(err)
		}
		gone, _, _ := hs.E2EE.InboxSince(ctx, bob2.id, bob2.deviceID, 0, 100)
		counts, _ := hs.E2EE.OneTimeKeyCounts(ctx, bob2.id, bob2.deviceID)
		window := func(p int64) e2ee.Positions { return e2ee.Positions{DeviceLists: p} }
		changed, _, _ := hs.E2EE.DeviceListChangesSince(ctx, alice.id, window(before), window(before+10))
		changedSelf, _, _ := hs.E2EE.DeviceListChangesSince(ctx, bob1.id, window(before), window(before+10))
		if len(gone) != 0 || len(counts) != 0 || len(changed) != 0 || len(changedSelf) != 1 {
			t.Fatalf("after delete: inbox %v, counts %v, alice sees %v, bob sees %v", gone, counts, changed, changedSelf)
		}
		r = alice.do(t, "POST", "/_matrix/client/v3/keys/query", map[string]any{"device_keys": map[string]any{bob1.id: []string{}}})
		if _, ok := jsonPath(r.JSON, "device_keys", bob1.id, "BOBTWO").(map[string]any); ok {
			t.Fatalf("deleted device still has keys: %s", r.Body)
		}
	})
}
