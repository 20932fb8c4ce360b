package clientapi

import (
	"encoding/json"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/e2ee"
	"github.com/hearth-matrix/hearth/mxhttp"
)

// Server-side key backups (client-server API, Server-side key backups).

type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   string          `json:"version"`
}

// POST /room_keys/version
func (a *API) createBackup(r *http.Request, c accounts.Caller) (any, error) {
	var req backupVersionBody
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	v, err := a.e2ee.CreateBackup(r.Context(), c.UserID, req.Algorithm, req.AuthData)
	if err != nil {
		return nil, err
	}
	return map[string]string{"version": v}, nil
}

// GET /room_keys/version[/{version}]
func (a *API) getBackup(r *http.Request, c accounts.Caller) (any, error) {
	info, err := a.e2ee.GetBackup(r.Context(), c.UserID, chi.URLParam(r, "version"))
	if err != nil {
		return nil, err
	}
	return info, nil
}

// PUT /room_keys/version/{version}
func (a *API) updateBackup(r *http.Request, c accounts.Caller) (any, error) {
	var req backupVersionBody
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return nil, err
	}
	if err := a.e2ee.UpdateBackup(r.Context(), c.UserID, chi.URLParam(r, "version"), req.Algorithm, req.AuthData, req.Version); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// DELETE /room_keys/version/{version}
func (a *API) deleteBackup(r *http.Request, c accounts.Caller) (any, error) {
	if err := a.e2ee.DeleteBackup(r.Context(), c.UserID, chi.URLParam(r, "version")); err != nil {
		return nil, err
	}
	return struct{}{}, nil
}

// PUT /room_keys/keys[/{roomId}[/{sessionId}]]: the body is the whole
// backup, one room's sessions or one session's key.
func (a *API) putBackupKeys(r *http.Request, c accounts.Caller) (any, error) {
	roomID, sessionID := chi.URLParam(r, "roomId"), chi.URLParam(r, "sessionId")
	var rooms map[string]map[string]e2ee.BackupKey
	switch {
	case sessionID != "":
		var k e2ee.BackupKey
		if err := mxhttp.ReadJSON(r, &k); err != nil {
			return nil, err
		}
		rooms = map[string]map[string]e2ee.BackupKey{roomID: {sessionID: k}}
	case roomID != "":
		var body struct {
			Sessions map[string]e2ee.BackupKey `json:"sessions"`
		}
		if err := mxhttp.ReadJSON(r, &body); err != nil {
			return nil, err
		}
		rooms = map[string]map[string]e2ee.BackupKey{roomID: body.Sessions}
	default:
		var body struct {
			Rooms map[string]struct {
				Sessions map[string]e2ee.BackupKey `json:"sessions"`
			} `json:"rooms"`
		}
		if err := mxhttp.ReadJSON(r, &body); err != nil {
			return nil, err
		}
		rooms = map[string]map[string]e2ee.BackupKey{}
		for id, rm := range body.Rooms {
			rooms[id] = rm.Sessions
		}
	}
	out, err := a.e2ee.PutBackupKeys(r.Context(), c.UserID, r.URL.Query().Get("version"), rooms)
	if err != nil {
		return nil, err
	}
	return out, nil
}

// GET /room_keys/keys[/{roomId}[/{sessionId}]]
func (a *API) getBackupKeys(r *http.Request, c accounts.Caller) (any, error) {
	roomID, sessionID := chi.URLParam(r, "roomId"), chi.URLParam(r, "sessionId")
	keys, err := a.e2ee.GetBackupKeys(r.Context(), c.UserID, r.URL.Query().Get("version"), roomID, sessionID)
	if err != nil {
		return nil, err
	}
	switch {
	case sessionID != "":
		k, ok := keys[roomID][sessionID]
		if !ok {
			return nil, mxhttp.NotFound("Key not found")
		}
		return k, nil
	case roomID != "":
		sessions := keys[roomID]
		if sessions == nil {
			sessions = map[string]e2ee.BackupKey{}
		}
		return map[string]any{"sessions": sessions}, nil
	default:
		rooms := map[string]any{}
		for id, ss := range keys {
			rooms[id] = map[string]any{"sessions": ss}
		}
		return map[string]any{"rooms": rooms}, nil
	}
}

// DELETE /room_keys/keys[/{roomId}[/{sessionId}]]
func (a *API) deleteBackupKeys(r *http.Request, c accounts.Caller) (any, error) {
	out, err := a.e2ee.DeleteBackupKeys(r.Context(), c.UserID, r.URL.Query().Get("version"),
		chi.URLParam(r, "roomId"), chi.URLParam(r, "sessionId"))
	if err != nil {
		return nil, err
	}
	return out, nil
}
