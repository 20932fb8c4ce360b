package federation_test

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/config"
	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

// receiver is a federation receiver for tests: it checks each transaction's
// X-Matrix signature against the sending Hearth's key and records it, or
// answers 503 while down.
type receiver struct {
	srv  *httptest.Server
	name spec.ServerName

	mu       sync.Mutex
	down     bool
	origin   spec.ServerName
	key      gomatrixserverlib.KeyID
	pub      []byte
	attempts []string // transaction IDs, including failed attempts
	txns     []gomatrixserverlib.Transaction
}

func newReceiver(t *testing.T) *receiver {
	rc := &receiver{down: true}
	rc.srv = httptest.NewTLSServer(http.HandlerFunc(rc.serve))
	t.Cleanup(rc.srv.Close)
	rc.name = spec.ServerName(strings.TrimPrefix(rc.srv.URL, "https://"))
	return rc
}

// caFile writes the receiver's certificate for federation_ca_certs.
func (rc *receiver) caFile(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "receiver.pem")
	writeFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rc.srv.Certificate().Raw}))
	return path
}

func (rc *receiver) VerifyJSONs(ctx context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	out := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		out[i].Error = gomatrixserverlib.VerifyJSON(string(r.ServerName), rc.key, rc.pub, r.Message)
	}
	return out, nil
}

func (rc *receiver) serve(w http.ResponseWriter, r *http.Request) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if !strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/") {
		http.NotFound(w, r)
		return
	}
	txnID, _ := url.PathUnescape(strings.TrimPrefix(r.URL.Path, "/_matrix/federation/v1/send/"))
	rc.attempts = append(rc.attempts, txnID)
	if rc.down {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	fr, resp := fclient.VerifyHTTPRequest(r, time.Now(), rc.name, nil, rc)
	if fr == nil || fr.Origin() != rc.origin {
		http.Error(w, "bad signature", resp.Code)
		return
	}
	var txn gomatrixserverlib.Transaction
	if err := json.Unmarshal(fr.Content(), &txn); err != nil {
		http.Error(w, "bad json", http.StatusBadRequest)
		return
	}
	txn.TransactionID = gomatrixserverlib.TransactionID(txnID)
	rc.txns = append(rc.txns, txn)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"pdus":{}}`))
}

func (rc *receiver) setDown(down bool) {
	rc.mu.Lock()
	rc.down = down
	rc.mu.Unlock()
}

// waitFor polls cond (under the receiver's lock) for up to 20 s.
func (rc *receiver) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		rc.mu.Lock()
		ok := cond()
		rc.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestOutboundQueueSurvivesDowntimeAndRestart(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		rc := newReceiver(t)
		hs := hearthtest.NewServer(t, b, func(c *config.Config) {
			c.FederationAllowCIDRs = []string{"127.0.0.0/8"}
			c.FederationCACerts = []string{rc.caFile(t)}
		})
		rc.origin, rc.key, rc.pub = "hearth.test", hs.Key.ID, hs.Key.Public()
		roomID, tok := createRoom(t, hs, "alice", map[string]any{})
		var eventIDs []string
		for i := 0; i < 60; i++ {
			r := hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/t"+strconv.Itoa(i), tok,
				map[string]any{"msgtype": "m.text", "body": "hi"})
			hearthtest.Expect(t, r, http.StatusOK, "")
			eventIDs = append(eventIDs, r.JSON["event_id"].(string))
		}
		ctx := context.Background()
		if err := hs.Federation.Queue().SendEvents(ctx, []spec.ServerName{rc.name, "hearth.test"}, eventIDs); err != nil {
			t.Fatal(err)
		}
		edu := gomatrixserverlib.EDU{Type: "m.typing", Content: []byte(`{"room_id":"` + roomID + `","user_id":"@alice:hearth.test","typing":true}`)}
		if err := hs.Federation.Queue().SendEDU(ctx, []spec.ServerName{rc.name}, edu); err != nil {
			t.Fatal(err)
		}

		// The destination is down: the sender tries, backs off, tries again
		// (by then the batch holds the EDU too) and keeps the work.
		rc.waitFor(t, "a retry", func() bool { return len(rc.attempts) >= 2 })
		rc.mu.Lock()
		retried := rc.attempts[len(rc.attempts)-1]
		rc.mu.Unlock()

		// A restart loses nothing: the new sender resumes from the tables.
		hs.Restart(t)
		rc.setDown(false)
		rc.waitFor(t, "all 60 events", func() bool {
			n := 0
			for _, txn := range rc.txns {
				n += len(txn.PDUs)
			}
			return n == 60
		})
		rc.mu.Lock()
		defer rc.mu.Unlock()
		// The batch tried while down was sent under the same ID, at most
		// 50 PDUs and 100 EDUs per transaction, in queue order.
		if rc.txns[0].TransactionID != gomatrixserverlib.TransactionID(retried) {
			t.Errorf("delivered as transaction %s, tried before the restart as %s", rc.txns[0].TransactionID, retried)
		}
		var got []string
		edus := 0
		for _, txn := range rc.txns {
			if len(txn.PDUs) > 50 || len(txn.EDUs) > 100 {
				t.Errorf("transaction of %d PDUs, %d EDUs", len(txn.PDUs), len(txn.EDUs))
			}
			for _, e := range txn.EDUs {
				if e.Type == "m.typing" && e.Destination == string(rc.name) && e.Origin == "hearth.test" {
					edus++
				}
			}
			for _, raw := range txn.PDUs {
				var ev struct {
					Type string `json:"type"`
				}
				_ = json.Unmarshal(raw, &ev)
				if ev.Type != "m.room.message" {
					t.Errorf("PDU of type %q", ev.Type)
				}
				pdu, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV11).NewEventFromUntrustedJSON(raw)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, pdu.EventID())
			}
		}
		if strings.Join(got, ",") != strings.Join(eventIDs, ",") || edus != 1 {
			t.Errorf("delivered %d events (in order: %v) and %d EDUs", len(got), strings.Join(got, ",") == strings.Join(eventIDs, ","), edus)
		}
		for _, q := range []func() (int, error){
			func() (int, error) {
				p, err := storage.PendingPDUs(ctx, hs.DB.Read(), string(rc.name), 100)
				return len(p), err
			},
			func() (int, error) {
				e, err := storage.PendingEDUs(ctx, hs.DB.Read(), string(rc.name), 100)
				return len(e), err
			},
		} {
			if n, err := q(); err != nil || n != 0 {
				t.Errorf("queue not empty after delivery: %d %v", n, err)
			}
		}
	})
}
