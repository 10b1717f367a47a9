-- PostgreSQL numbers changes after commit (0007 there); SQLite commits one writer at a time, so its
-- autoincrement is already in commit order and nothing changes here.
SELECT 1;
