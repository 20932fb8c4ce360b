-- Company SSO (upstream OpenID Connect). sso_links ties an upstream
-- identity, its issuer and subject (OpenID Connect Core: the only stable
-- identifier), to the Matrix account it signs in to. sso_requests are the
-- sign-ins on their way through a provider: keyed by the hash of the
-- state, with the nonce and PKCE verifier that the callback checks, and
-- the UIA session it re-authenticates for (m.login.sso stage), if any.
CREATE TABLE sso_links (
    issuer     TEXT NOT NULL,
    subject    TEXT NOT NULL,
    idp_id     TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (issuer, subject)
);
CREATE INDEX sso_links_user ON sso_links (user_id);

CREATE TABLE sso_requests (
    state_hash TEXT PRIMARY KEY,
    idp_id     TEXT NOT NULL,
    nonce      TEXT NOT NULL,
    verifier   TEXT NOT NULL,
    next_path  TEXT NOT NULL,
    uia_session TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
CREATE INDEX sso_requests_expiry ON sso_requests (expires_ts);
