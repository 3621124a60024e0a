#![deny(warnings)]
use heytom_mq::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Event, Serialize, Deserialize)]
pub struct OrderCreated {
    pub order_id: String,
    pub amount: f64,
}

#[derive(Clone)]
pub struct Db(pub u8);

pub mod handlers {
    use super::*;

    /// Documented, public, with destructuring patterns and `mut`.
    #[handler]
    pub async fn on_order(
        OrderCreated { order_id, amount }: OrderCreated,
        mut ctx: Context,
        State(Db(n)): State<Db>,
    ) -> Result<(), HandlerError> {
        ctx = ctx.clone();
        let _ = (order_id, amount, n, ctx);
        Ok(())
    }

    #[handler]
    pub(crate) async fn r#match(_: OrderCreated) {}

    /// Same function name as in the parent module: shims live per module.
    #[handler(name = "handlers::same_name")]
    async fn same_name(_event: OrderCreated) {}
}

#[handler]
async fn same_name(_event: OrderCreated) {}

fn main() {
    let names: Vec<&str> = heytom_mq::registered_handlers().map(|h| h.name).collect();
    for n in ["on_order", "match", "handlers::same_name", "same_name"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    // The function stays callable as written.
    let _future = handlers::on_order;
}
