//! PostgreSQL: unquoted identifiers (folded to lower case, as the outbox's),
//! `$n` placeholders, a `UUID` message id.

use super::dialect::InboxDialect;
use crate::outbox::repository::DbKind;

pub(crate) const DIALECT: InboxDialect = InboxDialect {
    kind: DbKind::Postgres,
    dir: "postgres",
    create_sql: include_str!("../../migrations/postgres/inbox_001_create_received_messages.sql"),
    insert_sql: "INSERT INTO ReceivedMessages (MessageId, HandlerName, ReceivedAt) \
                 VALUES ($1::uuid, $2, $3)",
    processed_sql: "SELECT COUNT(*) FROM ReceivedMessages \
                    WHERE MessageId = $1::uuid AND HandlerName = $2",
    delete_sql: "DELETE FROM ReceivedMessages WHERE ctid IN \
                 (SELECT ctid FROM ReceivedMessages WHERE ReceivedAt < $1 LIMIT $2)",
    probe_sql: "SELECT MessageId, HandlerName, ReceivedAt FROM ReceivedMessages WHERE 1 = 0",
};
