-- Full-text search over the searchable keys of room events (client-server
-- API, Server Side Search): content.body of m.room.message, content.name
-- of m.room.name, content.topic of m.room.topic. One row per timeline
-- event that has such a string, keyed by its stream position (rowid);
-- contentless (the text stays in events.json), rows deleted on redaction.
-- storage/search.go keeps it current; this backfills existing events.
CREATE VIRTUAL TABLE event_search USING fts5(value, content = '', contentless_delete = 1, tokenize = 'unicode61');

INSERT INTO event_search (rowid, value)
SELECT stream_pos, json_extract(json, path) FROM (
    SELECT stream_pos, json, CASE type
        WHEN 'm.room.message' THEN '$.content.body'
        WHEN 'm.room.name' THEN '$.content.name'
        ELSE '$.content.topic' END AS path
    FROM events
    WHERE type IN ('m.room.message', 'm.room.name', 'm.room.topic')
        AND NOT outlier AND NOT rejected AND NOT soft_failed AND redacted_by IS NULL
) WHERE json_type(json, path) = 'text';
