package homeserver_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/hearth-matrix/hearth/hearthtest"
)

// Bounded request memory (issue 21): a body over its limit is refused
// without being held, and an upload streams to disk. Memory is measured in
// process as the growth of runtime.MemStats.TotalAlloc (every byte
// allocated meanwhile, by the server and the test's own HTTP client, freed
// or not): unlike RSS or HeapInuse it does not depend on when the GC ran or
// returned memory to the OS, so it is a robust upper bound of what a
// request made the server hold.

// pattern is an endless reader of a fixed byte pattern, after an optional
// prefix, stopping after n bytes (n < 0: never); it allocates nothing.
type pattern struct {
	prefix string
	n, off int64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.n >= 0 && p.off >= p.n {
		return 0, io.EOF
	}
	if p.n >= 0 && int64(len(b)) > p.n-p.off {
		b = b[:p.n-p.off]
	}
	for i := range b {
		if o := p.off + int64(i); o < int64(len(p.prefix)) {
			b[i] = p.prefix[o]
		} else {
			b[i] = 'a' + byte(o%26)
		}
	}
	p.off += int64(len(b))
	return len(b), nil
}

// onlyReader hides a reader's type, so the client sends it chunked.
type onlyReader struct{ io.Reader }

func totalAlloc() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.TotalAlloc
}

// send makes one request with body; contentLength < 0 sends it chunked.
func send(t *testing.T, method, url, token string, body io.Reader, contentLength int64) (int, string, error) {
	if contentLength < 0 {
		body = onlyReader{body}
	}
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return 0, "", err
	}
	req.ContentLength = contentLength
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var e struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&e)
	return resp.StatusCode, e.ErrCode, nil
}

func createRoom(t *testing.T, hs *hearthtest.Server, token string) string {
	t.Helper()
	r := hs.Do(t, "POST", "/_matrix/client/v3/createRoom", token, map[string]any{})
	hearthtest.Expect(t, r, http.StatusOK, "")
	return r.JSON["room_id"].(string)
}

// Four 100 MB posts to /send with a Content-Length and four without one,
// all at once: each is 413 M_TOO_LARGE, and together they allocate less
// than 10 MB (before, each read up to max_request_bytes, 50 MB, into
// memory first).
func TestHugeBodiesAreRefusedWithoutHoldingThem(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	_, token := hs.RegisterUser(t, "alice")
	roomID := createRoom(t, hs, token)
	// One request first, so that what a first request sets up (caches,
	// connections) is not counted.
	hearthtest.Expect(t, hs.Do(t, "PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/warm", token,
		map[string]any{"body": "hi"}), http.StatusOK, "")

	const size = 100 << 20
	before := totalAlloc()
	var wg sync.WaitGroup
	type result struct {
		chunked bool
		status  int
		errcode string
		err     error
	}
	results := make(chan result, 8)
	for i := range 8 {
		chunked := i >= 4
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := int64(size)
			if chunked {
				cl = -1
			}
			url := fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/m.room.message/big%d", hs.URL, roomID, i)
			status, errcode, err := send(t, "PUT", url, token, &pattern{prefix: `{"msgtype":"m.text","body":"`, n: size}, cl)
			results <- result{chunked, status, errcode, err}
		}()
	}
	wg.Wait()
	close(results)
	grew := int64(totalAlloc() - before)
	for r := range results {
		if r.err != nil || r.status != http.StatusRequestEntityTooLarge || r.errcode != "M_TOO_LARGE" {
			t.Errorf("chunked %v: got %d %s %v, want 413 M_TOO_LARGE", r.chunked, r.status, r.errcode, r.err)
		}
	}
	t.Logf("8 refused 100 MB requests allocated %.2f MB in all", float64(grew)/(1<<20))
	if grew > 10<<20 {
		t.Errorf("8 refused 100 MB requests allocated %d MB, want < 10 MB", grew>>20)
	}
	// The server still answers.
	hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/versions", "", nil), http.StatusOK, "")
}

// A 20 MB upload streams to disk: it allocates far less than its size, and
// downloads intact.
func TestLargeUploadStreams(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	_, token := hs.RegisterUser(t, "alice")
	const size = 20 << 20
	want := sha256.New()
	if _, err := io.Copy(want, &pattern{n: size}); err != nil {
		t.Fatal(err)
	}

	for _, chunked := range []bool{false, true} {
		before := totalAlloc()
		cl := int64(size)
		if chunked {
			cl = -1
		}
		body := io.Reader(&pattern{n: size})
		if chunked {
			body = onlyReader{body}
		}
		req, _ := http.NewRequest("POST", hs.URL+"/_matrix/media/v3/upload", body)
		req.ContentLength = cl
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var up struct {
			ContentURI string `json:"content_uri"`
		}
		err = json.NewDecoder(resp.Body).Decode(&up)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Fatalf("chunked %v: upload got %d, %v", chunked, resp.StatusCode, err)
		}
		grew := int64(totalAlloc() - before)
		t.Logf("chunked %v: a 20 MB upload allocated %.2f MB", chunked, float64(grew)/(1<<20))
		if grew > 4<<20 {
			t.Errorf("chunked %v: a 20 MB upload allocated %d MB, want < 4 MB", chunked, grew>>20)
		}

		req, _ = http.NewRequest("GET", hs.URL+"/_matrix/client/v1/media/download/"+strings.TrimPrefix(up.ContentURI, "mxc://"), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := sha256.New()
		n, err := io.Copy(got, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil || n != size || !bytes.Equal(got.Sum(nil), want.Sum(nil)) {
			t.Fatalf("chunked %v: download got %d, %d bytes, %v; same bytes: %v", chunked, resp.StatusCode, n, err, bytes.Equal(got.Sum(nil), want.Sum(nil)))
		}
	}
}

// Event content is bounded by the PDU size limit, 65536 bytes: one byte
// more is refused as it is read; content that leaves room for the rest of
// the event is accepted; content of exactly 65536 bytes cannot fit an event
// with it and is refused when the event is built.
func TestEventContentLimit(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	_, token := hs.RegisterUser(t, "alice")
	roomID := createRoom(t, hs, token)
	content := func(size int) string {
		const head, tail = `{"msgtype":"m.text","body":"`, `"}`
		return head + strings.Repeat("x", size-len(head)-len(tail)) + tail
	}
	txn := 0
	put := func(body string, chunked bool) (int, string) {
		txn++
		url := fmt.Sprintf("%s/_matrix/client/v3/rooms/%s/send/m.room.message/t%d", hs.URL, roomID, txn)
		cl := int64(len(body))
		if chunked {
			cl = -1
		}
		status, errcode, err := send(t, "PUT", url, token, strings.NewReader(body), cl)
		if err != nil {
			t.Fatal(err)
		}
		return status, errcode
	}
	for _, chunked := range []bool{false, true} {
		if status, errcode := put(content(65537), chunked); status != http.StatusRequestEntityTooLarge || errcode != "M_TOO_LARGE" {
			t.Errorf("chunked %v: 65537 bytes of content got %d %s, want 413 M_TOO_LARGE", chunked, status, errcode)
		}
		if status, errcode := put(content(65536), chunked); status != http.StatusRequestEntityTooLarge || errcode != "M_TOO_LARGE" {
			t.Errorf("chunked %v: 65536 bytes of content got %d %s, want 413 M_TOO_LARGE (the event around it is larger)", chunked, status, errcode)
		}
		if status, errcode := put(content(64000), chunked); status != http.StatusOK {
			t.Errorf("chunked %v: 64000 bytes of content got %d %s, want 200", chunked, status, errcode)
		}
	}
	// State events too.
	url := hs.URL + "/_matrix/client/v3/rooms/" + roomID + "/state/m.room.topic/"
	if status, errcode, _ := send(t, "PUT", url, token, strings.NewReader(content(65537)), -1); status != http.StatusRequestEntityTooLarge {
		t.Errorf("state: 65537 bytes of content got %d %s, want 413", status, errcode)
	}
}

// A federation request is read whole for its X-Matrix signature: over its
// limit (12.5 MiB for a transaction) it is 413 M_TOO_LARGE, not a
// malformed request, with or without a Content-Length.
func TestFederationBodyLimit(t *testing.T) {
	hs := hearthtest.NewServer(t, hearthtest.SQLite, nil)
	const size = 20 << 20
	for _, chunked := range []bool{false, true} {
		var body io.Reader = &pattern{prefix: `{"pdus":[],"edus":[],"x":"`, n: size}
		if chunked {
			body = onlyReader{body}
		}
		req, _ := http.NewRequest("PUT", hs.FederationURL+"/_matrix/federation/v1/send/t1", body)
		if !chunked {
			req.ContentLength = size
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", `X-Matrix origin="other.test",destination="hearth.test",key="ed25519:a",sig="c2ln"`)
		resp, err := hs.Client.Do(req)
		if err != nil {
			t.Fatalf("chunked %v: %v", chunked, err)
		}
		var e struct {
			ErrCode string `json:"errcode"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || e.ErrCode != "M_TOO_LARGE" {
			t.Errorf("chunked %v: got %d %s, want 413 M_TOO_LARGE", chunked, resp.StatusCode, e.ErrCode)
		}
	}
}
