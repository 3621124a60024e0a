-- The local message table as in the original DDL (SQL Server).
-- heytom-mq has no SQL Server relay yet; this DDL keeps the schema in one
-- place for services that share the table with .NET code.
IF OBJECT_ID(N'[dbo].[LocalMessages]', N'U') IS NULL
BEGIN
    CREATE TABLE [dbo].[LocalMessages] (
        [Id] UNIQUEIDENTIFIER NOT NULL PRIMARY KEY,
        [MQType] NVARCHAR(50) NOT NULL,
        [Topic] NVARCHAR(255) NOT NULL,
        [RoutingKey] NVARCHAR(255) NULL,
        [MessageType] NVARCHAR(255) NOT NULL,
        [MessageBody] NVARCHAR(MAX) NOT NULL,
        [Status] INT NOT NULL DEFAULT 0,
        [CreatedAt] DATETIMEOFFSET(6) NOT NULL DEFAULT SYSUTCDATETIME(),
        [UpdatedAt] DATETIMEOFFSET(6) NULL,
        [RetryCount] INT NOT NULL DEFAULT 0,
        [ErrorMessage] NVARCHAR(MAX) NULL
    );
    CREATE INDEX [IX_LocalMessages_Status] ON [dbo].[LocalMessages] ([Status]);
    CREATE INDEX [IX_LocalMessages_CreatedAt] ON [dbo].[LocalMessages] ([CreatedAt]);
END;
