//! Who may use the dashboard: credentials, the same-origin check of
//! changes, and whether a request came from beyond this machine.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;

/// One accepted set of credentials.
#[derive(Clone)]
pub(crate) enum Credentials {
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// `Authorization: Basic base64(user:password)`.
    Basic { user: String, password: String },
}

/// Compares in time that depends on the lengths only, not on where the
/// first difference is.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request's `Authorization` matches one of `accepted`.
pub(crate) fn authorized(accepted: &[Credentials], headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, rest) = value.trim().split_once(' ').unwrap_or((value, ""));
    let rest = rest.trim();
    let basic = if scheme.eq_ignore_ascii_case("basic") {
        base64::engine::general_purpose::STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    } else {
        None
    };
    accepted.iter().any(|c| match c {
        Credentials::Bearer(token) => {
            scheme.eq_ignore_ascii_case("bearer") && same_bytes(rest.as_bytes(), token.as_bytes())
        }
        Credentials::Basic { user, password } => basic.as_deref().is_some_and(|b| {
            let (u, p) = b.split_once(':').unwrap_or((b, ""));
            // Both compared, whatever the first gives.
            same_bytes(u.as_bytes(), user.as_bytes())
                & same_bytes(p.as_bytes(), password.as_bytes())
        }),
    })
}

/// 401, asking browsers for basic credentials when those are accepted.
pub(crate) fn unauthorized(accepted: &[Credentials]) -> Response {
    let basic = accepted
        .iter()
        .any(|c| matches!(c, Credentials::Basic { .. }));
    let challenge = if basic {
        "Basic realm=\"heytom-mq dashboard\", charset=\"UTF-8\""
    } else {
        "Bearer realm=\"heytom-mq dashboard\""
    };
    let mut res = (StatusCode::UNAUTHORIZED, "authentication required").into_response();
    res.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    res
}

/// Refuses a change the browser says comes from another origin: a
/// `Sec-Fetch-Site` other than `same-origin` (or `none`, typed by the
/// user), or an `Origin` whose host is not the request's `Host` (or
/// `X-Forwarded-Host`, behind a proxy). Requests without either header do
/// not come from a browser page, which is what cross-site request forgery
/// needs.
pub(crate) fn same_origin(headers: &HeaderMap) -> Result<(), &'static str> {
    if let Some(site) = headers.get("sec-fetch-site") {
        match site.to_str().unwrap_or("") {
            "same-origin" | "none" => {}
            _ => return Err("a cross-origin request (Sec-Fetch-Site)"),
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("");
    let Some(origin_host) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return Err("a request from an opaque or unknown origin (Origin)");
    };
    let matches = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
    };
    if matches(header::HOST) || matches(header::HeaderName::from_static("x-forwarded-host")) {
        Ok(())
    } else {
        Err("a cross-origin request (Origin is not the Host)")
    }
}

/// Whether the request came from another machine (connection info, when
/// the server provides it) or names a host that is not loopback.
pub(crate) fn exposed(req: &Request) -> bool {
    if let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        if !peer.ip().is_loopback() {
            return true;
        }
    }
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    !is_loopback_host(host)
}

/// `localhost`, `127.x.y.z` or `[::1]`, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn credentials() {
        let ok = [
            Credentials::Bearer("t0ken".into()),
            Credentials::Basic {
                user: "ops".into(),
                password: "pw:x".into(),
            },
        ];
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let auth = |v: String| headers(&[("authorization", &v)]);
        assert!(authorized(&ok, &auth("Bearer t0ken".into())));
        assert!(authorized(&ok, &auth(format!("Basic {}", b64("ops:pw:x")))));
        assert!(!authorized(&ok, &auth("Bearer t0ke".into())));
        assert!(!authorized(&ok, &auth("Basic t0ken".into())));
        assert!(!authorized(&ok, &auth(format!("Basic {}", b64("ops:pw")))));
        assert!(!authorized(
            &ok,
            &auth(format!("Bearer {}", b64("ops:pw:x")))
        ));
        assert!(!authorized(&ok, &HeaderMap::new()));
    }

    #[test]
    fn origins() {
        let host = ("host", "127.0.0.1:8080");
        assert!(same_origin(&headers(&[host])).is_ok());
        assert!(same_origin(&headers(&[host, ("origin", "http://127.0.0.1:8080")])).is_ok());
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-origin")])).is_ok());
        assert!(same_origin(&headers(&[host, ("origin", "http://evil.example")])).is_err());
        assert!(same_origin(&headers(&[host, ("origin", "null")])).is_err());
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "cross-site")])).is_err());
        assert!(same_origin(&headers(&[host, ("sec-fetch-site", "same-site")])).is_err());
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://ops.example"),
            ("x-forwarded-host", "ops.example")
        ]))
        .is_ok());
    }

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:80",
            "127.0.0.1:9",
            "[::1]:8080",
            "127.1.2.3",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1:80", "[2001:db8::1]:80", "0.0.0.0"] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }
}
