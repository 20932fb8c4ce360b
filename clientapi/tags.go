package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// Room Tagging (client-server API, tags module): a room's tags are its
// m.tag room account data, {"tags": {name: {"order": n, ...}}}, so sync
// carries them like any room account data.

const tagType = "m.tag"

// tagContent is the content of m.tag.
type tagContent struct {
	Tags map[string]json.RawMessage `json:"tags"`
}

// GET /user/{userId}/rooms/{roomId}/tags
func (a *API) getTags(r *http.Request, c accounts.Caller) (any, error) {
	userID, roomID, _, err := accountDataTarget(r, c)
	if err != nil {
		return nil, err
	}
	tc := tagContent{Tags: map[string]json.RawMessage{}}
	d, err := a.db.GetAccountData(r.Context(), userID, roomID, tagType)
	if err == nil {
		_ = json.Unmarshal(d.Content, &tc)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if tc.Tags == nil {
		tc.Tags = map[string]json.RawMessage{}
	}
	return tc, nil
}

// PUT /user/{userId}/rooms/{roomId}/tags/{tag}
func (a *API) putTag(r *http.Request, c accounts.Caller) (any, error) {
	userID, roomID, _, err := accountDataTarget(r, c)
	if err != nil {
		return nil, err
	}
	var body map[string]json.RawMessage
	if err := mxhttp.ReadJSON(r, &body); err != nil {
		return nil, err
	}
	if o, ok := body["order"]; ok {
		var order float64
		if json.Unmarshal(o, &order) != nil {
			return nil, mxhttp.BadJSON("order must be a number")
		}
	}
	info, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	if err := a.changeTag(r.Context(), userID, roomID, pathParam(r, "tag"), info); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// DELETE /user/{userId}/rooms/{roomId}/tags/{tag}
func (a *API) deleteTag(r *http.Request, c accounts.Caller) (any, error) {
	userID, roomID, _, err := accountDataTarget(r, c)
	if err != nil {
		return nil, err
	}
	if err := a.changeTag(r.Context(), userID, roomID, pathParam(r, "tag"), nil); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// changeTag sets (info non-nil) or removes a tag in one read-modify-write
// of m.tag, and wakes the user's syncs.
func (a *API) changeTag(ctx context.Context, userID, roomID, tag string, info json.RawMessage) error {
	if tag == "" || len(tag) > 255 {
		return mxhttp.InvalidParam("A tag name must be 1 to 255 bytes")
	}
	pos, err := a.db.UpdateAccountData(ctx, userID, roomID, tagType, func(old []byte, found bool) ([]byte, error) {
		tc := tagContent{}
		if found {
			_ = json.Unmarshal(old, &tc)
		}
		if tc.Tags == nil {
			tc.Tags = map[string]json.RawMessage{}
		}
		if info == nil {
			delete(tc.Tags, tag)
		} else {
			tc.Tags[tag] = info
		}
		return json.Marshal(tc)
	})
	if err != nil {
		return err
	}
	a.accountDataChanged(userID, pos)
	return nil
}
