-- Per-account data: account data (client-server API, Client Config), push
-- rules, filters and extended profile fields.

-- Account data, global (room_id '') and per room. stream_pos is the row's
-- position in the account-data stream: every change deletes the row and
-- inserts it again, so the row takes a fresh, higher position, and "what
-- changed for user U since position N" is one range scan of
-- account_data_user_pos. Positions are assigned and committed in order (see
-- storage/account_data.go), so a reader never skips a change.
-- The m.push_rules row holds the user's changes to the push rules (custom
-- rules and overrides of the server defaults), not the rendered rule set;
-- package pushrules turns it into what clients see.
CREATE TABLE account_data (
    stream_pos SERIAL_PK,
    user_id    TEXT NOT NULL,
    room_id    TEXT NOT NULL,                 -- '' for global account data
    data_type  TEXT NOT NULL,
    content    TEXT NOT NULL,                 -- JSON object
    UNIQUE (user_id, room_id, data_type)
);
CREATE INDEX account_data_user_pos ON account_data (user_id, stream_pos);

-- Filters (client-server API, Filtering) as uploaded; the filter ID is
-- filter_id in decimal.
CREATE TABLE filters (
    filter_id SERIAL_PK,
    user_id   TEXT NOT NULL,
    filter    TEXT NOT NULL                   -- JSON object
);

-- Profile fields other than displayname and avatar_url (which live in
-- profiles): m.tz and custom fields, each value as JSON.
CREATE TABLE profile_fields (
    user_id   TEXT NOT NULL,
    field_key TEXT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (user_id, field_key)
);
