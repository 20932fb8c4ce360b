-- What /search filters on, next to the full-text index so that a search
-- does not visit events (issue 19): room, type and sender of each indexed
-- event, keyed like event_search by stream position. And every word ever
-- indexed, so that a search word's prefix expands to the words it begins
-- (an OR of terms, which FTS5 reads lazily newest first) rather than to
-- an FTS5 prefix query, which reads every posting of those words before
-- the first result. storage/search.go keeps both current.
CREATE TABLE event_search_docs (
    stream_pos INTEGER PRIMARY KEY,
    room_id    TEXT NOT NULL,
    type       TEXT NOT NULL,
    sender     TEXT NOT NULL
);

INSERT INTO event_search_docs (stream_pos, room_id, type, sender)
SELECT stream_pos, room_id, type, sender FROM (
    SELECT stream_pos, room_id, type, sender, json, CASE type
        WHEN 'm.room.message' THEN '$.content.body'
        WHEN 'm.room.name' THEN '$.content.name'
        ELSE '$.content.topic' END AS path
    FROM events
    WHERE type IN ('m.room.message', 'm.room.name', 'm.room.topic')
        AND NOT outlier AND NOT rejected AND NOT soft_failed AND redacted_by IS NULL
) WHERE json_type(json, path) = 'text';

CREATE TABLE event_search_words (
    word TEXT PRIMARY KEY
) WITHOUT ROWID;

CREATE VIRTUAL TABLE temp.event_search_vocab USING fts5vocab(main, event_search, row);
INSERT INTO event_search_words (word) SELECT term FROM temp.event_search_vocab;
DROP TABLE temp.event_search_vocab;
