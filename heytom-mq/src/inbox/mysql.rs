//! MySQL / MariaDB: backquoted identifiers, `?` placeholders, a `CHAR(36)`
//! message id.

use super::dialect::InboxDialect;
use crate::outbox::repository::DbKind;

pub(crate) const DIALECT: InboxDialect = InboxDialect {
    kind: DbKind::MySql,
    dir: "mysql",
    create_sql: include_str!("../../migrations/mysql/inbox_001_create_received_messages.sql"),
    insert_sql: "INSERT INTO `ReceivedMessages` (`MessageId`, `HandlerName`, `ReceivedAt`) \
                 VALUES (?, ?, ?)",
    processed_sql: "SELECT COUNT(*) FROM `ReceivedMessages` \
                    WHERE `MessageId` = ? AND `HandlerName` = ?",
    delete_sql: "DELETE FROM `ReceivedMessages` WHERE `ReceivedAt` < ? \
                 ORDER BY `ReceivedAt` LIMIT ?",
    probe_sql:
        "SELECT `MessageId`, `HandlerName`, `ReceivedAt` FROM `ReceivedMessages` WHERE 1 = 0",
};
