//! Unit tests of the statements' text.
use super::insert_sql::INSERT_PARAMS;
use super::*;
use crate::outbox::dialect::ROWS_PER_STATEMENT;
use crate::outbox::LocalMessage;

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
             WHERE Id = ANY(ARRAY(SELECT Id FROM LocalMessages \
             WHERE Status = 0 AND RetryCount < $3 AND NextAttemptAt <= {now} \
             ORDER BY CreatedAt, Id LIMIT $4 FOR UPDATE SKIP LOCKED)) \
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
    // A retention of zero deletes what it would have marked, fenced alike.
    let deleted = my.delete_sent(&ids, "me");
    assert_eq!(
        deleted.sql,
        "DELETE FROM `T` WHERE `Id` IN (?, ?) AND `LockedBy` = ?"
    );
    assert_eq!(deleted.args.len(), 3);
}

#[test]
fn a_claim_after_a_time_reads_from_there() {
    let my = Table::new(&super::super::mysql::DIALECT, "T");
    let after = Utc::now();
    let select = my.claim_select(MessageStatus::Pending, 5, 100, Some(after));
    let head = format!("SELECT {} FROM `T` WHERE `Status` = 0 AND ", my.select_list);
    assert!(
        select.sql.starts_with(&head)
            && select.sql.contains("`NextAttemptAt` <= ")
            && select
                .sql
                .ends_with(" AND `CreatedAt` >= ? ORDER BY `CreatedAt`, `Id` LIMIT ?"),
        "{}",
        select.sql
    );
    assert!(
        matches!(select.args.as_slice(), [Arg::Int(5), Arg::Time(t), Arg::BigInt(100)] if *t == after)
    );
    let plain = my.claim_select(MessageStatus::Pending, 5, 100, None);
    assert!(!plain.sql.contains(">= ?") && plain.args.len() == 2);
}

#[test]
fn a_claim_by_ids_locks_nothing_and_leases_only_rows_still_due() {
    let my = Table::new(&super::super::mysql::DIALECT, "T");
    // The select takes no locks: a claim holds none while the rows are sent.
    let select = my.claim_select(MessageStatus::Failed, 5, 100, None);
    assert!(!select.sql.contains("FOR UPDATE"), "{}", select.sql);
    let ids = [Uuid::nil(), Uuid::max()];
    let lease = my.lease_due(&ids, MessageStatus::Failed, 5, 10_000, "tok");
    let now = super::super::mysql::DIALECT.now_ms;
    assert_eq!(
        lease.sql,
        format!(
            "UPDATE `T` SET `NextAttemptAt` = {now} + ?, `LockedBy` = ? \
             WHERE `Id` IN (?, ?) AND `Status` = 2 AND `RetryCount` < ? AND `NextAttemptAt` <= {now}"
        )
    );
    assert!(matches!(
        lease.args.as_slice(),
        [Arg::BigInt(10_000), Arg::Text(t), Arg::Text(_), Arg::Text(_), Arg::Int(5)] if t == "tok"
    ));
}

#[test]
fn id_lists_are_padded_to_a_few_lengths() {
    assert_eq!(
        (1..=9).map(padded_len).collect::<Vec<_>>(),
        [1, 2, 4, 4, 8, 8, 8, 8, 16]
    );
    assert_eq!(padded_len(513), ROWS_PER_STATEMENT);
    assert_eq!(padded_len(ROWS_PER_STATEMENT), ROWS_PER_STATEMENT);
    assert_eq!(padded_len(5000), 5000);
    // Three ids are written as four, the last one twice.
    let sqlite = Table::new(&super::super::sqlite::DIALECT, "T");
    let ids = [Uuid::nil(), Uuid::max(), Uuid::now_v7()];
    let sent = sqlite.mark_sent(&ids, "me", Utc::now());
    assert!(
        sent.sql
            .ends_with("WHERE [Id] IN (?, ?, ?, ?) AND [LockedBy] = ?"),
        "{}",
        sent.sql
    );
    let bound: Vec<String> = sent.args[1..5]
        .iter()
        .map(|a| match a {
            Arg::Text(t) => t.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let last = ids[2].to_string();
    assert_eq!(
        bound,
        [ids[0].to_string(), ids[1].to_string(), last.clone(), last]
    );
}

#[test]
fn the_one_row_insert_is_the_general_insert_of_one_row() {
    for d in [
        &super::super::postgres::DIALECT,
        &super::super::mysql::DIALECT,
        &super::super::sqlite::DIALECT,
    ] {
        let t = Table::new(d, "T");
        let row = LocalMessage::pending("E", "{}");
        for leased in [false, true] {
            let one = t.insert(std::slice::from_ref(&row), leased.then_some(5));
            assert_eq!(one.sql, t.insert_sql(1, leased));
            assert_eq!(one.args.len(), INSERT_PARAMS);
            // A transaction binds the same values straight from the row.
            let borrowed = t.insert_rows(std::slice::from_ref(&row), leased.then_some(5));
            assert_eq!(&*borrowed.sql, one.sql);
            let from_row: Vec<String> = insert_args(&row, leased.then_some(5))
                .into_iter()
                .map(|a| format!("{:?}", a.to_owned_arg()))
                .collect();
            let owned: Vec<String> = one.args.iter().map(|a| format!("{a:?}")).collect();
            assert_eq!(from_row, owned);
            assert_eq!(
                format!("{:?}", one.args[0]),
                format!("{:?}", Arg::Text(row.id.hyphenated().to_string())),
                "the id is bound as its hyphenated text"
            );
            let two = t.insert(&[row.clone(), row.clone()], leased.then_some(5));
            assert_eq!(two.args.len(), 2 * INSERT_PARAMS);
            assert_eq!(
                two.sql.matches(d.now_ms).count(),
                if leased { 2 } else { 0 }
            );
        }
        let one = t.insert(std::slice::from_ref(&row), Some(5)).sql;
        assert!(one.contains(&format!(", {} + ", d.now_ms)), "{one}");
    }
    let pg = Table::new(&super::super::postgres::DIALECT, "T");
    let row = LocalMessage::pending("E", "{}");
    assert!(pg
        .insert(&[row.clone(), row], None)
        .sql
        .ends_with("VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13), ($14::uuid, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)"));
}

#[test]
fn postgres_reads_id_lists_as_one_array() {
    // One argument whatever the length, looked up by primary key: a list
    // of literal ids would be planned as a scan of the whole table.
    let pg = Table::new(&super::super::postgres::DIALECT, "T");
    let ids = [Uuid::nil(), Uuid::max(), Uuid::now_v7()];
    let sent = pg.mark_sent(&ids, "me", Utc::now());
    assert!(
        sent.sql
            .ends_with("WHERE Id = ANY(ARRAY(SELECT unnest($2::uuid[]))) AND LockedBy = $3"),
        "{}",
        sent.sql
    );
    assert!(
        matches!(&sent.args[1], Arg::Text(t) if *t == format!("{{{},{},{}}}", ids[0], ids[1], ids[2])),
        "{:?}",
        sent.args
    );
    assert_eq!(sent.args.len(), 3);
    let many: Vec<Uuid> = (0..700).map(|_| Uuid::now_v7()).collect();
    assert_eq!(pg.mark_sent(&many, "me", Utc::now()).sql, sent.sql);
    let retained = pg.delete_before(MessageStatus::Sent, Utc::now(), 10);
    assert_eq!(
        retained.sql,
        "DELETE FROM T WHERE Id = ANY(ARRAY(SELECT Id FROM T WHERE Status = $1 AND CreatedAt < $2 LIMIT $3))"
    );
}
