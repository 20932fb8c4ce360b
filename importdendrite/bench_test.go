package importdendrite_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/importdendrite"
)

// BenchmarkImportDendrite measures `hearth import dendrite` of a Dendrite
// (on SQLite) holding 10,000 events in 100 rooms and 1,000 media files,
// filled through its client API before the timer starts. The target is
// under 60 s on the project's 2-core machine.
//
//	go test -run '^$' -bench ImportDendrite -benchtime 1x -timeout 30m ./importdendrite/
func BenchmarkImportDendrite(b *testing.B) {
	d := startDendrite(b, hearthtest.SQLite)
	const rooms, perRoom, media = 100, 100, 1000
	fillBench(b, d, rooms, perRoom, media)
	d.stop(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		rep, err := importdendrite.Run(context.Background(), importdendrite.Options{DendriteConfig: d.ConfigPath, DataDir: filepath.Join(b.TempDir(), "hearth")})
		if err != nil {
			b.Fatal(err)
		}
		elapsed := time.Since(start)
		events, files := rep.Tables["roomserver_events"].Written, rep.Tables["mediaapi_media_repository"].Written
		if events < rooms*perRoom || files != media {
			b.Fatalf("imported %d events and %d files, want at least %d and %d", events, files, rooms*perRoom, media)
		}
		b.ReportMetric(float64(events), "events")
		b.ReportMetric(float64(files), "files")
		b.ReportMetric(elapsed.Seconds(), "s/import")
	}
}

// fillBench makes rooms with perRoom messages each (plus their creation
// events) and uploads media files, a few requests in flight at once.
func fillBench(b *testing.B, d *dendrite, rooms, perRoom, media int) {
	_, tok, _ := d.register(b, "alice", password, true)
	client := &http.Client{Timeout: 2 * time.Minute}
	call := func(method, path, ctype string, body []byte) ([]byte, error) {
		req, err := http.NewRequest(method, d.URL+path, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", ctype)
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		out, err := io.ReadAll(resp.Body)
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, out)
		}
		return out, err
	}
	// parallel runs n jobs on 6 workers and fails b on the first error.
	parallel := func(n int, job func(i int) error) {
		var wg sync.WaitGroup
		var mu sync.Mutex
		var first error
		next := make(chan int)
		for w := 0; w < 6; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					if err := job(i); err != nil {
						mu.Lock()
						first = err
						mu.Unlock()
					}
				}
			}()
		}
		for i := 0; i < n; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		if first != nil {
			b.Fatal(first)
		}
	}
	ids := make([]string, rooms)
	parallel(rooms, func(i int) error {
		out, err := call("POST", "/_matrix/client/v3/createRoom", "application/json", []byte(`{"preset":"private_chat","name":"bench"}`))
		if err != nil {
			return err
		}
		var r struct {
			RoomID string `json:"room_id"`
		}
		if err := json.Unmarshal(out, &r); err != nil {
			return err
		}
		ids[i] = r.RoomID
		return nil
	})
	parallel(media, func(i int) error {
		body := []byte(fmt.Sprintf("file %d\n%s", i, strings.Repeat("x", i)))
		_, err := call("POST", "/_matrix/media/v3/upload?filename="+url.QueryEscape(fmt.Sprintf("f%d.txt", i)), "text/plain", body)
		return err
	})
	// Rooms in parallel, each room's messages in order.
	parallel(rooms, func(r int) error {
		for i := 0; i < perRoom; i++ {
			path := fmt.Sprintf("/_matrix/client/v3/rooms/%s/send/m.room.message/b%d", ids[r], i)
			if _, err := call("PUT", path, "application/json", []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, i))); err != nil {
				return err
			}
		}
		return nil
	})
	// The sync API projects the room server asynchronously: wait until
	// the last room's last message is in /messages.
	last := ids[len(ids)-1]
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := call("GET", "/_matrix/client/v3/rooms/"+last+"/messages?dir=b&limit=1", "application/json", nil)
		if err == nil && bytes.Contains(out, []byte(fmt.Sprintf(`"message %d"`, perRoom-1))) {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("Dendrite's sync API never caught up: %v %s", err, out)
		}
		time.Sleep(500 * time.Millisecond)
	}
}
