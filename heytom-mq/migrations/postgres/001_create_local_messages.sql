-- The local message table as in the original DDL (PostgreSQL). Identifiers
-- are unquoted, as in the original, so PostgreSQL folds them to lower case
-- (table localmessages, columns id, mqtype, ...): plain SQL such as
-- SELECT * FROM LocalMessages WHERE Status = 2 reaches this table.
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
CREATE INDEX IF NOT EXISTS IX_LocalMessages_Status ON LocalMessages (Status);
CREATE INDEX IF NOT EXISTS IX_LocalMessages_CreatedAt ON LocalMessages (CreatedAt);
