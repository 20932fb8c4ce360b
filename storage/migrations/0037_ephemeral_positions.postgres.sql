-- Typing and presence positions, shared by the processes on one database
-- (storage.DB.NotifyOrdered): Unix milliseconds, or one more than the last
-- one handed out, so they survive restarts and never go back.
CREATE SEQUENCE ephemeral_positions;
