package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/media"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// More of the media admin API (Synapse's docs/admin_api/media_admin_api.md):
// information, protection, quarantine by room and by user, deletion by
// date and size or by uploader, and purging cached remote media. Every
// deletion goes through the media repository, one item at a time, each
// its own transaction: a deletion cut short leaves whole items only.

// GET /_synapse/admin/v1/media/{serverName}/{mediaId}.
func (a *API) mediaInfo(r *http.Request, c accounts.Caller) (any, error) {
	serverName, mediaID := pathParam(r, "serverName"), pathParam(r, "mediaId")
	if err := media.CheckID(serverName, mediaID); err != nil {
		return nil, err
	}
	m, err := a.db.GetMedia(r.Context(), serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("Unknown media")
	}
	if err != nil {
		return nil, err
	}
	protected, err := a.db.MediaProtected(r.Context(), serverName, mediaID)
	if err != nil {
		return nil, err
	}
	return map[string]any{"media_info": map[string]any{
		"media_origin": m.ServerName, "user_id": emptyNil(m.Uploader), "media_id": m.MediaID, "media_type": m.ContentType,
		"media_length": m.Size, "upload_name": emptyNil(m.Filename), "created_ts": m.CreatedTS, "last_access_ts": m.UploadedTS,
		"quarantined_by": quarantinedBy(m.Quarantined), "safe_from_quarantine": protected, "sha256": m.SHA256,
	}}, nil
}

// POST /_synapse/admin/v1/media/(un)protect/{mediaId}: local media only.
func (a *API) protectMedia(protect bool) handler {
	return func(r *http.Request, c accounts.Caller) (any, error) {
		id := pathParam(r, "mediaId")
		if err := media.CheckID(a.cfg.ServerName, id); err != nil {
			return nil, err
		}
		err := a.db.SetMediaProtected(r.Context(), a.cfg.ServerName, id, protect)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, mxhttp.NotFound("Unknown media")
		}
		if err != nil {
			return nil, err
		}
		return struct{}{}, nil
	}
}

// roomMedia lists the media the room's events carry (content.url,
// content.info.thumbnail_url and their encrypted file forms, as Synapse
// looks at), each once.
func (a *API) roomMedia(r *http.Request, roomID string) ([]storage.MediaRef, error) {
	evs, err := a.db.RoomEventJSON(r.Context(), roomID)
	if err != nil {
		return nil, err
	}
	type file struct {
		URL string `json:"url"`
	}
	seen := map[storage.MediaRef]bool{}
	var out []storage.MediaRef
	for _, j := range evs {
		var ev struct {
			Content struct {
				URL  any  `json:"url"`
				File file `json:"file"`
				Info struct {
					ThumbnailURL  any  `json:"thumbnail_url"`
					ThumbnailFile file `json:"thumbnail_file"`
				} `json:"info"`
			} `json:"content"`
		}
		if json.Unmarshal([]byte(j), &ev) != nil {
			continue
		}
		for _, u := range []any{ev.Content.URL, ev.Content.File.URL, ev.Content.Info.ThumbnailURL, ev.Content.Info.ThumbnailFile.URL} {
			s, _ := u.(string)
			server, id, ok := strings.Cut(strings.TrimPrefix(s, "mxc://"), "/")
			if !ok || !strings.HasPrefix(s, "mxc://") || media.CheckID(server, id) != nil {
				continue
			}
			ref := storage.MediaRef{ServerName: server, MediaID: id}
			if !seen[ref] {
				seen[ref] = true
				out = append(out, ref)
			}
		}
	}
	return out, nil
}

// GET /_synapse/admin/v1/room/{roomId}/media: {"local": [...], "remote": [...]}.
func (a *API) listRoomMedia(r *http.Request, c accounts.Caller) (any, error) {
	s, err := a.knownRoom(r)
	if err != nil {
		return nil, err
	}
	refs, err := a.roomMedia(r, s.RoomID)
	if err != nil {
		return nil, err
	}
	local, remote := []string{}, []string{}
	for _, m := range refs {
		uri := "mxc://" + m.ServerName + "/" + m.MediaID
		if m.ServerName == a.cfg.ServerName {
			local = append(local, uri)
		} else {
			remote = append(remote, uri)
		}
	}
	return map[string]any{"local": local, "remote": remote}, nil
}

// quarantine quarantines every item of refs this server holds that is not
// protected, and counts them.
func (a *API) quarantine(r *http.Request, refs []storage.MediaRef) (int, error) {
	n := 0
	for _, m := range refs {
		protected, err := a.db.MediaProtected(r.Context(), m.ServerName, m.MediaID)
		if errors.Is(err, storage.ErrNotFound) || protected {
			continue
		}
		if err != nil {
			return n, err
		}
		if err := a.media.Quarantine(r.Context(), m.ServerName, m.MediaID, true); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// POST /_synapse/admin/v1/room/{roomId}/media/quarantine (and the older
// /quarantine_media/{roomId}).
func (a *API) quarantineRoomMedia(r *http.Request, c accounts.Caller) (any, error) {
	s, err := a.knownRoom(r)
	if err != nil {
		return nil, err
	}
	refs, err := a.roomMedia(r, s.RoomID)
	if err != nil {
		return nil, err
	}
	n, err := a.quarantine(r, refs)
	if err != nil {
		return nil, err
	}
	return map[string]int{"num_quarantined": n}, nil
}

// POST /_synapse/admin/v1/user/{userId}/media/quarantine.
func (a *API) quarantineUserMedia(r *http.Request, c accounts.Caller) (any, error) {
	id, err := a.userParam(r, true)
	if err != nil {
		return nil, err
	}
	refs, err := a.db.MediaOfUploader(r.Context(), id, true)
	if err != nil {
		return nil, err
	}
	n, err := a.quarantine(r, refs)
	if err != nil {
		return nil, err
	}
	return map[string]int{"num_quarantined": n}, nil
}

// deleteAll deletes refs through the media repository and answers
// Synapse's {"deleted_media", "total"}.
func (a *API) deleteAll(r *http.Request, refs []storage.MediaRef) (any, error) {
	deleted := []string{}
	for _, m := range refs {
		err := a.media.Delete(r.Context(), m.ServerName, m.MediaID)
		var me *mxhttp.Error
		if errors.As(err, &me) && me.ErrCode == "M_NOT_FOUND" {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, err
		}
		deleted = append(deleted, m.MediaID)
	}
	return map[string]any{"deleted_media": deleted, "total": len(deleted)}, nil
}

// POST /_synapse/admin/v1/media/delete (and /media/{serverName}/delete,
// serverName this server's)?before_ts=&size_gt=&keep_profiles=: local
// media created before before_ts, of at least size_gt bytes, not
// protected, and (keep_profiles, the default) not a profile picture.
func (a *API) deleteMediaByDateSize(r *http.Request, c accounts.Caller) (any, error) {
	if sn := pathParam(r, "serverName"); sn != "" && sn != a.cfg.ServerName {
		return nil, mxhttp.InvalidParam("Can only delete local media")
	}
	if r.URL.Query().Get("before_ts") == "" {
		return nil, mxhttp.MissingParam("Missing integer query parameter 'before_ts'")
	}
	before, err := int64Param(r, "before_ts", 0)
	if err != nil {
		return nil, err
	}
	if before < 30000000000 {
		// Synapse's guard against seconds given for milliseconds.
		return nil, mxhttp.InvalidParam("Query parameter before_ts you provided is from the year 1970. Double check that you are providing a timestamp in milliseconds.")
	}
	size, err := int64Param(r, "size_gt", 0)
	if err != nil {
		return nil, err
	}
	keep, err := boolParam(r, "keep_profiles")
	if err != nil {
		return nil, err
	}
	refs, err := a.db.OldMedia(r.Context(), a.cfg.ServerName, true, before, size, keep == nil || *keep)
	if err != nil {
		return nil, err
	}
	return a.deleteAll(r, refs)
}

// DELETE /_synapse/admin/v1/users/{userId}/media: the user's uploads,
// protected ones too (Synapse deletes them all).
func (a *API) deleteUserMedia(r *http.Request, c accounts.Caller) (any, error) {
	u, err := a.existingUser(r)
	if err != nil {
		return nil, err
	}
	refs, err := a.db.MediaOfUploader(r.Context(), u.UserID, false)
	if err != nil {
		return nil, err
	}
	return a.deleteAll(r, refs)
}

// POST /_synapse/admin/v1/purge_media_cache?before_ts=: cached copies of
// other servers' media fetched before before_ts (they are fetched again
// when asked for).
func (a *API) purgeMediaCache(r *http.Request, c accounts.Caller) (any, error) {
	if r.URL.Query().Get("before_ts") == "" {
		return nil, mxhttp.MissingParam("Missing integer query parameter 'before_ts'")
	}
	before, err := int64Param(r, "before_ts", 0)
	if err != nil {
		return nil, err
	}
	refs, err := a.db.OldMedia(r.Context(), a.cfg.ServerName, false, before, 0, false)
	if err != nil {
		return nil, err
	}
	body, err := a.deleteAll(r, refs)
	if err != nil {
		return nil, err
	}
	return map[string]any{"deleted": body.(map[string]any)["total"]}, nil
}

// GET /_synapse/admin/v1/media/quarantine_changes?from=: the changes of
// quarantine after from, 100 at a time, with next_batch to go on from.
func (a *API) quarantineChanges(r *http.Request, c accounts.Caller) (any, error) {
	from, err := int64Param(r, "from", 0)
	if err != nil {
		return nil, err
	}
	changes, max, err := a.db.QuarantineChanges(r.Context(), from, 100)
	if err != nil {
		return nil, err
	}
	if from > max {
		return nil, mxhttp.InvalidParam("The `from` token is considered invalid because it includes stream positions greater than the furthest persisted position.")
	}
	list := make([]map[string]any, 0, len(changes))
	next := max
	for _, ch := range changes {
		list = append(list, map[string]any{"origin": ch.ServerName, "media_id": ch.MediaID, "quarantined": ch.Quarantined})
		next = ch.StreamID
	}
	return map[string]any{"next_batch": next, "changes": list}, nil
}
