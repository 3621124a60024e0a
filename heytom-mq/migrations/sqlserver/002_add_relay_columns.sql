-- Columns the heytom-mq relay uses (SQL Server), for parity with the other
-- databases: envelope headers, partition key, next attempt time in Unix
-- milliseconds (also the dispatch lease) and the instance holding the lease.
IF COL_LENGTH(N'dbo.LocalMessages', N'Headers') IS NULL
    ALTER TABLE [dbo].[LocalMessages] ADD
        [Headers] NVARCHAR(MAX) NULL,
        [PartitionKey] NVARCHAR(255) NULL,
        [NextAttemptAt] BIGINT NOT NULL DEFAULT 0,
        [LockedBy] NVARCHAR(64) NULL;
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'IX_LocalMessages_Due')
    CREATE INDEX [IX_LocalMessages_Due] ON [dbo].[LocalMessages] ([Status], [CreatedAt]);
