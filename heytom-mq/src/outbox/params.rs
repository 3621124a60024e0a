//! The placeholders and arguments of one statement, and how a list of ids
//! is written in each dialect.

use std::fmt::Write as _;

use uuid::Uuid;

use super::super::dialect::{Arg, Built, Dialect, Placeholder, ROWS_PER_STATEMENT};

/// Hands out the dialect's placeholders in order (`$1, $2` or `?`) and
/// keeps the arguments that go with them.
pub(in crate::outbox) struct Params {
    d: &'static Dialect,
    args: Vec<Arg>,
}

impl Params {
    pub(in crate::outbox) fn new(d: &'static Dialect) -> Self {
        Params {
            d,
            args: Vec::new(),
        }
    }

    /// The placeholder of one more argument.
    pub(in crate::outbox) fn p(&mut self, a: Arg) -> String {
        self.args.push(a);
        match self.d.placeholder {
            Placeholder::Dollar => format!("${}", self.args.len()),
            Placeholder::Question => "?".to_owned(),
        }
    }

    /// The placeholder of an id, with the dialect's cast (`$1::uuid`).
    pub(in crate::outbox) fn id(&mut self, id: Uuid) -> String {
        let p = self.p(Arg::Text(id.to_string()));
        format!("{p}{}", self.d.id_param_cast)
    }

    /// `<id> IN (p1, p2, ...)`, padded to [`padded_len`] by repeating the
    /// last id (an `IN` list matches each row once however often it names
    /// it): the statement text then takes a dozen shapes, not one per list
    /// length, so the prepared statements that sqlx caches per connection
    /// are reused instead of being prepared for every mark (and crowding the
    /// users' own statements out of that cache).
    ///
    /// Where the dialect has an id array type (PostgreSQL), the ids go as
    /// one array argument instead, read through a sub-select:
    /// `<id> = ANY(ARRAY(SELECT unnest($1::uuid[])))`. The planner cannot
    /// see how long that array is, so it looks every id up in the primary
    /// key. Given a list of 1000 literal ids it reckons that a scan of the
    /// whole table is cheaper (the default `random_page_cost`), and every
    /// mark then reads every row the table retains.
    pub(in crate::outbox) fn id_in(&mut self, id_col: &str, ids: &[Uuid]) -> String {
        if let Some(cast) = self.d.id_array_cast {
            let mut list = String::with_capacity(2 + ids.len() * 37);
            list.push('{');
            for (i, id) in ids.iter().enumerate() {
                if i > 0 {
                    list.push(',');
                }
                let _ = write!(list, "{id}");
            }
            list.push('}');
            let p = self.p(Arg::Text(list));
            return format!("{id_col} = ANY(ARRAY(SELECT unnest({p}{cast})))");
        }
        let Some(last) = ids.last() else {
            return format!("{id_col} IN ()");
        };
        let n = padded_len(ids.len());
        let mut list =
            String::with_capacity(id_col.len() + 6 + n * (8 + self.d.id_param_cast.len()));
        let _ = write!(list, "{id_col} IN (");
        for (i, id) in ids
            .iter()
            .chain(std::iter::repeat_n(last, n - ids.len()))
            .enumerate()
        {
            if i > 0 {
                list.push_str(", ");
            }
            self.args.push(Arg::Text(id.to_string()));
            match self.d.placeholder {
                Placeholder::Dollar => {
                    let _ = write!(list, "${}", self.args.len());
                }
                Placeholder::Question => list.push('?'),
            }
            list.push_str(self.d.id_param_cast);
        }
        list.push(')');
        list
    }

    pub(in crate::outbox) fn build(self, sql: String) -> Built {
        Built {
            sql,
            args: self.args,
        }
    }
}

/// The number of placeholders an `IN` list of `n` ids is written with: the
/// next power of two, at most [`ROWS_PER_STATEMENT`] (callers chunk by it);
/// a longer list (a claim of a larger batch) as it is.
pub(in crate::outbox) fn padded_len(n: usize) -> usize {
    if n > ROWS_PER_STATEMENT {
        n
    } else {
        n.next_power_of_two().min(ROWS_PER_STATEMENT)
    }
}
