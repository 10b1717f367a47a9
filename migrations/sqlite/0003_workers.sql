-- Workers, model instances, and server-wide settings (the secret behind server → worker tokens).

CREATE TABLE workers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    data TEXT NOT NULL,
    cluster_id BIGINT NOT NULL REFERENCES clusters(id),
    token_digest TEXT NOT NULL
);

CREATE TABLE model_instances (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    data TEXT NOT NULL,
    model_id BIGINT,
    worker_id BIGINT,
    state TEXT NOT NULL
);
CREATE INDEX model_instances_model ON model_instances (model_id);
CREATE INDEX model_instances_worker ON model_instances (worker_id);

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
