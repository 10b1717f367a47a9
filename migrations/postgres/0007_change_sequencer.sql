-- Change numbers follow commit order without a table lock in every writing transaction: a change
-- is inserted unnumbered (`id` gives the insertion order) and numbered after its commit by a short
-- sequencing step under an advisory lock (src/db/changes.rs).
ALTER TABLE changes ADD COLUMN id BIGSERIAL;
ALTER TABLE changes DROP CONSTRAINT changes_pkey;
ALTER TABLE changes ADD PRIMARY KEY (id);
ALTER TABLE changes ALTER COLUMN seq DROP DEFAULT;
ALTER TABLE changes ALTER COLUMN seq DROP NOT NULL;
DROP SEQUENCE IF EXISTS changes_seq_seq;
CREATE UNIQUE INDEX changes_seq ON changes (seq);
CREATE INDEX changes_unnumbered ON changes (id) WHERE seq IS NULL;
