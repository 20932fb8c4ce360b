-- Full-text search over the searchable keys of room events (client-server
-- API, Server Side Search): content.body of m.room.message, content.name
-- of m.room.name, content.topic of m.room.topic. One row per timeline
-- event that has such a string, keyed by its stream position, rows deleted
-- on redaction. storage/search.go keeps it current (splitting the text into
-- words as the query does); this backfills existing events, with ASCII
-- punctuation as the word separator.
CREATE TABLE event_search (
    stream_pos BIGINT PRIMARY KEY,
    vector     tsvector NOT NULL
);

INSERT INTO event_search (stream_pos, vector)
SELECT stream_pos, to_tsvector('simple', regexp_replace(lower(v), '[[:punct:][:space:]]+', ' ', 'g')) FROM (
    SELECT stream_pos, (json::jsonb)->'content'->>(CASE type
        WHEN 'm.room.message' THEN 'body'
        WHEN 'm.room.name' THEN 'name'
        ELSE 'topic' END) AS v,
        jsonb_typeof((json::jsonb)->'content'->(CASE type
        WHEN 'm.room.message' THEN 'body'
        WHEN 'm.room.name' THEN 'name'
        ELSE 'topic' END)) AS t
    FROM events
    WHERE type IN ('m.room.message', 'm.room.name', 'm.room.topic')
        AND NOT outlier AND NOT rejected AND NOT soft_failed AND redacted_by IS NULL
) x WHERE t = 'string';

CREATE INDEX event_search_vector ON event_search USING GIN (vector);
