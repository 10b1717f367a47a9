-- Leadership: one row per lease. The server holding `control` runs the control loops; `token`
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
