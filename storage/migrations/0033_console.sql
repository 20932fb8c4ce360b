-- The admin console (console/): its sign-in sessions, the daily counts its
-- dashboard plots, and what an admin did with each report.

-- A session is found by the SHA-256 of its cookie, never the cookie itself.
CREATE TABLE console_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);

-- One row per UTC day (day = ms since epoch / 86400000), rewritten as the
-- server runs; first_pos is the first event stream position of the day,
-- so that the day's messages are an index range count.
CREATE TABLE console_daily_stats (
    day          BIGINT PRIMARY KEY,
    first_pos    BIGINT NOT NULL,
    users        BIGINT NOT NULL,
    devices      BIGINT NOT NULL,
    active_users BIGINT NOT NULL,
    messages     BIGINT NOT NULL,
    rooms        BIGINT NOT NULL,
    media_bytes  BIGINT NOT NULL,
    fed_up       BIGINT NOT NULL,
    fed_down     BIGINT NOT NULL
);

-- kind is 'event' (content_reports) or 'user' (user_reports); a report
-- with a row here has left the queue.
CREATE TABLE console_report_actions (
    kind      TEXT NOT NULL,
    report_id BIGINT NOT NULL,
    action    TEXT NOT NULL,
    admin     TEXT NOT NULL,
    ts        BIGINT NOT NULL,
    PRIMARY KEY (kind, report_id)
);
