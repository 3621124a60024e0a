-- The local message table as in the original DDL (SQLite). Times are
-- RFC 3339 text, ids UUID text.
CREATE TABLE IF NOT EXISTS "LocalMessages" (
    "Id" TEXT NOT NULL PRIMARY KEY,
    "MQType" TEXT NOT NULL,
    "Topic" TEXT NOT NULL,
    "RoutingKey" TEXT NULL,
    "MessageType" TEXT NOT NULL,
    "MessageBody" TEXT NOT NULL,
    "Status" INTEGER NOT NULL DEFAULT 0,
    "CreatedAt" TEXT NOT NULL,
    "UpdatedAt" TEXT NULL,
    "RetryCount" INTEGER NOT NULL DEFAULT 0,
    "ErrorMessage" TEXT NULL
);
CREATE INDEX IF NOT EXISTS "IX_LocalMessages_Status" ON "LocalMessages" ("Status");
CREATE INDEX IF NOT EXISTS "IX_LocalMessages_CreatedAt" ON "LocalMessages" ("CreatedAt");
