-- The inbox table of heytom-mq (SQLite): one row per message a handler
-- processed, so a redelivery of it is skipped. Safe to run again.
CREATE TABLE IF NOT EXISTS [ReceivedMessages] (
    [MessageId] TEXT NOT NULL,
    [HandlerName] TEXT NOT NULL,
    [ReceivedAt] TEXT NOT NULL,
    PRIMARY KEY ([MessageId], [HandlerName])
);
CREATE INDEX IF NOT EXISTS [IX_ReceivedMessages_ReceivedAt] ON [ReceivedMessages] ([ReceivedAt]);
