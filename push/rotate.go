package push

import (
	"context"
	"database/sql"
	"time"

	"github.com/hearth-matrix/hearth/storage"
)

// Rotation bounds notification storage (docs/performance.md, "Push in big
// rooms"). Rows older than the retention window that are not highlights
// are deleted; for every member whose unread counts they held, the count
// moves into push_summaries, one row per member, room and thread, kept
// with the receipts it was counted with. Highlights are kept (they are
// few, and /notifications?only=highlight lists them), so highlight counts
// stay exact; a notification count stays exact while the member's
// receipts do not move, and a receipt older than the window reads the
// rotated part whole (as Synapse's event_push_summary does).

// DefaultRetention is how long notification rows are kept before they
// are rotated into summaries: /notifications lists what is newer (and
// every highlight).
const DefaultRetention = 30 * 24 * time.Hour

// rotateEvery is how often the worker rotates.
const rotateEvery = time.Hour

// Rotate rotates the rows older than before into summaries, one room per
// transaction.
func (p *Push) Rotate(ctx context.Context, before time.Time) error {
	cutoff, roomIDs, err := storage.PushRotationCutoff(ctx, p.db.Read(), before.UnixMilli())
	if err != nil || cutoff == 0 {
		return err
	}
	for _, roomID := range roomIDs {
		if err := p.rotateRoom(ctx, roomID, cutoff); err != nil {
			return err
		}
	}
	return nil
}

func (p *Push) rotateRoom(ctx context.Context, roomID string, cutoff int64) error {
	return p.db.WriteTx(ctx, func(tx *sql.Tx) error {
		users, err := storage.PushRotationUsers(ctx, tx, roomID, cutoff)
		if err != nil {
			return err
		}
		reads := map[string]map[string]int64{}
		before := map[string]map[string][2]int{}
		for _, u := range users {
			in, err := storage.UnreadInputs(ctx, tx, u, roomID, 0, cutoff)
			if err != nil {
				return err
			}
			reads[u] = in.Read
			if before[u], err = rowCounts(ctx, tx, u, roomID, in, cutoff); err != nil {
				return err
			}
		}
		if err := storage.DeletePushRows(ctx, tx, roomID, cutoff); err != nil {
			return err
		}
		for _, u := range users {
			in, err := storage.UnreadInputs(ctx, tx, u, roomID, 0, cutoff)
			if err != nil {
				return err
			}
			after, err := rowCounts(ctx, tx, u, roomID, in, cutoff)
			if err != nil {
				return err
			}
			sums, err := storage.PushSummaries(ctx, tx, u, roomID)
			if err != nil {
				return err
			}
			old := map[string]storage.PushSummary{}
			for _, s := range sums {
				old[s.Thread] = s
			}
			for thread, c := range before[u] {
				n, h := c[0]-after[thread][0], c[1]-after[thread][1]
				if n == 0 && h == 0 {
					continue
				}
				s := storage.PushSummary{Thread: thread, Notif: n, Highlight: h, UpTo: cutoff, ReadPos: reads[u][""], ThreadReadPos: reads[u][thread]}
				if o, ok := old[thread]; ok && o.ReadPos == s.ReadPos && o.ThreadReadPos == s.ThreadReadPos {
					s.Notif += o.Notif // still unread: it adds up
					s.Highlight += o.Highlight
				}
				if err := storage.PutPushSummary(ctx, tx, u, roomID, s); err != nil {
					return err
				}
			}
		}
		return nil
	})
}
