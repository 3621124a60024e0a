//! The service's handlers and store on SQLite, with `heytom_mq::testing::TestApp`
//! running the service's own wiring (`order_service::configure`) on the
//! in-memory broker: no broker, no configuration.
//!
//! These use tokio's real clock: sqlx's SQLite driver works on a thread of
//! its own, which a paused clock would not wait for.

use std::time::Duration;

use heytom_mq::testing::TestApp;
use heytom_mq::App;
use order_service::events::{OrderCancelled, OrderCreated, OrderInvoiced, PaymentReminder};
use order_service::store::{Cancelled, Db};

const WAIT: Duration = Duration::from_secs(30);
/// A payment reminder due after the test.
const LATER: Duration = Duration::from_secs(3600);

/// A service database in a fresh SQLite file, and the service's handlers on it.
async fn service() -> (Db, TestApp) {
    let file = std::env::temp_dir().join(format!(
        "order-service-test-{}.db",
        uuid::Uuid::now_v7().simple()
    ));
    let db = Db::connect(&format!("sqlite:{}", file.display()))
        .await
        .expect("SQLite opens");
    db.create_schema().await.expect("tables created");
    let app = TestApp::from_builder(order_service::configure(App::builder(), &db))
        .start()
        .await
        .expect("the service's handlers start");
    (db, app)
}

#[tokio::test]
async fn an_order_is_invoiced_by_billing_and_counted_by_analytics() {
    let (db, app) = service().await;
    let order = db
        .create_order(&app.producer(), "ada".into(), 1999, LATER)
        .await
        .expect("order placed");
    // Written with the order, sent by the outbox through the app's producer.
    let created = app
        .wait_published::<OrderCreated>(1, WAIT)
        .await
        .expect("OrderCreated sent");
    assert_eq!(created[0].order_id, order.id);

    let handled = app
        .wait_handled::<OrderCreated>(1, WAIT)
        .await
        .expect("billing done");
    assert!(handled[0].succeeded(), "{handled:?}");
    let invoiced = app.published::<OrderInvoiced>();
    assert_eq!(invoiced.len(), 1);
    assert_eq!(invoiced[0].order_id, order.id);
    assert_eq!(invoiced[0].amount_cents, 1999);

    app.wait_handled::<OrderInvoiced>(1, WAIT)
        .await
        .expect("analytics done");
    let view = db.order(&order.id).await.expect("read").expect("found");
    assert_eq!(view.status, "invoiced");
    let invoice = view.invoice.expect("an invoice");
    assert_eq!(invoice.id, invoiced[0].invoice_id);
    assert_eq!(invoice.status, "open");
    let stats = db
        .customer_stats("ada")
        .await
        .expect("read")
        .expect("counted");
    assert_eq!((stats.orders_invoiced, stats.revenue_cents), (1, 1999));
    assert!(app.dead_letters().is_empty(), "{:?}", app.dead_letters());
    app.shutdown().await.expect("shuts down");
}

#[tokio::test]
async fn a_cancelled_order_voids_its_invoice_and_is_not_reminded() {
    let (db, app) = service().await;
    let producer = app.producer();
    let order = db
        .create_order(&producer, "grace".into(), 500, LATER)
        .await
        .expect("order placed");
    app.wait_handled::<OrderCreated>(1, WAIT)
        .await
        .expect("billing done");
    match db.cancel_order(&producer, &order.id).await.expect("cancel") {
        Cancelled::Now(view) => assert_eq!(view.status, "cancelled"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        db.cancel_order(&producer, &order.id).await.expect("cancel"),
        Cancelled::Already
    ));
    assert!(matches!(
        db.cancel_order(&producer, "no-such-order")
            .await
            .expect("cancel"),
        Cancelled::NotFound
    ));
    app.wait_handled::<OrderCancelled>(1, WAIT)
        .await
        .expect("voided");
    app.publish(&PaymentReminder {
        order_id: order.id.clone(),
    })
    .await
    .expect("published");
    app.wait_handled::<PaymentReminder>(1, WAIT)
        .await
        .expect("reminder handled");
    let view = db.order(&order.id).await.expect("read").expect("found");
    assert_eq!(view.status, "cancelled");
    assert_eq!(view.invoice.expect("invoiced before").status, "void");
    assert_eq!(view.reminders_sent, 0, "no reminder for a cancelled order");
    // Only one OrderCancelled: the refused cancels published nothing.
    assert_eq!(app.published::<OrderCancelled>().len(), 1);
}

#[tokio::test]
async fn events_for_unknown_orders_change_nothing_and_are_acknowledged() {
    let (db, app) = service().await;
    app.publish(&OrderCreated {
        order_id: "from-another-service".into(),
        customer: "eve".into(),
        amount_cents: 100,
    })
    .await
    .expect("published");
    app.publish(&PaymentReminder {
        order_id: "from-another-service".into(),
    })
    .await
    .expect("published");
    assert!(app
        .wait_handled::<OrderCreated>(1, WAIT)
        .await
        .expect("handled")[0]
        .succeeded());
    assert!(app
        .wait_handled::<PaymentReminder>(1, WAIT)
        .await
        .expect("handled")[0]
        .succeeded());
    assert!(app.published::<OrderInvoiced>().is_empty());
    assert!(db
        .order("from-another-service")
        .await
        .expect("read")
        .is_none());
    assert!(db.customer_stats("eve").await.expect("read").is_none());
}

#[tokio::test]
async fn the_payment_reminder_is_sent_when_due_not_with_the_order() {
    let (db, app) = service().await;
    let order = db
        .create_order(
            &app.producer(),
            "linus".into(),
            42,
            Duration::from_millis(500),
        )
        .await
        .expect("order placed");
    // Committed with the order, but not sent with OrderCreated.
    app.wait_published::<OrderCreated>(1, WAIT)
        .await
        .expect("OrderCreated sent");
    assert!(app.published::<PaymentReminder>().is_empty());
    let reminders = app
        .wait_published::<PaymentReminder>(1, WAIT)
        .await
        .expect("sent when due");
    assert_eq!(reminders[0].order_id, order.id);
    app.wait_handled::<PaymentReminder>(1, WAIT)
        .await
        .expect("reminded");
    let view = db.order(&order.id).await.expect("read").expect("found");
    assert_eq!(view.reminders_sent, 1);
}

#[tokio::test]
async fn a_redelivered_message_takes_effect_once() {
    let (db, app) = service().await;
    let order = db
        .create_order(&app.producer(), "ken".into(), 700, LATER)
        .await
        .expect("order placed");
    app.wait_handled::<OrderInvoiced>(1, WAIT)
        .await
        .expect("invoiced and counted");
    // The broker delivers the same OrderInvoiced again (same event id), as
    // after a crash between commit and ack: the inbox skips it.
    let invoiced = app.published_envelopes();
    let again = invoiced
        .iter()
        .find(|e| e.name == <OrderInvoiced as heytom_mq::Event>::NAME)
        .expect("OrderInvoiced published")
        .clone();
    app.publish_raw(&again.name, again.wire_headers(), again.payload.clone());
    let handled = app
        .wait_handled::<OrderInvoiced>(2, WAIT)
        .await
        .expect("the duplicate acknowledged");
    assert!(handled.iter().all(|h| h.succeeded()), "{handled:?}");
    assert_eq!(handled[0].event_id, handled[1].event_id);
    let stats = db
        .customer_stats("ken")
        .await
        .expect("read")
        .expect("counted");
    assert_eq!(
        (stats.orders_invoiced, stats.revenue_cents),
        (1, 700),
        "counted once"
    );
    let view = db.order(&order.id).await.expect("read").expect("found");
    assert_eq!(view.status, "invoiced");
}
