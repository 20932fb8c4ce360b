-- A version per user of the set of pushers, moved in the transaction of
-- every pusher insert, update or delete. The push worker caches each
-- user's pusher IDs and checks the cache with one row per recipient,
-- instead of reading every pusher of every recipient for each event
-- (1,000 pushers behind a dead gateway must not slow down /send).
-- A user without a row has never had a pusher.
CREATE TABLE pusher_versions (
    user_id TEXT PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO pusher_versions (user_id, version) SELECT DISTINCT user_id, 1 FROM pushers;

-- push_badges now holds the badge of users with pushers only (the worker
-- adds each batch's notifications to it; a missing row is recounted).
DELETE FROM push_badges WHERE user_id NOT IN (SELECT user_id FROM pushers);
