-- Leaves room on each page of the local message table (PostgreSQL) for the
-- relay's updates of a row: the claim's lease (NextAttemptAt, LockedBy, no
-- index on either) can then stay on the row's page as a HOT update, without
-- new index entries, and the Sent mark finds room on the same page. A
-- 100,000-row backlog drained at about 34,000 rows/s with it against 23,000
-- without (bench_outbox). heytom-mq runs it when it creates the table; for a
-- table that exists already, run it once (it applies to pages written from
-- then on; VACUUM FULL or pg_repack rewrites the old ones). Safe to run again.
ALTER TABLE LocalMessages SET (fillfactor = 70);
