-- Several servers on one database (src/db/lease.rs, workers.rs, gateway.rs). Leadership: one row per lease. The server holding `control` runs the control loops; `token`
-- grows by one with every change of holder and guards every write those loops make
-- (src/db/lease.rs). `expires_at` is in milliseconds of the database's own clock.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

-- Heartbeats across servers: each server writes, every two seconds and in one statement, when it
-- last heard each worker that beats to it; the leader's worker monitor reads them
-- (src/db/workers.rs). `seen_at` is in milliseconds of the database's clock.
CREATE TABLE worker_beats (
    worker_id INTEGER PRIMARY KEY,
    seen_at INTEGER NOT NULL
);

-- Rate limits across servers: what each server counted per API key in the last 60 s, shared every
-- second; each server adds the others' fresh counts to its own (src/server/rate_share.rs).
CREATE TABLE rate_usage (
    server TEXT NOT NULL,
    key_id INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (server, key_id)
);
