-- The workers a change concerns (`,3,7,` for an instance on worker 3 with a part on worker 7, before
-- or after the change), so a worker's watch reads its own instances' changes and no others.
-- Changes written before this column existed have '' and are read by every worker's watch.
ALTER TABLE changes ADD COLUMN workers TEXT NOT NULL DEFAULT '';
