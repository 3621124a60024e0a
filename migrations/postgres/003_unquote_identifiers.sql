-- Moves a table made by heytom-mq's earlier PostgreSQL DDL, which quoted
-- mixed-case identifiers ("LocalMessages", "Id", ...), to the original
-- Heytom.MQ convention that heytom-mq now uses: unquoted identifiers, which
-- PostgreSQL folds to lower case (localmessages, id, ...). Each new name
-- below is unquoted, so `RENAME TO LocalMessages` yields localmessages.
--
-- Run it once, with the app stopped, after replacing LocalMessages with your
-- table name if you changed it, e.g.
--   psql -v ON_ERROR_STOP=1 -f 003_unquote_identifiers.sql
-- One transaction: either everything is renamed or nothing is.
BEGIN;
ALTER TABLE "LocalMessages" RENAME TO LocalMessages;
ALTER TABLE LocalMessages RENAME COLUMN "Id" TO Id;
ALTER TABLE LocalMessages RENAME COLUMN "MQType" TO MQType;
ALTER TABLE LocalMessages RENAME COLUMN "Topic" TO Topic;
ALTER TABLE LocalMessages RENAME COLUMN "RoutingKey" TO RoutingKey;
ALTER TABLE LocalMessages RENAME COLUMN "MessageType" TO MessageType;
ALTER TABLE LocalMessages RENAME COLUMN "MessageBody" TO MessageBody;
ALTER TABLE LocalMessages RENAME COLUMN "Status" TO Status;
ALTER TABLE LocalMessages RENAME COLUMN "CreatedAt" TO CreatedAt;
ALTER TABLE LocalMessages RENAME COLUMN "UpdatedAt" TO UpdatedAt;
ALTER TABLE LocalMessages RENAME COLUMN "RetryCount" TO RetryCount;
ALTER TABLE LocalMessages RENAME COLUMN "ErrorMessage" TO ErrorMessage;
ALTER TABLE LocalMessages RENAME COLUMN "Headers" TO Headers;
ALTER TABLE LocalMessages RENAME COLUMN "PartitionKey" TO PartitionKey;
ALTER TABLE LocalMessages RENAME COLUMN "NextAttemptAt" TO NextAttemptAt;
ALTER TABLE LocalMessages RENAME COLUMN "LockedBy" TO LockedBy;
ALTER INDEX IF EXISTS "LocalMessages_pkey" RENAME TO LocalMessages_pkey;
ALTER INDEX IF EXISTS "IX_LocalMessages_Status" RENAME TO IX_LocalMessages_Status;
ALTER INDEX IF EXISTS "IX_LocalMessages_CreatedAt" RENAME TO IX_LocalMessages_CreatedAt;
ALTER INDEX IF EXISTS "IX_LocalMessages_Due" RENAME TO IX_LocalMessages_Due;
COMMIT;
