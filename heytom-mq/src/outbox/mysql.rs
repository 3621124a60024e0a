//! MySQL / MariaDB: backquoted identifiers, `?` placeholders, `CHAR(36)`
//! ids, claims with `SELECT ... FOR UPDATE SKIP LOCKED` (MariaDB 10.6+,
//! MySQL 8.0+) then `UPDATE`, in one READ COMMITTED transaction.

use sqlx::{MySql, MySqlPool};
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use super::repository::{sql_backend, ClaimStyle, DbKind, Dialect, Placeholder};

pub(crate) const DIALECT: Dialect = Dialect {
    kind: DbKind::MySql,
    open_quote: '`',
    close_quote: '`',
    placeholder: Placeholder::Question,
    id_param_cast: "",
    id_select_cast: "",
    claim: ClaimStyle::SelectForUpdate,
    // No gap locks: a claim must not block the inserts of business transactions.
    before_claim: Some("SET TRANSACTION ISOLATION LEVEL READ COMMITTED"),
    delete_with_limit: true,
    ddl,
    notify: None,
};

fn ddl(t: &str) -> Vec<String> {
    vec![format!(
        r#"CREATE TABLE IF NOT EXISTS `{t}` (
    `Id` CHAR(36) NOT NULL PRIMARY KEY,
    `MQType` VARCHAR(50) NOT NULL,
    `Topic` VARCHAR(255) NOT NULL,
    `RoutingKey` VARCHAR(255) NULL,
    `MessageType` VARCHAR(255) NOT NULL,
    `MessageBody` LONGTEXT NOT NULL,
    `Status` INT NOT NULL DEFAULT 0,
    `CreatedAt` DATETIME(6) NOT NULL,
    `UpdatedAt` DATETIME(6) NULL,
    `RetryCount` INT NOT NULL DEFAULT 0,
    `ErrorMessage` TEXT NULL,
    `Headers` TEXT NULL,
    `PartitionKey` VARCHAR(255) NULL,
    `NextAttemptAt` BIGINT NOT NULL DEFAULT 0,
    `LockedBy` VARCHAR(64) NULL,
    INDEX `IX_{t}_Status` (`Status`),
    INDEX `IX_{t}_CreatedAt` (`CreatedAt`),
    INDEX `IX_{t}_Due` (`Status`, `CreatedAt`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"#
    )]
}

fn no_listener(
    _: &MySqlPool,
    _: String,
    _: std::sync::Arc<Notify>,
    _: watch::Receiver<bool>,
) -> Option<JoinHandle<()>> {
    None
}

sql_backend!(MySqlBackend, MySql, DIALECT, no_listener);
