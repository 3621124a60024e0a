-- Columns the heytom-mq relay adds (SQLite): envelope headers, partition
-- key, next attempt time in Unix milliseconds (also the dispatch lease) and
-- the instance holding the lease.
ALTER TABLE "LocalMessages" ADD COLUMN "Headers" TEXT NULL;
ALTER TABLE "LocalMessages" ADD COLUMN "PartitionKey" TEXT NULL;
ALTER TABLE "LocalMessages" ADD COLUMN "NextAttemptAt" INTEGER NOT NULL DEFAULT 0;
ALTER TABLE "LocalMessages" ADD COLUMN "LockedBy" TEXT NULL;
CREATE INDEX IF NOT EXISTS "IX_LocalMessages_Due" ON "LocalMessages" ("Status", "CreatedAt");
