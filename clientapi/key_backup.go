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

func (a *API) keyBackupRoutes(r chi.Router, p string) {
	r.Post(p+"/room_keys/version", a.authed(a.createBackup))
	r.Get(p+"/room_keys/version", a.authed(a.getBackup))
	r.Get(p+"/room_keys/version/{version}", a.authed(a.getBackup))
	r.Put(p+"/room_keys/version/{version}", a.authed(a.updateBackup))
	r.Delete(p+"/room_keys/version/{version}", a.authed(a.deleteBackup))
	r.Put(p+"/room_keys/keys", a.authed(a.putBackupKeys))
	r.Put(p+"/room_keys/keys/{roomId}", a.authed(a.putBackupKeys))
	r.Put(p+"/room_keys/keys/{roomId}/{sessionId}", a.authed(a.putBackupKeys))
	r.Get(p+"/room_keys/keys", a.authed(a.getBackupKeys))
	r.Get(p+"/room_keys/keys/{roomId}", a.authed(a.getBackupKeys))
	r.Get(p+"/room_keys/keys/{roomId}/{sessionId}", a.authed(a.getBackupKeys))
	r.Delete(p+"/room_keys/keys", a.authed(a.deleteBackupKeys))
	r.Delete(p+"/room_keys/keys/{roomId}", a.authed(a.deleteBackupKeys))
	r.Delete(p+"/room_keys/keys/{roomId}/{sessionId}", a.authed(a.deleteBackupKeys))
}

type backupVersionBody struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   string          `json:"version"`
}

// POST /room_keys/version
func (a *API) createBackup(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req backupVersionBody
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	v, err := a.e2ee.CreateBackup(r.Context(), c.UserID, req.Algorithm, req.AuthData)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, map[string]string{"version": v})
}

// GET /room_keys/version[/{version}]
func (a *API) getBackup(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	info, err := a.e2ee.GetBackup(r.Context(), c.UserID, chi.URLParam(r, "version"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, info)
}

// PUT /room_keys/version/{version}
func (a *API) updateBackup(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	var req backupVersionBody
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	if err := a.e2ee.UpdateBackup(r.Context(), c.UserID, chi.URLParam(r, "version"), req.Algorithm, req.AuthData, req.Version); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// DELETE /room_keys/version/{version}
func (a *API) deleteBackup(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	if err := a.e2ee.DeleteBackup(r.Context(), c.UserID, chi.URLParam(r, "version")); err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, struct{}{})
}

// PUT /room_keys/keys[/{roomId}[/{sessionId}]]: the body is the whole
// backup, one room's sessions or one session's key.
func (a *API) putBackupKeys(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID, sessionID := chi.URLParam(r, "roomId"), chi.URLParam(r, "sessionId")
	var rooms map[string]map[string]e2ee.BackupKey
	switch {
	case sessionID != "":
		var k e2ee.BackupKey
		if err := mxhttp.ReadJSON(r, &k); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		rooms = map[string]map[string]e2ee.BackupKey{roomID: {sessionID: k}}
	case roomID != "":
		var body struct {
			Sessions map[string]e2ee.BackupKey `json:"sessions"`
		}
		if err := mxhttp.ReadJSON(r, &body); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		rooms = map[string]map[string]e2ee.BackupKey{roomID: body.Sessions}
	default:
		var body struct {
			Rooms map[string]struct {
				Sessions map[string]e2ee.BackupKey `json:"sessions"`
			} `json:"rooms"`
		}
		if err := mxhttp.ReadJSON(r, &body); err != nil {
			mxhttp.WriteError(w, r, err)
			return
		}
		rooms = map[string]map[string]e2ee.BackupKey{}
		for id, rm := range body.Rooms {
			rooms[id] = rm.Sessions
		}
	}
	out, err := a.e2ee.PutBackupKeys(r.Context(), c.UserID, r.URL.Query().Get("version"), rooms)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, out)
}

// GET /room_keys/keys[/{roomId}[/{sessionId}]]
func (a *API) getBackupKeys(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	roomID, sessionID := chi.URLParam(r, "roomId"), chi.URLParam(r, "sessionId")
	keys, err := a.e2ee.GetBackupKeys(r.Context(), c.UserID, r.URL.Query().Get("version"), roomID, sessionID)
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	switch {
	case sessionID != "":
		k, ok := keys[roomID][sessionID]
		if !ok {
			mxhttp.WriteError(w, r, mxhttp.NotFound("Key not found"))
			return
		}
		mxhttp.WriteJSON(w, http.StatusOK, k)
	case roomID != "":
		sessions := keys[roomID]
		if sessions == nil {
			sessions = map[string]e2ee.BackupKey{}
		}
		mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"sessions": sessions})
	default:
		rooms := map[string]any{}
		for id, ss := range keys {
			rooms[id] = map[string]any{"sessions": ss}
		}
		mxhttp.WriteJSON(w, http.StatusOK, map[string]any{"rooms": rooms})
	}
}

// DELETE /room_keys/keys[/{roomId}[/{sessionId}]]
func (a *API) deleteBackupKeys(w http.ResponseWriter, r *http.Request, c accounts.Caller) {
	out, err := a.e2ee.DeleteBackupKeys(r.Context(), c.UserID, r.URL.Query().Get("version"),
		chi.URLParam(r, "roomId"), chi.URLParam(r, "sessionId"))
	if err != nil {
		mxhttp.WriteError(w, r, err)
		return
	}
	mxhttp.WriteJSON(w, http.StatusOK, out)
}
