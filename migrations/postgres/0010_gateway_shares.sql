-- What each server's gateway shares with the others for draining (src/server/rate_share.rs,
-- src/gateway/drain.rs): one row per server, rewritten every second, as JSON
-- {"in_flight": {instance id: requests}, "withdrawn": [instance ids]}.
CREATE TABLE gateway_shares (
    server TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    data TEXT NOT NULL
);
