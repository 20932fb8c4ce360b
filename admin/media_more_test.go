package admin_test

import (
	"database/sql"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hearth-matrix/hearth/hearthtest"
	"github.com/hearth-matrix/hearth/storage"
)

func upload(t *testing.T, u user, body string) (mxc, mediaID string) {
	t.Helper()
	r := u.hs.Do(t, "POST", "/_matrix/media/v3/upload", u.token, body)
	hearthtest.Expect(t, r, http.StatusOK, "")
	mxc = r.JSON["content_uri"].(string)
	return mxc, mxc[strings.LastIndexByte(mxc, '/')+1:]
}

// TestMediaAdministration: info, protection, quarantine by room and by
// user (protected media spared), deletion by date (profile pictures and
// protected media kept), deletion of a user's media, and purging cached
// remote media; every change read back.
func TestMediaAdministration(t *testing.T) {
	hearthtest.ForEachBackend(t, func(t *testing.T, b hearthtest.Backend) {
		hs := hearthtest.NewServer(t, b, nil)
		admin := newAdmin(t, hs, "admin")
		bob := newUser(t, hs, "bob")
		carol := newUser(t, hs, "carol")
		avatar, avatarID := upload(t, bob, "avatar bytes")
		image, imageID := upload(t, bob, "image bytes")
		_, carolID := upload(t, carol, "carol's")
		bob.ok(t, "PUT", path("/_matrix/client/v3/profile", bob.id, "avatar_url"), map[string]any{"avatar_url": avatar})
		room := bob.createRoom(t, nil)
		bob.ok(t, "PUT", path("/_matrix/client/v3/rooms", room, "send", "m.room.message", "img"),
			map[string]any{"msgtype": "m.image", "body": "pic", "url": image})
		mediaPath := func(id string) string { return path("/_synapse/admin/v1/media/hearth.test", id) }

		info := admin.ok(t, "GET", mediaPath(imageID), nil)["media_info"].(map[string]any)
		if info["user_id"] != bob.id || info["media_length"] != float64(len("image bytes")) || info["safe_from_quarantine"] != false {
			t.Fatalf("media info: %v", info)
		}
		hearthtest.Expect(t, admin.do(t, "GET", mediaPath("nosuchmedia"), nil), http.StatusNotFound, "M_NOT_FOUND")

		rm := admin.ok(t, "GET", path("/_synapse/admin/v1/room", room, "media"), nil)
		if l := rm["local"].([]any); len(l) != 1 || l[0] != image || len(rm["remote"].([]any)) != 0 {
			t.Fatalf("room media: %v", rm)
		}

		admin.ok(t, "POST", path("/_synapse/admin/v1/media/protect", imageID), map[string]any{})
		if q := admin.ok(t, "POST", path("/_synapse/admin/v1/room", room, "media", "quarantine"), map[string]any{}); q["num_quarantined"] != float64(0) {
			t.Fatalf("protected media quarantined: %v", q)
		}
		admin.ok(t, "POST", path("/_synapse/admin/v1/media/unprotect", imageID), map[string]any{})
		if q := admin.ok(t, "POST", path("/_synapse/admin/v1/quarantine_media", room), map[string]any{}); q["num_quarantined"] != float64(1) {
			t.Fatalf("room quarantine: %v", q)
		}
		if info := admin.ok(t, "GET", mediaPath(imageID), nil)["media_info"].(map[string]any); info["quarantined_by"] == nil {
			t.Fatalf("image not quarantined: %v", info)
		}
		hearthtest.Expect(t, hs.Do(t, "GET", "/_matrix/client/v1/media/download/hearth.test/"+imageID, bob.token, nil), http.StatusNotFound, "M_NOT_FOUND")
		if q := admin.ok(t, "POST", path("/_synapse/admin/v1/user", carol.id, "media", "quarantine"), map[string]any{}); q["num_quarantined"] != float64(1) {
			t.Fatalf("user quarantine: %v", q)
		}
		hearthtest.Expect(t, admin.do(t, "POST", path("/_synapse/admin/v1/media/protect", "nosuchmedia"), map[string]any{}), http.StatusNotFound, "M_NOT_FOUND")

		// The two quarantines, in order; then nothing after them.
		qc := admin.ok(t, "GET", "/_synapse/admin/v1/media/quarantine_changes", nil)
		ch := qc["changes"].([]any)
		if len(ch) != 2 || ch[0].(map[string]any)["media_id"] != imageID || ch[1].(map[string]any)["media_id"] != carolID ||
			ch[0].(map[string]any)["quarantined"] != true || ch[0].(map[string]any)["origin"] != "hearth.test" {
			t.Fatalf("quarantine changes: %v", qc)
		}
		next := strconv.Itoa(int(qc["next_batch"].(float64)))
		if qc := admin.ok(t, "GET", "/_synapse/admin/v1/media/quarantine_changes?from="+next, nil); len(qc["changes"].([]any)) != 0 {
			t.Fatalf("quarantine changes after the last: %v", qc)
		}
		hearthtest.Expect(t, admin.do(t, "GET", "/_synapse/admin/v1/media/quarantine_changes?from=999999", nil), http.StatusBadRequest, "M_INVALID_PARAM")

		// By date: the avatar (a profile picture) and protected media stay.
		admin.ok(t, "POST", path("/_synapse/admin/v1/media/protect", carolID), map[string]any{})
		future := strconv.FormatInt(time.Now().Add(time.Minute).UnixMilli(), 10)
		d := admin.ok(t, "POST", "/_synapse/admin/v1/media/hearth.test/delete?before_ts="+future, map[string]any{})
		if d["total"] != float64(1) || d["deleted_media"].([]any)[0] != imageID {
			t.Fatalf("delete by date: %v", d)
		}
		hearthtest.Expect(t, admin.do(t, "GET", mediaPath(imageID), nil), http.StatusNotFound, "M_NOT_FOUND")
		admin.ok(t, "GET", mediaPath(avatarID), nil)
		hearthtest.Expect(t, admin.do(t, "POST", "/_synapse/admin/v1/media/delete?before_ts=1000", map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")
		hearthtest.Expect(t, admin.do(t, "POST", "/_synapse/admin/v1/media/delete", map[string]any{}), http.StatusBadRequest, "M_MISSING_PARAM")
		hearthtest.Expect(t, admin.do(t, "POST", "/_synapse/admin/v1/media/elsewhere.test/delete?before_ts="+future, map[string]any{}), http.StatusBadRequest, "M_INVALID_PARAM")

		// A user's media: protected ones too.
		d = admin.ok(t, "DELETE", path("/_synapse/admin/v1/users", carol.id, "media"), nil)
		if d["total"] != float64(1) || d["deleted_media"].([]any)[0] != carolID {
			t.Fatalf("delete user media: %v", d)
		}

		// Cached remote media fetched before before_ts.
		err := hs.DB.WriteTx(t.Context(), func(tx *sql.Tx) error {
			return storage.InsertMedia(t.Context(), tx, storage.Media{ServerName: "remote.test", MediaID: "cached", ContentType: "text/plain",
				Size: 3, SHA256: strings.Repeat("0", 64), CreatedTS: 1000, UploadedTS: 1000})
		})
		if err != nil {
			t.Fatal(err)
		}
		if p := admin.ok(t, "POST", "/_synapse/admin/v1/purge_media_cache?before_ts=500", map[string]any{}); p["deleted"] != float64(0) {
			t.Fatalf("purge before the fetch: %v", p)
		}
		if p := admin.ok(t, "POST", "/_synapse/admin/v1/purge_media_cache?before_ts="+future, map[string]any{}); p["deleted"] != float64(1) {
			t.Fatalf("purge: %v", p)
		}
		hearthtest.Expect(t, admin.do(t, "GET", path("/_synapse/admin/v1/media/remote.test", "cached"), nil), http.StatusNotFound, "M_NOT_FOUND")
		admin.ok(t, "GET", mediaPath(avatarID), nil) // local media untouched
	})
}
