//! Unit tests of the statements' text.
use super::*;

#[test]
fn statements_read_as_whole_sql() {
    // PostgreSQL: unquoted names, folded to lower case as in the original DDL.
    let pg = Table::new(&super::super::postgres::DIALECT, "LocalMessages");
    let claim = pg.claim_update_returning(
        MessageStatus::Pending,
        10,
        "me",
        5,
        100,
        " FOR UPDATE SKIP LOCKED",
        None,
    );
    let now = super::super::postgres::DIALECT.now_ms;
    assert_eq!(
        claim.sql,
        format!(
            "UPDATE LocalMessages SET NextAttemptAt = {now} + $1, LockedBy = $2 \
             WHERE Id IN (SELECT Id FROM LocalMessages \
             WHERE Status = 0 AND RetryCount < $3 AND NextAttemptAt <= {now} \
             ORDER BY CreatedAt, Id LIMIT $4 FOR UPDATE SKIP LOCKED) \
             RETURNING Id::text, MQType, Topic, RoutingKey, MessageType, MessageBody, Status, \
             CreatedAt::timestamptz, UpdatedAt::timestamptz, RetryCount, ErrorMessage, \
             Headers, PartitionKey, NextAttemptAt, LockedBy"
        )
    );
    assert_eq!(claim.args.len(), 4);
    assert!(!pg.probe().sql.contains('"'));

    let my = Table::new(&super::super::mysql::DIALECT, "T");
    let ids = [Uuid::nil(), Uuid::max()];
    let sent = my.mark_sent(&ids, "me", Utc::now());
    assert_eq!(
        sent.sql,
        "UPDATE `T` SET `Status` = 1, `UpdatedAt` = ?, `LockedBy` = NULL \
         WHERE `Id` IN (?, ?) AND `LockedBy` = ?"
    );
    assert_eq!(sent.args.len(), 4);
}

#[test]
fn a_claim_after_a_time_reads_from_there() {
    let my = Table::new(&super::super::mysql::DIALECT, "T");
    let after = Utc::now();
    let select = my.claim_select(MessageStatus::Pending, 5, 100, Some(after));
    assert!(
        select.sql.contains("`NextAttemptAt` <= ")
            && select
                .sql
                .contains(" AND `CreatedAt` >= ? ORDER BY `CreatedAt`, `Id` LIMIT ?"),
        "{}",
        select.sql
    );
    assert!(
        matches!(select.args.as_slice(), [Arg::Int(5), Arg::Time(t), Arg::BigInt(100)] if *t == after)
    );
    let plain = my.claim_select(MessageStatus::Pending, 5, 100, None);
    assert!(!plain.sql.contains(">= ?") && plain.args.len() == 2);
}
