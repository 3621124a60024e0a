-- The inbox table of heytom-mq (PostgreSQL): one row per message a handler
-- processed, so a redelivery of it is skipped. Unquoted identifiers, as the
-- local message table's (folded to lower case). Safe to run again.
CREATE TABLE IF NOT EXISTS ReceivedMessages (
    MessageId UUID NOT NULL,
    HandlerName VARCHAR(200) NOT NULL,
    ReceivedAt TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (MessageId, HandlerName)
);
CREATE INDEX IF NOT EXISTS IX_ReceivedMessages_ReceivedAt ON ReceivedMessages (ReceivedAt);
