-- What /search filters on, next to the full-text index so that a search
-- does not visit events (issue 19): room, type and sender of each indexed
-- event. storage/search.go keeps them current.
ALTER TABLE event_search ADD COLUMN room_id TEXT;
ALTER TABLE event_search ADD COLUMN type TEXT;
ALTER TABLE event_search ADD COLUMN sender TEXT;

UPDATE event_search s SET room_id = e.room_id, type = e.type, sender = e.sender
FROM events e WHERE e.stream_pos = s.stream_pos;

ALTER TABLE event_search ALTER COLUMN room_id SET NOT NULL;
ALTER TABLE event_search ALTER COLUMN type SET NOT NULL;
ALTER TABLE event_search ALTER COLUMN sender SET NOT NULL;
