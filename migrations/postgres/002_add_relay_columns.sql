-- Columns the heytom-mq relay adds (PostgreSQL): envelope headers, partition
-- key, next attempt time in Unix milliseconds (also the dispatch lease) and
-- the instance holding the lease. Unquoted identifiers (folded to lower
-- case), as in the original DDL. Safe to run again.
ALTER TABLE LocalMessages ADD COLUMN IF NOT EXISTS Headers TEXT NULL;
ALTER TABLE LocalMessages ADD COLUMN IF NOT EXISTS PartitionKey VARCHAR(255) NULL;
ALTER TABLE LocalMessages ADD COLUMN IF NOT EXISTS NextAttemptAt BIGINT NOT NULL DEFAULT 0;
ALTER TABLE LocalMessages ADD COLUMN IF NOT EXISTS LockedBy VARCHAR(64) NULL;
CREATE INDEX IF NOT EXISTS IX_LocalMessages_Due ON LocalMessages (Status, CreatedAt);
