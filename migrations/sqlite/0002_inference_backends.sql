-- Inference backends (built-in, community, custom). The standard core columns; `name` is the
-- backend_name and `name_key` its lower-cased form, so names are unique regardless of case.
-- Built-in rows store only the operator's `-custom` versions; catalog versions are merged on read.

CREATE TABLE inference_backends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    data TEXT NOT NULL
);
