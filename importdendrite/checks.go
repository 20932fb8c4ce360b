package importdendrite

import (
	"context"
	"fmt"
	"github.com/hearth-matrix/hearth/storage"
)

// checkCounts compares, before the commit, what Hearth holds with what the
// import wrote, table by table, and fills in the row counts of the
// Dendrite tables that were not read (so the report shows what was left).
func (im *importer) checkCounts(ctx context.Context, q storage.Reader) error {
	for _, name := range im.src.tableNames() {
		t := im.rep.table(name)
		if t.Read == 0 {
			n, err := im.src.count(ctx, name)
			if err != nil {
				return err
			}
			t.Read = n
		}
	}
	written := func(tables ...string) int64 {
		var n int64
		for _, t := range tables {
			if r, ok := im.rep.Tables[t]; ok {
				n += r.Written
			}
		}
		return n
	}
	checks := []struct {
		hearth, where string
		want          int64
	}{
		{"users", "", written("userapi_accounts")},
		{"devices", "", written("userapi_devices")},
		{"access_tokens", "", written("userapi_devices")},
		{"events", "", im.eventsWritten + written("roomserver_invites")},
		{"account_data", "", written("userapi_account_datas")},
		{"filters", "", written("syncapi_filter")},
		{"receipts", "", written("syncapi_receipts")},
		{"room_aliases", "", written("roomserver_room_aliases")},
		{"pushers", "", written("userapi_pushers")},
		{"registration_tokens", "", written("userapi_registration_tokens")},
		{"device_keys", "", written("keyserver_device_keys")},
		{"one_time_keys", "", written("keyserver_one_time_keys")},
		{"cross_signing_keys", "", written("keyserver_cross_signing_keys")},
		{"key_signatures", "", written("keyserver_cross_signing_sigs")},
		{"key_backup_versions", "", written("userapi_key_backup_versions")},
		{"key_backup_sessions", "", written("userapi_key_backups")},
		{"to_device_inbox", "", written("syncapi_send_to_device")},
		{"media", "", written("mediaapi_media_repository")},
		{"user_threepids", "", written("userapi_threepids")},
		{"media_thumbnails", "", written("mediaapi_thumbnail")},
	}
	var bad []string
	for _, c := range checks {
		got, err := storage.CountRows(ctx, q, c.hearth, c.where)
		if err != nil {
			return err
		}
		line := fmt.Sprintf("%s: %d rows, %d imported", c.hearth, got, c.want)
		if got != c.want {
			line += "  MISMATCH"
			bad = append(bad, c.hearth)
		}
		im.rep.Checks = append(im.rep.Checks, line)
	}
	if len(bad) > 0 {
		return fmt.Errorf("count check failed for %v (see %s)", bad, ReportFile)
	}
	return nil
}
