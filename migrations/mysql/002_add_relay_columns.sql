-- Columns the heytom-mq relay adds (MySQL / MariaDB): envelope headers,
-- partition key, next attempt time in Unix milliseconds (also the dispatch
-- lease) and the instance holding the lease. One statement per column, so
-- that the app adds only those a table lacks (MySQL has no
-- ADD COLUMN IF NOT EXISTS).
ALTER TABLE `LocalMessages` ADD COLUMN `Headers` TEXT NULL;
ALTER TABLE `LocalMessages` ADD COLUMN `PartitionKey` VARCHAR(255) NULL;
ALTER TABLE `LocalMessages` ADD COLUMN `NextAttemptAt` BIGINT NOT NULL DEFAULT 0;
ALTER TABLE `LocalMessages` ADD COLUMN `LockedBy` VARCHAR(64) NULL;
CREATE INDEX `IX_LocalMessages_Due` ON `LocalMessages` (`Status`, `CreatedAt`);
