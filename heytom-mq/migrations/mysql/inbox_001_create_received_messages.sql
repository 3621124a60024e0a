-- The inbox table of heytom-mq (MySQL 8 / MariaDB 10.6+): one row per
-- message a handler processed, so a redelivery of it is skipped. Safe to
-- run again.
CREATE TABLE IF NOT EXISTS `ReceivedMessages` (
    `MessageId` CHAR(36) NOT NULL,
    `HandlerName` VARCHAR(200) NOT NULL,
    `ReceivedAt` DATETIME(6) NOT NULL,
    PRIMARY KEY (`MessageId`, `HandlerName`),
    INDEX `IX_ReceivedMessages_ReceivedAt` (`ReceivedAt`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
