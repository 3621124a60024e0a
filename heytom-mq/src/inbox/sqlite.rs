//! SQLite: `[bracketed]` identifiers, `?` placeholders, `TEXT` ids and times.

use super::dialect::InboxDialect;
use crate::outbox::repository::DbKind;

pub(crate) const DIALECT: InboxDialect = InboxDialect {
    kind: DbKind::Sqlite,
    dir: "sqlite",
    create_sql: include_str!("../../migrations/sqlite/inbox_001_create_received_messages.sql"),
    insert_sql: "INSERT INTO [ReceivedMessages] ([MessageId], [HandlerName], [ReceivedAt]) \
                 VALUES (?, ?, ?)",
    processed_sql: "SELECT COUNT(*) FROM [ReceivedMessages] \
                    WHERE [MessageId] = ? AND [HandlerName] = ?",
    delete_sql: "DELETE FROM [ReceivedMessages] WHERE rowid IN \
                 (SELECT rowid FROM [ReceivedMessages] WHERE [ReceivedAt] < ? LIMIT ?)",
    probe_sql:
        "SELECT [MessageId], [HandlerName], [ReceivedAt] FROM [ReceivedMessages] WHERE 1 = 0",
};
