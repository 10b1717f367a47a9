-- Gateway: model routes and their targets, and daily token usage.

CREATE TABLE model_routes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    data TEXT NOT NULL,
    created_model_id BIGINT
);

CREATE TABLE model_route_targets (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    version BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    data TEXT NOT NULL,
    route_id BIGINT NOT NULL,
    model_id BIGINT
);

CREATE INDEX model_route_targets_route ON model_route_targets (route_id);

CREATE TABLE model_usages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    date TEXT NOT NULL,
    user_id BIGINT NOT NULL,
    api_key_id BIGINT NOT NULL,
    route_id BIGINT NOT NULL,
    route_name TEXT NOT NULL,
    model_name TEXT NOT NULL,
    operation TEXT NOT NULL,
    request_count BIGINT NOT NULL,
    prompt_token_count BIGINT NOT NULL,
    completion_token_count BIGINT NOT NULL,
    UNIQUE (date, user_id, api_key_id, route_id, model_name, operation)
);

CREATE INDEX model_usages_date ON model_usages (date);
