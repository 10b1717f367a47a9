-- Model deployments, and the scheduling epoch that guards instance binding.

CREATE TABLE models (
    id BIGSERIAL PRIMARY KEY,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    data TEXT NOT NULL,
    backend TEXT
);

INSERT INTO settings (key, value) VALUES ('scheduling_epoch', '0');
