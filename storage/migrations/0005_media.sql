-- Content repository (client-server API, Content repository). File bytes
-- live on disk under <data_dir>/media, named by their SHA-256; these tables
-- say which media IDs and thumbnails point at which file, so one file can
-- serve many uploads and is removed only when nothing points at it.
CREATE TABLE media (
    server_name  TEXT NOT NULL,               -- origin in mxc://server_name/media_id
    media_id     TEXT NOT NULL,
    uploader     TEXT,                        -- local user; NULL for cached remote media
    content_type TEXT,                        -- NULL until uploaded
    filename     TEXT,
    size         BIGINT,                      -- NULL until uploaded
    sha256       TEXT,                        -- hex; NULL until uploaded
    created_ts   BIGINT NOT NULL,             -- POST /create or /upload time
    uploaded_ts  BIGINT,                      -- NULL: created, not yet uploaded
    expires_ts   BIGINT,                      -- unused /create IDs expire then
    quarantined  BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (server_name, media_id)
);
CREATE INDEX media_uploader ON media (uploader);
CREATE INDEX media_sha256 ON media (sha256);

-- Thumbnails, made once per (media, size, method, animated) and cached.
CREATE TABLE media_thumbnails (
    server_name  TEXT NOT NULL,
    media_id     TEXT NOT NULL,
    width        INTEGER NOT NULL,            -- the configured size asked for
    height       INTEGER NOT NULL,
    method       TEXT NOT NULL,               -- crop | scale
    animated     BOOLEAN NOT NULL,
    content_type TEXT NOT NULL,
    size         BIGINT NOT NULL,
    sha256       TEXT NOT NULL,
    created_ts   BIGINT NOT NULL,
    PRIMARY KEY (server_name, media_id, width, height, method, animated)
);
CREATE INDEX media_thumbnails_sha256 ON media_thumbnails (sha256);

-- URL previews, cached per URL.
CREATE TABLE media_url_previews (
    url        TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    og         TEXT NOT NULL,                 -- the JSON answer
    PRIMARY KEY (url, fetched_ts)
);

-- Settings the media repository records once, such as the legacy-media freeze time.
CREATE TABLE media_settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
