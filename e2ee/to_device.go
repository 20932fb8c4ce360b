package e2ee

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/hearth-matrix/hearth/mxhttp"
	"github.com/hearth-matrix/hearth/storage"
)

// ToDeviceMessage is one message in a device's inbox, shaped as sync's
// to_device.events entries.
type ToDeviceMessage struct {
	Position int64           `json:"-"`
	Sender   string          `json:"sender"`
	Type     string          `json:"type"`
	Content  json.RawMessage `json:"content"`
}

// errDuplicateTxn rolls back a retried send: its first attempt committed.
var errDuplicateTxn = errors.New("duplicate transaction")

// target is one device a to-device message was delivered to.
type target struct{ userID, deviceID string }

// SendToDevice delivers a to-device message (PUT /sendToDevice) to each
// listed device of local users, or to all of a user's devices for "*",
// and queues an m.direct_to_device EDU for each other server with
// recipients, in the same transaction. A retry with the same sender
// device and txnID delivers nothing again. Unknown devices are skipped. A
// device whose inbox is full loses the message, and the log says so.
func (e *E2EE) SendToDevice(ctx context.Context, sender, senderDevice, eventType, txnID string, messages map[string]map[string]json.RawMessage) error {
	for userID, devs := range messages {
		for deviceID, content := range devs {
			if len(content) == 0 || content[0] != '{' {
				return mxhttp.BadJSON("The message for %s %s must be a JSON object", userID, deviceID)
			}
		}
	}
	var delivered []target
	err := e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		err := storage.InsertTxn(ctx, tx, sender, senderDevice, "sendToDevice/"+eventType, txnID, "", time.Now().UnixMilli())
		if errors.Is(err, storage.ErrConflict) {
			return errDuplicateTxn
		}
		if err != nil {
			return err
		}
		if delivered, err = e.deliverLocal(ctx, tx, sender, eventType, messages); err != nil {
			return err
		}
		return e.queueRemoteToDevice(ctx, tx, sender, eventType, messages)
	})
	if errors.Is(err, errDuplicateTxn) {
		return nil
	}
	if err != nil {
		return err
	}
	e.notifyDelivered(delivered)
	return nil
}

// queueRemoteToDevice queues one m.direct_to_device EDU per other server
// with recipients in messages, each with its own message_id.
func (e *E2EE) queueRemoteToDevice(ctx context.Context, tx *sql.Tx, sender, eventType string, messages map[string]map[string]json.RawMessage) error {
	byServer := map[string]map[string]map[string]json.RawMessage{}
	for userID, devs := range messages {
		if e.isLocal(userID) {
			continue
		}
		server := serverOf(userID)
		if server == "" {
			continue
		}
		if e.remote == nil {
			e.log.Debug("to-device message to a remote user dropped: no federation", "user_id", userID)
			continue
		}
		if byServer[server] == nil {
			byServer[server] = map[string]map[string]json.RawMessage{}
		}
		byServer[server][userID] = devs
	}
	for server, msgs := range byServer {
		id := make([]byte, 16)
		_, _ = rand.Read(id)
		content := map[string]any{"sender": sender, "type": eventType, "message_id": hex.EncodeToString(id), "messages": msgs}
		if err := e.remote.QueueEDU(ctx, tx, []string{server}, "m.direct_to_device", content); err != nil {
			return err
		}
	}
	return nil
}

// deliverLocal puts a message in the inboxes of the local devices named in
// messages ("*": all of a user's devices); remote users are skipped.
func (e *E2EE) deliverLocal(ctx context.Context, tx *sql.Tx, sender, eventType string, messages map[string]map[string]json.RawMessage) ([]target, error) {
	var delivered []target
	for userID, devs := range messages {
		if !e.isLocal(userID) {
			continue
		}
		known, err := storage.DeviceIDs(ctx, tx, userID)
		if err != nil {
			return nil, err
		}
		for deviceID, content := range devs {
			if len(content) == 0 || content[0] != '{' {
				continue
			}
			targets := []string{deviceID}
			if deviceID == "*" {
				targets = known
			}
			for _, d := range targets {
				if !slices.Contains(known, d) {
					continue
				}
				ok, err := e.deliver(ctx, tx, userID, d, storage.ToDeviceMessage{Sender: sender, Type: eventType, Content: string(content)})
				if err != nil {
					return nil, err
				}
				if ok {
					delivered = append(delivered, target{userID, d})
				}
			}
		}
	}
	return delivered, nil
}

// notifyDelivered wakes the syncs of the devices that got a message.
func (e *E2EE) notifyDelivered(delivered []target) {
	for _, t := range delivered {
		e.notify([]string{t.userID}, t.deviceID)
	}
}

// deliver puts one message in a device's inbox unless the inbox is full.
func (e *E2EE) deliver(ctx context.Context, tx *sql.Tx, userID, deviceID string, m storage.ToDeviceMessage) (bool, error) {
	n, err := storage.InboxSize(ctx, tx, userID, deviceID)
	if err != nil {
		return false, err
	}
	if n >= e.InboxCap {
		e.log.Warn("to-device inbox full: message dropped (the device has not synced for a long time)",
			"user_id", userID, "device_id", deviceID, "cap", e.InboxCap, "sender", m.Sender, "type", m.Type)
		return false, nil
	}
	_, err = e.db.InsertToDevice(ctx, tx, userID, deviceID, m)
	return err == nil, err
}

// InboxSince returns a device's to-device messages after afterPos, oldest
// first, at most limit. maxPos is the to-device position the next sync
// token should hold: the position of the last message returned when limit
// cut the list short, otherwise the stream's head (so an idle device's
// token still moves forward). Messages stay stored until AckInbox.
func (e *E2EE) InboxSince(ctx context.Context, userID, deviceID string, afterPos int64, limit int) ([]ToDeviceMessage, int64, error) {
	head, err := storage.MaxToDevicePos(ctx, e.db.Read())
	if err != nil {
		return nil, 0, err
	}
	return e.InboxBetween(ctx, userID, deviceID, afterPos, head, limit)
}

// InboxBetween is InboxSince up to a head position the caller read before
// (sync reads all stream heads at once, then each stream up to its head).
func (e *E2EE) InboxBetween(ctx context.Context, userID, deviceID string, afterPos, head int64, limit int) ([]ToDeviceMessage, int64, error) {
	if head < afterPos {
		head = afterPos
	}
	rows, err := storage.InboxRange(ctx, e.db.Read(), userID, deviceID, afterPos, head, limit)
	if err != nil {
		return nil, 0, err
	}
	out := make([]ToDeviceMessage, 0, len(rows))
	for _, r := range rows {
		out = append(out, ToDeviceMessage{Position: r.Position, Sender: r.Sender, Type: r.Type, Content: json.RawMessage(r.Content)})
	}
	if len(out) == limit && limit > 0 {
		return out, out[len(out)-1].Position, nil
	}
	return out, head, nil
}

// AckInbox deletes a device's messages up to uptoPos: a sync with a token
// at uptoPos proves the device received them.
func (e *E2EE) AckInbox(ctx context.Context, userID, deviceID string, uptoPos int64) error {
	// Most syncs acknowledge nothing: look before taking the write lock.
	if pending, err := storage.InboxRange(ctx, e.db.Read(), userID, deviceID, 0, uptoPos, 1); err != nil || len(pending) == 0 {
		return err
	}
	return e.db.WriteTx(ctx, func(tx *sql.Tx) error {
		return storage.DeleteInboxUpTo(ctx, tx, userID, deviceID, uptoPos)
	})
}
