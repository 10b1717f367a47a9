-- Requests whose answer reported no token usage (an engine's native route that does not count, a
-- binary answer, an error) are counted apart: served, but not metered (src/gateway/usage.rs).
ALTER TABLE model_usages ADD COLUMN unmetered_request_count BIGINT NOT NULL DEFAULT 0;
