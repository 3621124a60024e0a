//! The operations dashboard (feature `dashboard`): an [`axum::Router`] of
//! server-rendered pages to mount in your own service.
//!
//! - **Overview**: rows of the local message table by status, rows sent per
//!   second over the last ten minutes, the age of the oldest pending row.
//! - **Messages**: pending and failed rows (or any status), filtered by
//!   type, status and creation time, in pages; a message's headers, body,
//!   error and retry count; **requeue** a failed row, **delete** a row.
//! - **Handlers**: every handler with its event and route, every
//!   subscription with its destination and group.
//! - **Dead letters** of the in-memory transport (RabbitMQ and Kafka keep
//!   theirs in the broker: the dead-letter exchange, the dead-letter topic).
//! - `/asyncapi.json`: the app's AsyncAPI document.
//!
//! Every page is plain HTML with inline CSS and no script: it works offline
//! and behind a strict `Content-Security-Policy` (which it sends). Every
//! value from the table is HTML-escaped. Changes are `POST` only and are
//! refused (403) when the browser says the request comes from another
//! origin (`Sec-Fetch-Site`, or an `Origin` that is not the `Host`). With
//! [`Dashboard::bearer_token`] or [`Dashboard::basic_auth`], every request
//! needs the credentials (401 otherwise). Without them, the dashboard logs
//! a warning the first time it is reached from another machine or under a
//! host name that is not loopback, and [`Dashboard::serve`] warns at
//! startup when bound to a non-loopback address.
//!
//! Links follow the prefix the router is mounted under:
//!
//! ```no_run
//! # async fn f(running: heytom_mq::RunningApp) -> std::io::Result<()> {
//! use heytom_mq::dashboard::Dashboard;
//!
//! let dashboard = Dashboard::new(&running).basic_auth("ops", "s3cret").router();
//! let app = axum::Router::new().nest("/dashboard", dashboard);
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{OriginalUri, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
#[cfg(feature = "_outbox")]
use axum::routing::post;
use axum::Router;

use crate::app::{RunningApp, SubscriptionInfo};
use crate::handler::HandlerEntry;
use crate::transport::memory::InMemoryBroker;

#[cfg(feature = "_outbox")]
mod messages;
mod pages;
mod security;

use security::Credentials;

/// The dashboard of a running app; [`router`] is the short form of
/// `Dashboard::new(&running).router()`.
#[derive(Clone)]
pub struct Dashboard {
    #[cfg(feature = "_outbox")]
    outbox: Option<crate::outbox::OutboxAdmin>,
    handlers: Vec<HandlerEntry>,
    subscriptions: Vec<SubscriptionInfo>,
    broker: Option<InMemoryBroker>,
    asyncapi: Option<serde_json::Value>,
    credentials: Vec<Credentials>,
    page_size: u32,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("handlers", &self.handlers.len())
            .field("subscriptions", &self.subscriptions.len())
            .field("authenticated", &!self.credentials.is_empty())
            .finish_non_exhaustive()
    }
}

/// The dashboard's router for a running app, without authentication (see
/// [`Dashboard`] to add it). Mount it anywhere:
///
/// ```no_run
/// # async fn f(running: heytom_mq::RunningApp) {
/// let app = axum::Router::new().nest("/dashboard", heytom_mq::dashboard::router(&running));
/// # }
/// ```
pub fn router(running: &RunningApp) -> Router {
    Dashboard::new(running).router()
}

impl Dashboard {
    /// The dashboard of `running`: its outbox, handlers, subscriptions,
    /// in-memory dead letters and AsyncAPI document.
    pub fn new(running: &RunningApp) -> Self {
        Dashboard {
            #[cfg(feature = "_outbox")]
            outbox: running.outbox_admin(),
            handlers: running.handlers().to_vec(),
            subscriptions: running.subscriptions().to_vec(),
            broker: running.in_memory_broker().cloned(),
            asyncapi: asyncapi_document(running),
            credentials: Vec::new(),
            page_size: 50,
        }
    }

    /// Requires `Authorization: Bearer <token>` on every request (one of
    /// the configured credentials must match).
    pub fn bearer_token(mut self, token: impl Into<String>) -> Self {
        self.credentials.push(Credentials::Bearer(token.into()));
        self
    }

    /// Requires HTTP basic authentication on every request; browsers ask
    /// for the user name and password.
    pub fn basic_auth(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials.push(Credentials::Basic {
            user: user.into(),
            password: password.into(),
        });
        self
    }

    /// Rows per page of the message list (default 50, at most 1000).
    pub fn page_size(mut self, rows: u32) -> Self {
        self.page_size = rows.clamp(1, 1000);
        self
    }

    /// Serves this document at `/asyncapi.json` instead of the one made
    /// from the app's events and handlers.
    pub fn asyncapi_document(mut self, document: serde_json::Value) -> Self {
        self.asyncapi = Some(document);
        self
    }

    /// Whether serving on `addr` exposes the dashboard without credentials
    /// (a non-loopback address and no [`bearer_token`](Self::bearer_token)
    /// or [`basic_auth`](Self::basic_auth)); logs a warning if so.
    pub fn warn_if_exposed(&self, addr: SocketAddr) -> bool {
        let exposed = self.credentials.is_empty() && !addr.ip().is_loopback();
        if exposed {
            tracing::warn!(%addr, "the heytom-mq dashboard is served on a non-loopback address without authentication: anyone who reaches it can requeue and delete messages; set Dashboard::basic_auth or Dashboard::bearer_token");
        }
        exposed
    }

    /// Binds `addr` and serves the dashboard alone at `/` until the server
    /// fails; warns first if that exposes it without credentials.
    ///
    /// ```no_run
    /// # async fn f(running: heytom_mq::RunningApp) -> std::io::Result<()> {
    /// use heytom_mq::dashboard::Dashboard;
    /// let dashboard = Dashboard::new(&running).bearer_token("token");
    /// tokio::spawn(dashboard.serve("127.0.0.1:9090".parse().unwrap()));
    /// # Ok(()) }
    /// ```
    pub async fn serve(self, addr: SocketAddr) -> std::io::Result<()> {
        self.warn_if_exposed(addr);
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "heytom-mq dashboard listening");
        let app = self.router();
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    }

    /// The router: mount it with `nest` under any prefix, or serve it alone.
    pub fn router(self) -> Router {
        let shared = Arc::new(Shared {
            dashboard: self,
            warned: AtomicBool::new(false),
        });
        let router = Router::new()
            .route("/", get(pages::overview))
            .route("/handlers", get(pages::handlers))
            .route("/dead-letters", get(pages::dead_letters))
            .route("/asyncapi.json", get(asyncapi));
        #[cfg(feature = "_outbox")]
        let router = router
            .route("/messages", get(messages::list))
            .route("/messages/{id}", get(messages::detail))
            .route("/messages/{id}/requeue", post(messages::requeue))
            .route("/messages/{id}/delete", post(messages::delete));
        router
            .layer(axum::middleware::from_fn_with_state(shared.clone(), guard))
            .with_state(shared)
    }
}

/// The AsyncAPI document of the app: every registered event and the
/// running app's handlers (`Dashboard::asyncapi_document` replaces it).
fn asyncapi_document(running: &RunningApp) -> Option<serde_json::Value> {
    Some(crate::asyncapi::document_with_handlers(
        crate::asyncapi::AsyncApiInfo::default(),
        running.handlers(),
    ))
}

/// What every handler of the router reads.
pub(crate) struct Shared {
    pub(crate) dashboard: Dashboard,
    /// The not-exposed warning was logged.
    warned: AtomicBool,
}

pub(crate) type AppState = State<Arc<Shared>>;

/// The path prefix the router is mounted under (`""` at the root), for links.
#[derive(Clone, Debug, Default)]
pub(crate) struct Base(pub(crate) String);

impl Base {
    /// `path` (starting with `/`) under the prefix; the overview (`/`) is
    /// the prefix itself, since a nested router does not match the prefix
    /// with a trailing slash.
    pub(crate) fn at(&self, path: &str) -> String {
        if path == "/" && !self.0.is_empty() {
            return self.0.clone();
        }
        format!("{}{path}", self.0)
    }
}

/// Authentication, the cross-origin check of changes, the exposure
/// warning, the mount prefix and the security headers, around every route.
async fn guard(State(shared): AppState, mut req: Request, next: Next) -> Response {
    let d = &shared.dashboard;
    if !d.credentials.is_empty() && !security::authorized(&d.credentials, req.headers()) {
        return security::unauthorized(&d.credentials);
    }
    if d.credentials.is_empty()
        && security::exposed(&req)
        && !shared.warned.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(host = ?req.headers().get(header::HOST), "the heytom-mq dashboard was reached from another machine or under a non-loopback host without authentication: anyone who reaches it can requeue and delete messages; set Dashboard::basic_auth or Dashboard::bearer_token");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if let Err(why) = security::same_origin(req.headers()) {
            return (StatusCode::FORBIDDEN, format!("refused: {why}")).into_response();
        }
    }
    let inner = req.uri().path().to_owned();
    let full = req
        .extensions()
        .get::<OriginalUri>()
        .map_or_else(|| inner.clone(), |o| o.0.path().to_owned());
    let prefix = if inner == "/" {
        full.trim_end_matches('/')
    } else {
        full.strip_suffix(inner.as_str()).unwrap_or("")
    };
    req.extensions_mut().insert(Base(prefix.to_owned()));
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn asyncapi(State(shared): AppState) -> Response {
    match &shared.dashboard.asyncapi {
        Some(doc) => axum::Json(doc.clone()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": "this build of heytom-mq makes no AsyncAPI document; set one with Dashboard::asyncapi_document"
            })),
        )
            .into_response(),
    }
}
