//! Secrets out of logs and errors.
//!
//! - [`redact_url`] shows a broker or database address with its password
//!   replaced by `***`: the userinfo of every URL form (`amqp://`,
//!   `amqps://`, `postgres://`, `mysql://`, `sqlite://`, Kafka-style host
//!   lists with or without a `SASL_SSL://` prefix on each entry), and every
//!   query or `key=value` parameter whose name looks secret (`?password=`,
//!   `&pass=`, `token=`, `sslpassword=`, percent-encoded names too).
//! - [`looks_secret`] says whether a setting's name looks like it holds a
//!   secret (librdkafka properties, URL parameters).
//! - [`scrub`] removes known secret values (raw and percent-encoded) from
//!   any text before it leaves the crate, e.g. a librdkafka error that
//!   echoes the value it rejected.

// Without a broker transport, only `redact_url` and `looks_secret` are used.
#![cfg_attr(not(any(feature = "kafka", feature = "rabbitmq")), allow(dead_code))]

/// What replaces a secret.
pub(crate) const MASK: &str = "***";

/// Whether a setting or parameter name looks like it holds a secret:
/// passwords, secrets, tokens, JAAS configurations, credentials, private
/// keys (`ssl.key.pem`), API keys. Case and separators (`.`, `_`, `-`)
/// do not matter; a percent-encoded name is decoded first.
pub(crate) fn looks_secret(name: &str) -> bool {
    let decoded = percent_decode(name).to_ascii_lowercase();
    let compact: String = decoded
        .chars()
        .filter(|c| !matches!(c, '.' | '_' | '-' | ' '))
        .collect();
    const CONTAINS: &[&str] = &[
        "password",
        "passwd",
        "passphrase",
        "secret",
        "token",
        "jaas",
        "credential",
        "privatekey",
        "apikey",
        "accesskey",
        "keypem",
        "oauthbearerconfig",
        "signature",
    ];
    const WHOLE_WORD: &[&str] = &["pass", "pwd", "pw", "sig"];
    CONTAINS.iter().any(|s| compact.contains(s))
        // `?key=` (SQLCipher), but not `ssl.key.location` (a path).
        || decoded == "key"
        || decoded
            .split(['.', '_', '-', ' '])
            .any(|word| WHOLE_WORD.contains(&word))
}

/// Replaces the passwords of a URL, URL list or `key=value` connection
/// string with `***` for logs and errors: the userinfo's password and every
/// parameter whose name [looks secret](looks_secret). Over-redacts rather
/// than leaks when the text is ambiguous.
pub fn redact_url(url: &str) -> String {
    Redactor::default().url(url)
}

/// The secret parts of a URL (the userinfo's password, secret parameter
/// values), raw and percent-decoded, for [`scrub`]bing texts that may
/// repeat them.
pub(crate) fn url_secrets(url: &str) -> Vec<String> {
    let mut r = Redactor::default();
    let _ = r.url(url);
    let decoded: Vec<String> = r.masked.iter().map(|s| percent_decode(s)).collect();
    let mut out = r.masked;
    out.extend(decoded);
    out.retain(|s| !s.is_empty());
    out.sort();
    out.dedup();
    out
}

/// Replaces every occurrence of each secret (and of its percent-encoded
/// and percent-decoded forms) in `text` with `***`. Secrets shorter than
/// three characters are left alone (masking them would garble the text
/// without hiding anything worth hiding); callers mask structured fields
/// of any length themselves.
pub(crate) fn scrub<'a>(text: &str, secrets: impl IntoIterator<Item = &'a str>) -> String {
    let mut forms: Vec<String> = Vec::new();
    for s in secrets {
        for form in [s.to_owned(), percent_decode(s), percent_encode(s)] {
            if form.chars().count() >= 3 {
                forms.push(form);
            }
        }
    }
    // Longest first, so that a secret containing another is masked whole.
    forms.sort_by_key(|f| std::cmp::Reverse(f.len()));
    forms.dedup();
    let mut out = text.to_owned();
    for f in &forms {
        if out.contains(f.as_str()) {
            out = out.replace(f.as_str(), MASK);
        }
    }
    out
}

/// Masks and remembers what it masked.
#[derive(Default)]
struct Redactor {
    masked: Vec<String>,
}

impl Redactor {
    fn url(&mut self, url: &str) -> String {
        let userinfo = self.userinfo(url);
        self.params(&userinfo)
    }

    /// Masks the userinfo password of each URL in `s` (one URL, a list of
    /// URLs, or a Kafka-style `user:pass@host:port,host:port` list).
    fn userinfo(&mut self, s: &str) -> String {
        if !s.contains('@') {
            return s.to_owned();
        }
        // `sqlite:file@x.db`, `file:...`: no authority, nothing to mask here.
        if let Some((scheme, rest)) = s.split_once(':') {
            if is_scheme(scheme) && !rest.starts_with("//") && is_opaque_scheme(scheme) {
                return s.to_owned();
            }
        }
        if s.contains("://") {
            // One URL, or a list of URLs, each with its own scheme.
            split_before_schemes(s)
                .into_iter()
                .map(|u| self.one_url(u))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            self.host_list(s)
        }
    }

    /// `scheme://user:pass@host...` → `scheme://user:***@host...`.
    fn one_url(&mut self, url: &str) -> String {
        let Some(at) = url.find("://") else {
            return self.host_list(url);
        };
        let (head, rest) = url.split_at(at + 3);
        match userinfo_end(rest) {
            Some(end) => format!("{head}{}{}", self.mask_password(&rest[..end]), &rest[end..]),
            None => url.to_owned(),
        }
    }

    /// `user:pass` → `user:***`; a userinfo without a password is kept.
    fn mask_password(&mut self, userinfo: &str) -> String {
        match userinfo.split_once(':') {
            Some((user, password)) => {
                self.masked.push(password.to_owned());
                format!("{user}:{MASK}")
            }
            None => userinfo.to_owned(),
        }
    }

    /// A Kafka-style list without schemes: `user:pass@h1:9092,h2:9092`.
    fn host_list(&mut self, s: &str) -> String {
        let pieces: Vec<&str> = s.split(',').collect();
        let mut out: Vec<String> = Vec::new();
        let mut i = 0;
        while i < pieces.len() {
            // A piece that is neither `host[:port]` nor has its `@` yet is the
            // start of a userinfo with a comma in it: take the next pieces too.
            let mut j = i;
            while j + 1 < pieces.len() && !pieces[j].contains('@') && !is_host_port(pieces[j]) {
                j += 1;
            }
            if !pieces[j].contains('@') {
                // No userinfo in this run after all.
                out.extend(pieces[i..=j].iter().map(|p| (*p).to_owned()));
                i = j + 1;
                continue;
            }
            let entry = pieces[i..=j].join(",");
            let at = entry.rfind('@').unwrap_or(0);
            out.push(format!(
                "{}{}",
                self.mask_password(&entry[..at]),
                &entry[at..]
            ));
            i = j + 1;
        }
        out.join(",")
    }

    /// Masks the value of every `name=value` whose name looks secret, in a
    /// query string or a whitespace-separated connection string. The value
    /// runs to the next `&` or whitespace (or to its closing quote).
    fn params(&mut self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(eq) = rest.find('=') {
            let (before, after) = rest.split_at(eq);
            let key_start = before
                .rfind(|c: char| {
                    matches!(c, '?' | '&' | ';' | ',' | '/' | '#') || c.is_whitespace()
                })
                .map_or(0, |k| {
                    k + before[k..].chars().next().map_or(1, char::len_utf8)
                });
            let key = &before[key_start..];
            out.push_str(before);
            out.push('=');
            let value = &after[1..];
            if key.is_empty() || !looks_secret(key) {
                rest = value;
                continue;
            }
            let end = match value.chars().next() {
                Some(q @ ('\'' | '"')) => value[1..].find(q).map_or(value.len(), |k| k + 2),
                _ => value
                    .find(|c: char| c == '&' || c.is_whitespace())
                    .unwrap_or(value.len()),
            };
            if end > 0 {
                self.masked
                    .push(value[..end].trim_matches(['\'', '"']).to_owned());
                out.push_str(MASK);
            }
            rest = &value[end..];
        }
        out.push_str(rest);
        out
    }
}

fn is_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_'))
}

fn is_opaque_scheme(scheme: &str) -> bool {
    matches!(
        scheme.to_ascii_lowercase().as_str(),
        "sqlite" | "file" | "mailto" | "urn" | "data"
    )
}

/// Splits `a://x,b://y` into `a://x` and `b://y`; a comma not followed by
/// a `scheme://` stays inside its URL (multi-host PostgreSQL URLs, a comma
/// in a password).
fn split_before_schemes(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    for (i, _) in s.match_indices(',') {
        let next = s[i + 1..].trim_start();
        if let Some((scheme, _)) = next.split_once("://") {
            if is_scheme(scheme) && i >= start {
                parts.push(&s[start..i]);
                start = i + 1;
            }
        }
    }
    parts.push(&s[start..]);
    parts
}

/// Where the userinfo of `rest` (what follows `scheme://`) ends: the
/// position of its terminating `@`, if it has one.
fn userinfo_end(rest: &str) -> Option<usize> {
    let q = rest.find(['?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..q].rfind('@') {
        return Some(at);
    }
    // An `@` only after a `?` or `#`: a password with `?`/`#` in it, or an
    // `@` in the query. It is the query when a path (`host[:port]/...`)
    // came first.
    let at = rest.rfind('@')?;
    let before_query = &rest[..q];
    match before_query.find('/') {
        Some(slash) => {
            let authority = &before_query[..slash];
            let is_host_port = match authority.rsplit_once(':') {
                Some((_, port)) => port.chars().all(|c| c.is_ascii_digit()),
                None => true,
            };
            if is_host_port {
                None
            } else {
                Some(at)
            }
        }
        None => Some(at),
    }
}

fn is_host_port(piece: &str) -> bool {
    let piece = piece.trim();
    let (host, port) = match piece.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (h, Some(p)),
        _ => (piece, None),
    };
    !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'))
        && port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// Decodes `%XX` escapes (invalid ones are kept as they are).
pub(crate) fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Encodes everything but unreserved characters as `%XX`.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests;
