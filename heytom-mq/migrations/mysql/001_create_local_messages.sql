-- The local message table as in the original DDL (MySQL 8 / MariaDB 10.6+).
CREATE TABLE IF NOT EXISTS `LocalMessages` (
    `Id` CHAR(36) NOT NULL PRIMARY KEY,
    `MQType` VARCHAR(50) NOT NULL,
    `Topic` VARCHAR(255) NOT NULL,
    `RoutingKey` VARCHAR(255) NULL,
    `MessageType` VARCHAR(255) NOT NULL,
    `MessageBody` LONGTEXT NOT NULL,
    `Status` INT NOT NULL DEFAULT 0,
    `CreatedAt` DATETIME(6) NOT NULL,
    `UpdatedAt` DATETIME(6) NULL,
    `RetryCount` INT NOT NULL DEFAULT 0,
    `ErrorMessage` TEXT NULL,
    INDEX `IX_LocalMessages_Status` (`Status`),
    INDEX `IX_LocalMessages_CreatedAt` (`CreatedAt`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
