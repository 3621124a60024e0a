//! `cargo run -p order-service`: see the crate docs (`src/lib.rs`) and
//! `README.md` for the settings and a walkthrough.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "info,heytom_mq=warn".into()))
        .init();
    let settings = order_service::Settings::from_env()?;
    let service = order_service::start(settings).await?;
    // The integration test reads this line to find the port.
    println!("order-service listening on http://{}", service.addr());
    wait_for_signal().await;
    tracing::info!("shutting down");
    service.shutdown().await
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
