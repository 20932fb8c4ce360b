package admin

import (
	"context"
	"database/sql"
	"errors"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"github.com/hearth-matrix/hearth/accounts"
	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/rooms"
	"github.com/hearth-matrix/hearth/storage"
)

// Room deletion (DELETE /_synapse/admin/v2/rooms/{roomId}). The request
// records the deletion, and the block when asked, in one transaction and
// returns its delete_id; the work then runs in the background: every
// local user joined to, invited to or knocking on the room leaves it
// through the room core (each leave is its own event, and leaving twice
// changes nothing), and with purge the room's local aliases are deleted,
// it leaves the room directory and the kicked users forget it. A process
// killed part way resumes every unfinished deletion when it starts again.
// Purge keeps the room's events: Hearth does not yet delete history.

// roomsLeave is a user leaving a room on their own (a self-leave always
// passes the auth rules, as Synapse's shutdown does it).
func roomsLeave(userID string) rooms.ChangeMembership {
	return rooms.ChangeMembership{Sender: userID, Target: userID, Membership: spec.Leave}
}

// beginDeletion reads a delete request ({"block", "purge",
// "force_purge"}; new_room_user_id, moving users to a new room, is not
// supported: 400 M_INVALID_PARAM) and records the deletion and the block
// in one transaction. A room this server does not know can only be
// blocked: its deletion is recorded complete at once; without block it is
// 404 M_NOT_FOUND.
func (a *API) beginDeletion(r *http.Request, c accounts.Caller) (d storage.RoomDeletion, known bool, err error) {
	id, err := roomParam(r)
	if err != nil {
		return d, false, err
	}
	var req struct {
		Block         bool    `json:"block"`
		Purge         *bool   `json:"purge"`
		ForcePurge    bool    `json:"force_purge"`
		NewRoomUserID *string `json:"new_room_user_id"`
		RoomName      *string `json:"room_name"`
		Message       *string `json:"message"`
	}
	if err := mxhttp.ReadJSON(r, &req); err != nil {
		return d, false, err
	}
	if req.NewRoomUserID != nil {
		return d, false, mxhttp.InvalidParam("new_room_user_id is not supported by Hearth")
	}
	ctx := r.Context()
	_, err = storage.GetRoom(ctx, a.db.Read(), id)
	known = err == nil
	if errors.Is(err, storage.ErrNotFound) && !req.Block {
		return d, false, mxhttp.NotFound("Unknown room id %s", id)
	} else if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return d, false, err
	}
	d = storage.RoomDeletion{DeleteID: accounts.NewToken(""), RoomID: id, Requester: c.UserID, Block: req.Block,
		Purge: req.Purge == nil || *req.Purge, Status: "scheduled", CreatedTS: time.Now().UnixMilli()}
	if !known {
		d.Status = "complete"
	}
	err = a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		if known {
			// Two requests (or processes) take turns here, so only one
			// deletion of a room runs at a time.
			if _, err := a.db.LockRoom(ctx, tx, id); err != nil {
				return err
			}
		}
		var running int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM room_deletions WHERE room_id = $1 AND status IN ('scheduled', 'active')`, id).Scan(&running); err != nil {
			return err
		}
		if running > 0 {
			return mxhttp.Unknown("Shutdown and purge already in progress for %s", id)
		}
		if err := storage.InsertRoomDeletion(ctx, tx, d); err != nil {
			return err
		}
		if d.Block {
			return storage.SetRoomBlocked(ctx, tx, id, true, c.UserID)
		}
		return nil
	})
	return d, known, err
}

// DELETE /_synapse/admin/v2/rooms/{roomId}: answers the delete_id at
// once; the work runs in the background.
func (a *API) deleteRoom(r *http.Request, c accounts.Caller) (any, error) {
	d, known, err := a.beginDeletion(r, c)
	if err != nil {
		return nil, err
	}
	if known {
		a.start(d)
	}
	return map[string]string{"delete_id": d.DeleteID}, nil
}

// DELETE /_synapse/admin/v1/rooms/{roomId}: the same deletion, done
// before answering with its result. If the request is cut short the
// deletion is finished in the background (or after a restart).
func (a *API) deleteRoomNow(r *http.Request, c accounts.Caller) (any, error) {
	d, known, err := a.beginDeletion(r, c)
	if err != nil {
		return nil, err
	}
	if known {
		done := make(chan struct{})
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			defer close(done)
			a.runDeletion(a.ctx, d)
		}()
		select {
		case <-done:
		case <-r.Context().Done():
			return nil, r.Context().Err()
		}
		if d, err = a.db.RoomDeletion(r.Context(), d.DeleteID); err != nil {
			return nil, err
		}
		if d.Status == "failed" && d.Error != nil {
			return nil, mxhttp.Internal("Deleting the room failed: %s", *d.Error)
		}
	}
	return deletionJSON(d)["shutdown_room"], nil
}

// ResumeDeletions starts again every deletion a previous process left
// scheduled or active.
func (a *API) ResumeDeletions() {
	ds, err := a.db.UnfinishedRoomDeletions(a.ctx)
	if err != nil {
		a.log.Error("listing unfinished room deletions", "err", err)
		return
	}
	for _, d := range ds {
		a.start(d)
	}
}

func (a *API) start(d storage.RoomDeletion) {
	a.background(func(ctx context.Context) { a.runDeletion(ctx, d) })
}

// runDeletion does (or finishes) one deletion. If ctx ends (the server
// stops) the row stays active and the next start resumes it.
func (a *API) runDeletion(ctx context.Context, d storage.RoomDeletion) {
	d.Status = "active"
	if err := a.db.UpdateRoomDeletion(ctx, d); err != nil {
		a.log.Error("room deletion", "room", d.RoomID, "err", err)
		return
	}
	if err := a.deleteRoomWork(ctx, &d); err != nil {
		if ctx.Err() != nil {
			return // stopping: resumed on the next start
		}
		msg := err.Error()
		d.Status, d.Error = "failed", &msg
		a.log.Error("room deletion failed", "room", d.RoomID, "delete_id", d.DeleteID, "err", err)
	} else {
		d.Status = "complete"
	}
	if err := a.db.UpdateRoomDeletion(context.WithoutCancel(ctx), d); err != nil {
		a.log.Error("room deletion", "room", d.RoomID, "err", err)
	}
}

func (a *API) deleteRoomWork(ctx context.Context, d *storage.RoomDeletion) error {
	ms, err := storage.MembersOfRoom(ctx, a.db.Read(), d.RoomID)
	if err != nil {
		return err
	}
	kicked := map[string]bool{}
	for _, u := range d.KickedUsers {
		kicked[u] = true
	}
	d.FailedUsers = nil
	for _, m := range ms {
		if !a.isLocal(m.UserID) || (m.Membership != spec.Join && m.Membership != spec.Invite && m.Membership != spec.Knock) {
			continue
		}
		if _, err := a.rooms.SetMembership(ctx, d.RoomID, roomsLeave(m.UserID)); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			a.log.Warn("room deletion: a member could not leave", "room", d.RoomID, "user", m.UserID, "err", err)
			d.FailedUsers = append(d.FailedUsers, m.UserID)
			continue
		}
		if !kicked[m.UserID] {
			kicked[m.UserID] = true
			d.KickedUsers = append(d.KickedUsers, m.UserID)
		}
		// Progress is recorded after each leave, for delete_status.
		if err := a.db.UpdateRoomDeletion(ctx, *d); err != nil {
			return err
		}
	}
	if !d.Purge {
		return nil
	}
	aliases, err := storage.AliasesOfRoom(ctx, a.db.Read(), d.RoomID)
	if err != nil {
		return err
	}
	err = a.db.WriteTx(ctx, func(tx *sql.Tx) error {
		for _, al := range aliases {
			if err := storage.DeleteAlias(ctx, tx, al); err != nil {
				return err
			}
		}
		return storage.SetPublishedTx(ctx, tx, d.RoomID, false)
	})
	if err != nil {
		return err
	}
	d.Aliases = append(d.Aliases, aliases...)
	for _, u := range d.KickedUsers {
		if err := a.db.ForgetRoom(ctx, u, d.RoomID); err != nil {
			return err
		}
	}
	return nil
}

func deletionJSON(d storage.RoomDeletion) map[string]any {
	list := func(l []string) []string {
		if l == nil {
			return []string{}
		}
		return l
	}
	out := map[string]any{
		"delete_id": d.DeleteID, "room_id": d.RoomID, "status": d.Status,
		"shutdown_room": map[string]any{"kicked_users": list(d.KickedUsers), "failed_to_kick_users": list(d.FailedUsers),
			"local_aliases": list(d.Aliases), "new_room_id": nil},
	}
	if d.Error != nil {
		out["error"] = *d.Error
	}
	return out
}

// GET /_synapse/admin/v2/rooms/{roomId}/delete_status.
func (a *API) deleteStatusOfRoom(r *http.Request, c accounts.Caller) (any, error) {
	id, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	ds, err := a.db.RoomDeletionsOfRoom(r.Context(), id)
	if err != nil {
		return nil, err
	}
	if len(ds) == 0 {
		return nil, mxhttp.NotFound("No delete task for room_id '%s' found", id)
	}
	results := make([]map[string]any, 0, len(ds))
	for _, d := range ds {
		results = append(results, deletionJSON(d))
	}
	return map[string]any{"results": results}, nil
}

// GET /_synapse/admin/v2/rooms/delete_status/{deleteId}.
func (a *API) deleteStatus(r *http.Request, c accounts.Caller) (any, error) {
	d, err := a.db.RoomDeletion(r.Context(), pathParam(r, "deleteId"))
	if errors.Is(err, storage.ErrNotFound) {
		return nil, mxhttp.NotFound("delete id '%s' not found", pathParam(r, "deleteId"))
	}
	if err != nil {
		return nil, err
	}
	return deletionJSON(d), nil
}
