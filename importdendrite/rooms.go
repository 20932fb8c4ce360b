package importdendrite

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"maps"
	"sort"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"

	"github.com/hearth-matrix/hearth/storage"
)

// maxChainLen bounds a snapshot's delta chain as the room core does.
const maxChainLen = 48

// maxCachedStates bounds the states of Dendrite snapshots held at once
// (each is a room's full state).
const maxCachedStates = 256

// eventMeta is a roomserver_events row.
type eventMeta struct {
	nid, room, typeNID, keyNID, snapshot, depth int64
	id                                          string
	rejected                                    bool
}

// roomsPass holds what the room pass loads once.
type roomsPass struct {
	types, keys map[int64]string
	events      map[int64]*eventMeta
	byRoom      map[int64][]*eventMeta
	snapshots   map[int64][]int64 // snapshot nid -> state block nids
	blocks      map[int64][]int64 // block nid -> event nids
	stream      map[string]streamRow
	redactedBy  map[string]string // target -> validated redaction
	states      map[int64]map[storage.StateKey]string
}

type streamRow struct {
	pos     int64
	exclude bool
	session sql.NullInt64
	txnID   sql.NullString
	sender  string
}

func (im *importer) importRooms(ctx context.Context, tx *sql.Tx) error {
	p := &roomsPass{types: map[int64]string{}, keys: map[int64]string{}, events: map[int64]*eventMeta{}, byRoom: map[int64][]*eventMeta{},
		snapshots: map[int64][]int64{}, blocks: map[int64][]int64{}, stream: map[string]streamRow{}, redactedBy: map[string]string{},
		states: map[int64]map[storage.StateKey]string{}}
	if err := im.loadRoomserver(ctx, p); err != nil {
		return err
	}
	type room struct {
		nid, snapshot int64
		id, version   string
		latest        []int64
	}
	var rs []room
	t := im.rep.table("roomserver_rooms")
	err := im.src.each(ctx, "roomserver_rooms", `SELECT room_nid, room_id, ARR(latest_event_nids), state_snapshot_nid, room_version FROM roomserver_rooms ORDER BY room_nid`,
		func(rows *sql.Rows) error {
			var r room
			var latest string
			if err := rows.Scan(&r.nid, &r.id, &latest, &r.snapshot, &r.version); err != nil {
				return err
			}
			var err error
			if r.latest, err = nids(latest); err != nil {
				return err
			}
			t.Read++
			rs = append(rs, r)
			return nil
		})
	if err != nil {
		return err
	}
	evT, jsT := im.rep.table("roomserver_events"), im.rep.table("roomserver_event_json")
	evT.Read, jsT.Read = int64(len(p.events)), int64(len(p.events))
	for _, r := range rs {
		n, err := im.importRoom(ctx, tx, p, r.nid, r.id, r.version, r.snapshot, r.latest)
		if err != nil {
			return fmt.Errorf("room %s: %w", r.id, err)
		}
		if n >= 0 {
			t.Written++
		}
	}
	evT.Written, jsT.Written = im.eventsWritten, im.eventsWritten
	for _, name := range []string{"roomserver_rooms", "roomserver_events", "roomserver_event_json"} {
		im.progress(name)
	}
	if err := im.importRoomExtras(ctx, tx, p); err != nil {
		return err
	}
	return nil
}

func (im *importer) loadRoomserver(ctx context.Context, p *roomsPass) error {
	err := im.src.each(ctx, "roomserver_event_types", `SELECT event_type_nid, event_type FROM roomserver_event_types`, func(rows *sql.Rows) error {
		var nid int64
		var s string
		err := rows.Scan(&nid, &s)
		p.types[nid] = s
		return err
	})
	if err != nil {
		return err
	}
	err = im.src.each(ctx, "roomserver_event_state_keys", `SELECT event_state_key_nid, event_state_key FROM roomserver_event_state_keys`, func(rows *sql.Rows) error {
		var nid int64
		var s string
		err := rows.Scan(&nid, &s)
		p.keys[nid] = s
		return err
	})
	if err != nil {
		return err
	}
	err = im.src.each(ctx, "roomserver_events", `SELECT event_nid, room_nid, event_type_nid, event_state_key_nid, state_snapshot_nid, depth, event_id, is_rejected
		FROM roomserver_events ORDER BY event_nid`, func(rows *sql.Rows) error {
		e := &eventMeta{}
		if err := rows.Scan(&e.nid, &e.room, &e.typeNID, &e.keyNID, &e.snapshot, &e.depth, &e.id, &e.rejected); err != nil {
			return err
		}
		p.events[e.nid] = e
		p.byRoom[e.room] = append(p.byRoom[e.room], e)
		return nil
	})
	if err != nil {
		return err
	}
	err = im.src.each(ctx, "roomserver_state_snapshots", `SELECT state_snapshot_nid, ARR(state_block_nids) FROM roomserver_state_snapshots`, func(rows *sql.Rows) error {
		var nid int64
		var s string
		if err := rows.Scan(&nid, &s); err != nil {
			return err
		}
		bl, err := nids(s)
		p.snapshots[nid] = bl
		return err
	})
	if err != nil {
		return err
	}
	err = im.src.each(ctx, "roomserver_state_block", `SELECT state_block_nid, ARR(event_nids) FROM roomserver_state_block`, func(rows *sql.Rows) error {
		var nid int64
		var s string
		if err := rows.Scan(&nid, &s); err != nil {
			return err
		}
		evs, err := nids(s)
		p.blocks[nid] = evs
		return err
	})
	if err != nil {
		return err
	}
	for _, tb := range []string{"roomserver_event_types", "roomserver_event_state_keys", "roomserver_state_snapshots", "roomserver_state_block"} {
		n, err := im.src.count(ctx, tb)
		if err != nil {
			return err
		}
		im.rep.table(tb).Read, im.rep.table(tb).Written = n, n
	}
	err = im.src.each(ctx, "syncapi_output_room_events", `SELECT id, event_id, exclude_from_sync, session_id, transaction_id, sender FROM syncapi_output_room_events`, func(rows *sql.Rows) error {
		var s streamRow
		var id string
		if err := rows.Scan(&s.pos, &id, &s.exclude, &s.session, &s.txnID, &s.sender); err != nil {
			return err
		}
		p.stream[id] = s
		return nil
	})
	if err != nil {
		return err
	}
	t := im.rep.table("roomserver_redactions")
	return im.src.each(ctx, "roomserver_redactions", `SELECT redaction_event_id, redacts_event_id, validated FROM roomserver_redactions`, func(rows *sql.Rows) error {
		var red, target string
		var validated bool
		if err := rows.Scan(&red, &target, &validated); err != nil {
			return err
		}
		t.Read++
		if validated {
			p.redactedBy[target] = red
			t.Written++
		}
		return nil
	})
}

// stateOf is the state a Dendrite snapshot holds.
func (p *roomsPass) stateOf(nid int64) (map[storage.StateKey]string, error) {
	if st, ok := p.states[nid]; ok {
		return st, nil
	}
	blocks, ok := p.snapshots[nid]
	if !ok {
		return nil, fmt.Errorf("state snapshot %d is missing", nid)
	}
	if len(p.states) >= maxCachedStates {
		clear(p.states) // bounded memory, whatever the rooms' sizes
	}
	st := map[storage.StateKey]string{}
	for _, b := range blocks {
		evs, ok := p.blocks[b]
		if !ok {
			return nil, fmt.Errorf("state block %d is missing", b)
		}
		for _, en := range evs {
			e, ok := p.events[en]
			if !ok {
				return nil, fmt.Errorf("state event %d is missing", en)
			}
			st[storage.StateKey{Type: p.types[e.typeNID], StateKey: p.keys[e.keyNID]}] = e.id
		}
	}
	p.states[nid] = st
	return st, nil
}

// snapWriter writes one room's Hearth snapshots: a delta on the last one
// written when it only adds or replaces entries, else a full copy.
type snapWriter struct {
	roomID string
	last   *snap
	byNID  map[int64]*snap
}

type snap struct {
	id    int64
	chain int
	state map[storage.StateKey]string
}

func (w *snapWriter) write(ctx context.Context, tx *sql.Tx, st map[storage.StateKey]string) (*snap, error) {
	if l := w.last; l != nil {
		if maps.Equal(l.state, st) {
			return l, nil
		}
		delta, superset := map[storage.StateKey]string{}, true
		for k := range l.state {
			if _, ok := st[k]; !ok {
				superset = false
				break
			}
		}
		if superset && l.chain+1 <= maxChainLen {
			for k, id := range st {
				if l.state[k] != id {
					delta[k] = id
				}
			}
			id, err := storage.InsertSnapshot(ctx, tx, w.roomID, l.id, l.chain+1, delta)
			if err != nil {
				return nil, err
			}
			w.last = &snap{id: id, chain: l.chain + 1, state: st}
			return w.last, nil
		}
	}
	id, err := storage.InsertSnapshot(ctx, tx, w.roomID, 0, 0, st)
	if err != nil {
		return nil, err
	}
	w.last = &snap{id: id, state: st}
	return w.last, nil
}

func (w *snapWriter) forNID(ctx context.Context, tx *sql.Tx, p *roomsPass, nid int64) (*snap, error) {
	if s, ok := w.byNID[nid]; ok {
		return s, nil
	}
	st, err := p.stateOf(nid)
	if err != nil {
		return nil, err
	}
	s, err := w.write(ctx, tx, st)
	if err != nil {
		return nil, err
	}
	if len(w.byNID) >= maxCachedStates {
		clear(w.byNID)
	}
	w.byNID[nid] = s
	return s, nil
}

// importRoom carries one room: its events in the order Dendrite streamed
// them (events it did not stream, outliers among them, below the
// timeline), the state before and after each, the current state and the
// forward extremities. It returns -1 for a room with nothing to carry.
func (im *importer) importRoom(ctx context.Context, tx *sql.Tx, p *roomsPass, roomNID int64, roomID, version string, current int64, latest []int64) (int, error) {
	ver, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(version))
	if err != nil {
		im.rep.notCarried("room %s: room version %q is not supported by Hearth", roomID, version)
		return -1, nil
	}
	metas := p.byRoom[roomNID]
	if len(metas) == 0 {
		return -1, nil
	}
	// Streamed events in stream order first, then the others by depth.
	sort.SliceStable(metas, func(i, j int) bool {
		a, aok := p.stream[metas[i].id]
		b, bok := p.stream[metas[j].id]
		aok, bok = aok && !a.exclude, bok && !b.exclude
		switch {
		case aok && bok:
			return a.pos < b.pos
		case aok != bok:
			return aok
		}
		if metas[i].depth != metas[j].depth {
			return metas[i].depth < metas[j].depth
		}
		return metas[i].nid < metas[j].nid
	})
	jsons := map[int64][]byte{}
	err = im.src.each(ctx, "roomserver_event_json", `SELECT j.event_nid, j.event_json FROM roomserver_event_json j
		JOIN roomserver_events e ON e.event_nid = j.event_nid WHERE e.room_nid = $1`, func(rows *sql.Rows) error {
		var nid int64
		var js string
		err := rows.Scan(&nid, &js)
		jsons[nid] = []byte(js)
		return err
	}, roomNID)
	if err != nil {
		return 0, err
	}
	w := &snapWriter{roomID: roomID, byNID: map[int64]*snap{}}
	pdus := map[string]gomatrixserverlib.PDU{}
	var maxDepth, createdTS int64
	written := 0
	for _, m := range metas {
		raw, ok := jsons[m.nid]
		if !ok {
			im.rep.notCarried("event %s in %s: its JSON is missing in Dendrite", m.id, roomID)
			continue
		}
		_, redacted := p.redactedBy[m.id]
		pdu, err := parsePDU(ver, raw, redacted)
		if err != nil {
			im.rep.notCarried("event %s in %s: %v", m.id, roomID, err)
			continue
		}
		if pdu.EventID() != m.id || pdu.RoomID().String() != roomID {
			im.rep.notCarried("event %s in %s: its JSON hashes to %s in room %s", m.id, roomID, pdu.EventID(), pdu.RoomID().String())
			continue
		}
		if bad := im.checkOwnSignature(ver, pdu); bad != "" {
			im.rep.notCarried("event %s in %s is carried, but %s", m.id, roomID, bad)
		}
		pdus[m.id] = pdu
		row := storage.Event{EventID: m.id, RoomID: roomID, Type: pdu.Type(), StateKey: pdu.StateKey(), Sender: string(pdu.SenderID()),
			Depth: pdu.Depth(), OriginTS: int64(pdu.OriginServerTS()), JSON: pdu.JSON(), Rejected: m.rejected}
		if pdu.Type() == spec.MRoomMember {
			if mem, err := pdu.Membership(); err == nil {
				row.Membership = &mem
			}
		}
		if pdu.Type() == spec.MRoomCreate && pdu.StateKey() != nil && *pdu.StateKey() == "" {
			createdTS = row.OriginTS
		}
		if red, ok := p.redactedBy[m.id]; ok {
			row.RedactedBy = &red
		}
		if rel := gjson.GetBytes(pdu.Content(), `m\.relates_to`); rel.IsObject() && rel.Get("event_id").String() != "" {
			target, relType := rel.Get("event_id").String(), rel.Get("rel_type").String()
			row.RelatesTo = &target
			if relType != "" {
				row.RelType = &relType
			}
		}
		if m.snapshot == 0 {
			row.Outlier = true
		} else {
			before, err := w.forNID(ctx, tx, p, m.snapshot)
			if err != nil {
				return 0, fmt.Errorf("state before %s: %w", m.id, err)
			}
			row.SnapshotBefore, row.SnapshotAfter = before.id, before.id
			if k := pdu.StateKey(); k != nil && !m.rejected {
				sk := storage.StateKey{Type: pdu.Type(), StateKey: *k}
				if old, ok := before.state[sk]; ok {
					if prev, ok := pdus[old]; ok {
						content, sender := string(prev.Content()), string(prev.SenderID())
						row.PrevContent, row.PrevSender, row.ReplacesState = &content, &sender, &old
					}
				}
				after := maps.Clone(before.state)
				after[sk] = m.id
				s, err := w.write(ctx, tx, after)
				if err != nil {
					return 0, err
				}
				row.SnapshotAfter = s.id
			}
			maxDepth = max(maxDepth, row.Depth)
		}
		if s, ok := p.stream[m.id]; ok && !s.exclude && !row.Outlier {
			row.StreamPos = s.pos
			if s.session.Valid && s.txnID.Valid {
				if local, ok := im.localpartOf(s.sender); ok {
					if dev, ok := im.deviceOfSession[sessionKey{local, s.session.Int64}]; ok {
						txn := s.txnID.String
						row.SenderDevice, row.TxnID = &dev, &txn
					}
				}
			}
		} else {
			row.StreamPos = im.belowTimeline()
		}
		if err := storage.ImportEvent(ctx, tx, row); err != nil {
			return 0, err
		}
		if row.StreamPos > 0 {
			if err := im.db.IndexForSearch(ctx, tx, row); err != nil {
				return 0, err
			}
		}
		written++
		im.eventsWritten++
	}
	// The room's head: Dendrite's forward extremities and current state.
	var ext []string
	for _, n := range latest {
		if e, ok := p.events[n]; ok {
			if _, carried := pdus[e.id]; carried {
				ext = append(ext, e.id)
			}
		}
	}
	var cur int64
	if current != 0 {
		s, err := w.forNID(ctx, tx, p, current)
		if err != nil {
			return 0, fmt.Errorf("current state: %w", err)
		}
		cur = s.id
		for k, id := range s.state {
			var mem *string
			if k.Type == spec.MRoomMember {
				if pdu, ok := pdus[id]; ok {
					if m, err := pdu.Membership(); err == nil {
						mem = &m
					}
				}
			}
			if err := storage.SetCurrentState(ctx, tx, roomID, k, id, mem); err != nil {
				return 0, err
			}
		}
	}
	if ext == nil {
		ext = []string{}
	}
	if err := storage.InsertRoom(ctx, tx, storage.Room{RoomID: roomID, Version: version, Extremities: ext, MaxDepth: maxDepth,
		CurrentSnapshot: cur, CreatedTS: createdTS}); err != nil {
		return 0, err
	}
	return written, nil
}

// parsePDU reads a stored event for its room version. Dendrite keeps an
// unsigned section (redacted_because, invite_room_state) in its copy;
// Hearth stores the PDU alone and builds unsigned itself.
func parsePDU(ver gomatrixserverlib.IRoomVersion, raw []byte, redacted bool) (gomatrixserverlib.PDU, error) {
	if gjson.GetBytes(raw, "unsigned").Exists() {
		var err error
		if raw, err = sjson.DeleteBytes(raw, "unsigned"); err != nil {
			return nil, err
		}
	}
	pdu, err := ver.NewEventFromTrustedJSON(raw, redacted)
	if err != nil {
		return nil, err
	}
	pdu.EventID()
	return pdu, nil
}

// belowTimeline is a new stream position under every other: for events
// Dendrite did not stream (outliers, rejected events, history it
// excluded from sync), which /messages finds by depth and sync never
// reports as new, as Hearth does with backfilled events.
func (im *importer) belowTimeline() int64 {
	im.lowest--
	return im.lowest
}

func (im *importer) localpartOf(userID string) (string, bool) {
	id, err := spec.NewUserID(userID, true)
	if err != nil || string(id.Domain()) != im.server {
		return "", false
	}
	return id.Local(), true
}

// importRoomExtras carries what hangs off rooms: aliases, the directory,
// receipts, forgotten rooms and invites to rooms this server is not in.
func (im *importer) importRoomExtras(ctx context.Context, tx *sql.Tx, p *roomsPass) error {
	known := func(roomID string) bool {
		_, err := storage.GetRoom(ctx, tx, roomID)
		return err == nil
	}
	t := im.rep.table("roomserver_room_aliases")
	err := im.src.each(ctx, "roomserver_room_aliases", `SELECT alias, room_id, creator_id FROM roomserver_room_aliases ORDER BY alias`, func(rows *sql.Rows) error {
		var alias, roomID, creator string
		if err := rows.Scan(&alias, &roomID, &creator); err != nil {
			return err
		}
		t.Read++
		if !known(roomID) {
			im.rep.notCarried("alias %s: room %s was not carried", alias, roomID)
			return nil
		}
		t.Written++
		return storage.InsertAlias(ctx, tx, alias, roomID, creator)
	})
	if err := im.withProgress("roomserver_room_aliases", err); err != nil {
		return err
	}
	t = im.rep.table("roomserver_published")
	err = im.src.each(ctx, "roomserver_published", `SELECT room_id, appservice_id, network_id, published FROM roomserver_published`, func(rows *sql.Rows) error {
		var roomID, as, network string
		var published bool
		if err := rows.Scan(&roomID, &as, &network, &published); err != nil {
			return err
		}
		t.Read++
		if !published {
			return nil
		}
		if as != "" || network != "" {
			im.rep.notCarried("directory entry of %s in application service %s's network %s: Hearth has one directory", roomID, as, network)
		}
		if !known(roomID) {
			return nil
		}
		t.Written++
		return storage.SetPublishedTx(ctx, tx, roomID, true)
	})
	if err := im.withProgress("roomserver_published", err); err != nil {
		return err
	}
	t = im.rep.table("syncapi_receipts")
	err = im.src.each(ctx, "syncapi_receipts", `SELECT id, room_id, receipt_type, user_id, event_id, receipt_ts FROM syncapi_receipts ORDER BY id`, func(rows *sql.Rows) error {
		var rc storage.Receipt
		if err := rows.Scan(&rc.StreamPos, &rc.RoomID, &rc.Type, &rc.UserID, &rc.EventID, &rc.TS); err != nil {
			return err
		}
		t.Read++
		t.Written++
		return storage.ImportReceipt(ctx, tx, rc)
	})
	if err := im.withProgress("syncapi_receipts", err); err != nil {
		return err
	}
	t = im.rep.table("roomserver_membership")
	roomIDs, roomVersions := map[int64]string{}, map[int64]string{}
	if err := im.src.each(ctx, "roomserver_rooms", `SELECT room_nid, room_id, room_version FROM roomserver_rooms`, func(rows *sql.Rows) error {
		var nid int64
		var id, ver string
		err := rows.Scan(&nid, &id, &ver)
		roomIDs[nid], roomVersions[nid] = id, ver
		return err
	}); err != nil {
		return err
	}
	err = im.src.each(ctx, "roomserver_membership", `SELECT room_nid, target_nid, forgotten FROM roomserver_membership`, func(rows *sql.Rows) error {
		var room, target int64
		var forgotten bool
		if err := rows.Scan(&room, &target, &forgotten); err != nil {
			return err
		}
		t.Read++
		if forgotten {
			t.Written++
			return storage.ImportForgotten(ctx, tx, p.keys[target], roomIDs[room])
		}
		return nil
	})
	if err := im.withProgress("roomserver_membership", err); err != nil {
		return err
	}
	return im.importRemoteInvites(ctx, tx, roomIDs, roomVersions, p)
}

// importRemoteInvites carries invites of local users to rooms this server
// is not in: Dendrite keeps the invite (with the stripped state the
// inviting server sent) in roomserver_invites; Hearth keeps it as an
// outlier, the invitee's current membership and the stripped state.
func (im *importer) importRemoteInvites(ctx context.Context, tx *sql.Tx, roomIDs, roomVersions map[int64]string, p *roomsPass) error {
	t := im.rep.table("roomserver_invites")
	return im.withProgress("roomserver_invites", im.src.each(ctx, "roomserver_invites", `SELECT invite_event_id, room_nid, target_nid, retired, invite_event_json FROM roomserver_invites`,
		func(rows *sql.Rows) error {
			var eventID, js string
			var room, target int64
			var retired bool
			if err := rows.Scan(&eventID, &room, &target, &retired, &js); err != nil {
				return err
			}
			t.Read++
			roomID, user := roomIDs[room], p.keys[target]
			if retired {
				return nil
			}
			if _, local := im.localpartOf(user); !local {
				return nil
			}
			if n, err := storage.CountRows(ctx, tx, "events", "event_id = $1 AND NOT outlier", eventID); err != nil || n > 0 {
				return err // in the DAG: carried with the room
			}
			ver := roomVersions[room] // the room's row, which Dendrite makes on the invite
			if v := gjson.Get(js, "room_version").String(); v != "" {
				ver = v
			}
			raw := []byte(js)
			if ev := gjson.Get(js, "event"); ev.IsObject() {
				raw = []byte(ev.Raw) // a headered event
			}
			rv, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(ver))
			if err != nil {
				im.rep.notCarried("invite %s: room version %q", eventID, ver)
				return nil
			}
			stripped := gjson.GetBytes(raw, "unsigned.invite_room_state").Raw
			if stripped == "" {
				stripped = "[]"
			}
			pdu, err := parsePDU(rv, raw, false)
			if err != nil || pdu.EventID() != eventID {
				im.rep.notCarried("invite %s: %v", eventID, err)
				return nil
			}
			if _, err := storage.GetRoom(ctx, tx, roomID); err != nil {
				if err := storage.InsertRoom(ctx, tx, storage.Room{RoomID: roomID, Version: ver, Extremities: []string{}, CreatedTS: int64(pdu.OriginServerTS())}); err != nil {
					return err
				}
			}
			if n, err := storage.CountRows(ctx, tx, "events", "event_id = $1", eventID); err != nil {
				return err
			} else if n == 0 {
				mem := "invite"
				if err := storage.ImportEvent(ctx, tx, storage.Event{StreamPos: im.belowTimeline(), EventID: eventID, RoomID: roomID, Type: pdu.Type(),
					StateKey: pdu.StateKey(), Sender: string(pdu.SenderID()), Depth: pdu.Depth(), OriginTS: int64(pdu.OriginServerTS()),
					Membership: &mem, Outlier: true, JSON: pdu.JSON()}); err != nil {
					return err
				}
			}
			mem := "invite"
			if err := storage.SetCurrentState(ctx, tx, roomID, storage.StateKey{Type: spec.MRoomMember, StateKey: user}, eventID, &mem); err != nil {
				return err
			}
			t.Written++
			return storage.PutRemoteInvite(ctx, tx, roomID, user, eventID, json.RawMessage(stripped))
		}))
}

// checkOwnSignature verifies this server's signature on an event it sent,
// with the signing key or an old one: the import checks what it carries
// and never re-signs. Other servers' signatures need their keys, which
// Hearth fetches when it serves the event. It returns what is wrong, or "".
func (im *importer) checkOwnSignature(ver gomatrixserverlib.IRoomVersion, pdu gomatrixserverlib.PDU) string {
	if _, local := im.localpartOf(string(pdu.SenderID())); !local {
		return ""
	}
	sigs := gjson.GetBytes(pdu.JSON(), "signatures."+gjson.Escape(im.server))
	if !sigs.IsObject() {
		return "it has no signature of " + im.server
	}
	redacted, err := ver.RedactEventJSON(pdu.JSON())
	if err != nil {
		return "it cannot be redacted for checking: " + err.Error()
	}
	for keyID := range sigs.Map() {
		if pub, ok := im.verifyKeys[gomatrixserverlib.KeyID(keyID)]; ok {
			if err := gomatrixserverlib.VerifyJSON(im.server, gomatrixserverlib.KeyID(keyID), pub, redacted); err != nil {
				return "its signature by " + keyID + " does not verify"
			}
			return ""
		}
	}
	return "it is signed by no key the config names"
}
