package importdendrite

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Report is what an import did: per Dendrite table the rows read and what
// became of them, the count checks, and everything not carried.
type Report struct {
	ServerName string
	Tables     map[string]*TableReport
	// Unknown lists tables and columns this importer does not know: data
	// of a newer Dendrite that was not carried.
	Unknown []string
	// NotCarried lists single items left behind, with the reason.
	NotCarried []string
	// Notes are things the operator should know (queued federation
	// traffic that was not sent, for example).
	Notes    []string
	Checks   []string
	Duration time.Duration
}

// TableReport is one Dendrite table.
type TableReport struct {
	Read    int64
	Written int64
	Fate    string
}

func newReport(server string) *Report {
	return &Report{ServerName: server, Tables: map[string]*TableReport{}}
}

func (r *Report) table(name string) *TableReport {
	t, ok := r.Tables[name]
	if !ok {
		t = &TableReport{Fate: fates[name].fate}
		r.Tables[name] = t
	}
	return t
}

func (r *Report) notCarried(format string, a ...any) {
	r.NotCarried = append(r.NotCarried, fmt.Sprintf(format, a...))
}

// checkSchema compares the source's tables and columns with the ones this
// importer knows (Dendrite v0.13's).
func (r *Report) checkSchema(s *source) error {
	for _, d := range s.dbs {
		for t, cols := range d.columns {
			f, ok := fates[t]
			if !ok {
				if ignoredTable(t) {
					continue
				}
				r.Unknown = append(r.Unknown, fmt.Sprintf("table %s (in %s): unknown, not carried", t, d.name))
				continue
			}
			known := map[string]bool{}
			for _, c := range strings.Fields(f.columns) {
				known[c] = true
			}
			for _, c := range cols {
				if !known[c] {
					r.Unknown = append(r.Unknown, fmt.Sprintf("column %s.%s: unknown, not carried", t, c))
				}
			}
			r.table(t)
		}
	}
	sort.Strings(r.Unknown)
	return nil
}

// ignoredTable is bookkeeping of the database engines and of Dendrite's
// schema migrations, which has nothing to carry.
func ignoredTable(t string) bool {
	return t == "db_migrations" || t == "schema_migrations" || strings.HasPrefix(t, "sqlite_") || strings.HasPrefix(t, "pg_")
}

// String is the report as the command prints it and writes it.
func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "Dendrite import report for %s\n\n", r.ServerName)
	names := make([]string, 0, len(r.Tables))
	for n := range r.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(&b, "%-45s %8s %8s  %s\n", "table", "read", "written", "what became of it")
	for _, n := range names {
		t := r.Tables[n]
		fmt.Fprintf(&b, "%-45s %8d %8d  %s\n", n, t.Read, t.Written, t.Fate)
	}
	section := func(title string, lines []string) {
		if len(lines) == 0 {
			return
		}
		fmt.Fprintf(&b, "\n%s:\n", title)
		for _, l := range lines {
			fmt.Fprintf(&b, "  - %s\n", l)
		}
	}
	section("count checks", r.Checks)
	section("unknown tables and columns (not carried)", r.Unknown)
	section("not carried", r.NotCarried)
	section("notes", r.Notes)
	if r.Duration > 0 {
		fmt.Fprintf(&b, "\ndone in %s\n", r.Duration.Round(time.Millisecond))
	}
	return b.String()
}

type fate struct {
	fate    string
	columns string // the columns Dendrite v0.13.8 has
}

// fates says, for every table of Dendrite v0.13.8, what the import does
// with it.
var fates = map[string]fate{
	// Accounts (userapi).
	"userapi_accounts":            {"carried: users (bcrypt hash as is, admin, guest, appservice, deactivated)", "localpart server_name created_ts password_hash appservice_id is_deactivated account_type"},
	"userapi_profiles":            {"carried: profiles", "localpart server_name display_name avatar_url"},
	"userapi_devices":             {"carried: devices and access tokens (stored hashed), last seen", "access_token session_id device_id localpart server_name created_ts display_name last_seen_ts ip user_agent"},
	"userapi_account_datas":       {"carried: account data (m.push_rules turned into Hearth's stored changes)", "localpart server_name room_id type content"},
	"userapi_pushers":             {"carried: pushers", "id localpart server_name session_id profile_tag kind app_id app_display_name device_display_name pushkey pushkey_ts_ms lang data"},
	"userapi_registration_tokens": {"carried: registration tokens", "token pending completed uses_allowed expiry_time"},
	"userapi_threepids":           {"carried: third-party identifiers (validated and added at the import's time: Dendrite keeps no times)", "threepid medium localpart server_name"},
	"userapi_openid_tokens":       {"not carried: OpenID tokens live minutes; clients ask again", "token localpart server_name token_expires_at_ms"},
	"userapi_login_tokens":        {"not carried: login tokens live minutes", "token token_expires_at user_id"},
	"userapi_notifications":       {"not carried: the notification list starts empty (unread counts from receipts)", "id localpart server_name room_id event_id stream_pos ts_ms highlight notification_json read"},
	"userapi_daily_visits":        {"not carried: statistics", "localpart device_id timestamp user_agent"},
	"userapi_daily_stats":         {"not carried: statistics", "timestamp server_name messages sent_messages e2ee_messages sent_e2ee_messages active_rooms active_e2ee_rooms"},
	"userapi_key_backup_versions": {"carried: key backup versions", "user_id version algorithm auth_data etag deleted"},
	"userapi_key_backups":         {"carried: key backup sessions", "user_id room_id session_id version first_message_index forwarded_count is_verified session_data"},
	// End-to-end encryption (keyserver tables, in the userapi database).
	"keyserver_device_keys":            {"carried: device keys", "user_id device_id ts_added_secs key_json stream_id display_name"},
	"keyserver_one_time_keys":          {"carried: one-time keys (and fallback keys, which Dendrite keeps here)", "user_id device_id key_id algorithm ts_added_secs key_json"},
	"keyserver_cross_signing_keys":     {"carried: cross-signing keys", "user_id key_type key_data"},
	"keyserver_cross_signing_sigs":     {"carried: key signatures", "origin_user_id origin_key_id target_user_id target_key_id signature"},
	"keyserver_cross_signing_sigs_tmp": {"not carried: a leftover of a Dendrite migration", "origin_user_id origin_key_id target_user_id target_key_id signature"},
	"keyserver_key_changes":            {"carried: device list positions (one entry per user)", "change_id partition offset user_id"},
	"keyserver_stale_device_lists":     {"not carried: remote device lists are fetched again", "user_id domain is_stale ts_added_secs"},
	// Rooms (roomserver).
	"roomserver_rooms":            {"carried: rooms (version, forward extremities, current state)", "room_nid room_id latest_event_nids last_event_sent_nid state_snapshot_nid room_version"},
	"roomserver_events":           {"carried: events (depth, rejected, outlier = no state snapshot)", "event_nid room_nid event_type_nid event_state_key_nid sent_to_output state_snapshot_nid depth event_id reference_sha256 auth_event_nids is_rejected"},
	"roomserver_event_json":       {"carried: the PDUs as stored, signatures intact (unsigned dropped)", "event_nid event_json"},
	"roomserver_event_types":      {"used: names of numeric event types", "event_type_nid event_type"},
	"roomserver_event_state_keys": {"used: names of numeric state keys", "event_state_key_nid event_state_key"},
	"roomserver_state_snapshots":  {"carried: state before each event, as Hearth snapshots", "state_snapshot_nid state_snapshot_hash room_nid state_block_nids"},
	"roomserver_state_block":      {"used: the contents of state snapshots", "state_block_nid state_block_hash event_nids"},
	"roomserver_previous_events":  {"derived: prev_events are in each PDU", "previous_event_id event_nids previous_reference_sha256"},
	"roomserver_membership":       {"carried: forgotten rooms; memberships are the current state", "room_nid target_nid sender_nid membership_nid event_nid target_local forgotten"},
	"roomserver_invites":          {"carried: invites to rooms not joined (stripped state); others are in the DAG", "invite_event_id room_nid target_nid sender_nid retired invite_event_json"},
	"roomserver_room_aliases":     {"carried: room aliases", "alias room_id creator_id"},
	"roomserver_published":        {"carried: public room directory", "room_id appservice_id network_id published"},
	"roomserver_redactions":       {"carried: redactions (validated ones mark their target)", "redaction_event_id redacts_event_id validated"},
	"roomserver_reported_events":  {"not carried: event reports stay in Dendrite's database for the moderators", "id room_nid event_nid reporting_user_nid event_sender_nid reason score received_ts"},
	"roomserver_user_room_keys":   {"not carried: pseudo IDs (MSC4014, not in Hearth)", "user_nid room_nid pseudo_id_key pseudo_id_pub_key"},
	// Sync (syncapi): mostly a projection of the roomserver.
	"syncapi_output_room_events":          {"used: stream positions of timeline events (kept, so sync tokens carry over) and transaction IDs", "id event_id room_id headered_event_json type sender contains_url add_state_ids remove_state_ids session_id transaction_id exclude_from_sync history_visibility"},
	"syncapi_output_room_events_topology": {"derived: Hearth orders by depth", "event_id topological_position stream_position room_id"},
	"syncapi_current_room_state":          {"derived: current state comes from the roomserver", "room_id event_id type sender contains_url state_key headered_event_json membership added_at history_visibility"},
	"syncapi_memberships":                 {"derived: memberships are state", "room_id user_id membership event_id stream_pos topological_pos"},
	"syncapi_invite_events":               {"derived: invites are in the DAG or roomserver_invites", "id event_id room_id target_user_id headered_event_json deleted"},
	"syncapi_account_data_type":           {"used: account data stream positions (kept)", "id user_id room_id type"},
	"syncapi_filter":                      {"carried: filters, with their IDs", "filter id localpart"},
	"syncapi_ignores":                     {"derived: ignored users are m.ignored_user_list account data", "user_id ignores_json"},
	"syncapi_receipts":                    {"carried: read receipts, with their stream positions", "id room_id receipt_type user_id event_id receipt_ts"},
	"syncapi_send_to_device":              {"carried: undelivered to-device messages", "id user_id device_id content"},
	"syncapi_backward_extremities":        {"derived: Hearth backfills from prev_events it lacks", "room_id event_id prev_event_id"},
	"syncapi_peeks":                       {"not carried: peeks end at a restart", "id room_id user_id device_id deleted creation_ts"},
	"syncapi_presence":                    {"not carried: presence starts offline", "id user_id presence status_msg last_active_ts"},
	"syncapi_notification_data":           {"not carried: unread counts are recomputed from receipts", "id user_id room_id notification_count highlight_count"},
	"syncapi_relations":                   {"derived: relations come from each event's content", "id room_id event_id child_event_id child_event_type rel_type"},
	"syncapi_stream_id":                   {"derived: Hearth's positions continue from the carried rows", "stream_name stream_id"},
	// Media.
	"mediaapi_media_repository": {"carried: media (local and cached remote) with their files, byte for byte", "media_id media_origin content_type file_size_bytes creation_ts upload_name base64hash user_id"},
	"mediaapi_thumbnail":        {"carried: thumbnails with their files", "media_id media_origin content_type file_size_bytes creation_ts width height resize_method"},
	// Federation.
	"federationsender_queue_pdus":                  {"not carried: queued outbound events; reported in notes (servers fetch missed events)", "transaction_id server_name json_nid"},
	"federationsender_queue_edus":                  {"not carried: queued outbound EDUs; reported in notes", "edu_type server_name json_nid expires_at"},
	"federationsender_queue_json":                  {"not carried: bodies of the queues above", "json_nid json_body"},
	"federationsender_queue_edus_old":              {"not carried: a leftover of a Dendrite schema migration", "edu_type server_name json_nid expires_at"},
	"federationsender_joined_hosts":                {"derived: joined servers are state", "room_id event_id server_name"},
	"federationsender_blacklist":                   {"reset: destination backoff starts clean", "server_name"},
	"federationsender_assumed_offline":             {"reset: destination backoff starts clean", "server_name"},
	"federationsender_relay_servers":               {"not carried: Hearth has no relays (MSC3940)", "server_name relay_server_name"},
	"federationsender_inbound_peeks":               {"not carried: peeks", "room_id server_name peek_id creation_ts renewed_ts renewal_interval"},
	"federationsender_outbound_peeks":              {"not carried: peeks", "room_id server_name peek_id creation_ts renewed_ts renewal_interval"},
	"federationsender_notary_server_keys_json":     {"not carried: other servers' keys are fetched again", "notary_id response_json server_name valid_until"},
	"federationsender_notary_server_keys_metadata": {"not carried: other servers' keys are fetched again", "notary_id server_name key_id"},
	"keydb_server_keys":                            {"not carried: other servers' keys are fetched again", "server_name server_key_id server_name_and_key_id valid_until_ts expired_ts server_key"},
	"relayapi_queue":                               {"not carried: relay queue (MSC3940)", "transaction_id server_name json_nid"},
	"relayapi_queue_json":                          {"not carried: relay queue (MSC3940)", "json_nid json_body"},
}
