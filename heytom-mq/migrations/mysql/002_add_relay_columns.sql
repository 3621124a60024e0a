-- Columns the heytom-mq relay adds (MySQL / MariaDB): envelope headers,
-- partition key, next attempt time in Unix milliseconds (also the dispatch
-- lease) and the instance holding the lease.
ALTER TABLE `LocalMessages`
    ADD COLUMN `Headers` TEXT NULL,
    ADD COLUMN `PartitionKey` VARCHAR(255) NULL,
    ADD COLUMN `NextAttemptAt` BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN `LockedBy` VARCHAR(64) NULL,
    ADD INDEX `IX_LocalMessages_Due` (`Status`, `CreatedAt`);
