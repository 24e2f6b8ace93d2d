//! Who may connect, and to which events: the upgrade request, the
//! application's authorization hook, and the allowed origins.

use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::carrier::close_code;

/// The HTTP request that asked for a websocket: what an authorization hook
/// sees of a connection before it is upgraded (path, query, headers,
/// cookies).
///
/// ```
/// use tbone_dispatch::ConnectRequest;
///
/// let request = ConnectRequest::new("/ws/?room=lobby&name=Ada%20L")
///     .header("Cookie", "session=abc123; theme=dark")
///     .header("Origin", "https://chat.example");
/// assert_eq!(request.path(), "/ws/");
/// assert_eq!(request.query_param("name").as_deref(), Some("Ada L"));
/// assert_eq!(request.cookie("session"), Some("abc123"));
/// assert_eq!(request.header_value("origin"), Some("https://chat.example"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectRequest {
    path: String,
    query: Option<String>,
    /// Names in lower case.
    headers: Vec<(String, String)>,
}

impl ConnectRequest {
    /// A request for `target` (a path with an optional `?query`), without
    /// headers.
    pub fn new(target: &str) -> Self {
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query.to_string())),
            None => (target, None),
        };
        ConnectRequest {
            path: path.to_string(),
            query,
            headers: Vec::new(),
        }
    }

    /// Adds a header (names are matched without regard to case).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.push_header(name, value);
        self
    }

    /// Adds a header in place.
    pub fn push_header(&mut self, name: &str, value: &str) {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_string()));
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The raw query string, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The first value of query parameter `name`, percent-decoded (`+` is
    /// a space).
    pub fn query_param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.query_pairs()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// Every query parameter, names and values percent-decoded, in order.
    pub(crate) fn query_pairs(&self) -> impl Iterator<Item = (Cow<'_, str>, Cow<'_, str>)> {
        self.query
            .as_deref()
            .into_iter()
            .flat_map(|query| query.split('&'))
            .filter(|pair| !pair.is_empty())
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                (percent_decode(key), percent_decode(value))
            })
    }

    /// The first value of header `name` (any case).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, names in lower case, in the order received.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// The value of cookie `name`, from the `Cookie` headers.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == "cookie")
            .flat_map(|(_, v)| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim_matches('"'))
    }
}

fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains(['%', '+']) {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// A connection refused before the upgrade: the HTTP status the client
/// receives (401, 403...) and why.
///
/// ```
/// use tbone_dispatch::Refusal;
///
/// let refusal = Refusal::unauthorized("log in first");
/// assert_eq!(refusal.status(), 401);
/// assert_eq!(refusal.reason(), "log in first");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("connection refused with HTTP {status}: {reason}")]
pub struct Refusal {
    status: u16,
    reason: String,
}

impl Refusal {
    /// A refusal with any HTTP status (400 to 599).
    pub fn new(status: u16, reason: impl Into<String>) -> Self {
        Refusal {
            status: status.clamp(400, 599),
            reason: reason.into(),
        }
    }

    /// 401 Unauthorized: the client did not say who it is.
    pub fn unauthorized(reason: impl Into<String>) -> Self {
        Self::new(401, reason)
    }

    /// 403 Forbidden: the client may not connect.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(403, reason)
    }

    /// 503 Service Unavailable: the server cannot serve now.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(503, reason)
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Why, as sent to the client.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// The websocket close code for a socket that was already upgraded
    /// when it was refused: 1008 for the client's fault, 1011 (or 1001 for
    /// 503) for the server's.
    pub fn close_code(&self) -> u16 {
        match self.status {
            503 => close_code::GOING_AWAY,
            500..=599 => close_code::INTERNAL_ERROR,
            _ => close_code::POLICY,
        }
    }
}

/// Which web pages may open a socket, judged by the request's `Origin`
/// header before the upgrade (refused with 403). Browsers send `Origin`
/// with every websocket request and let any page open one to any server,
/// cookies included; without this check, a page on another site can act
/// as its visitor (cross-site websocket hijacking). Requests without
/// `Origin` (not from a browser) are allowed.
///
/// Behind a reverse proxy that rewrites `Host`, `SameHost` refuses every
/// browser: list the public origins with [`OriginPolicy::only`]
/// (`SocketOptions::allowed_origins`).
///
/// ```
/// use tbone_dispatch::{ConnectRequest, OriginPolicy};
///
/// let request = |origin: &str| ConnectRequest::new("/ws/").header("Host", "chat.example").header("Origin", origin);
/// assert!(OriginPolicy::SameHost.check(&request("https://chat.example")).is_ok());
/// assert!(OriginPolicy::SameHost.check(&request("https://evil.example")).is_err());
///
/// let listed = OriginPolicy::only(["https://app.example"]);
/// assert!(listed.check(&request("https://app.example")).is_ok());
/// assert_eq!(listed.check(&request("https://chat.example")).unwrap_err().status(), 403);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OriginPolicy {
    /// The origin's host (and port) must be the request's `Host` (the
    /// default): pages served by this server only.
    #[default]
    SameHost,
    /// The origin must be one of these (`scheme://host[:port]`, compared
    /// without regard to case).
    Only(Vec<String>),
    /// Any origin: only for sockets that need no credentials.
    Any,
}

impl OriginPolicy {
    /// [`OriginPolicy::Only`] these origins.
    pub fn only<I, S>(origins: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        OriginPolicy::Only(
            origins
                .into_iter()
                .map(|o| o.into().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        )
    }

    /// Whether `request` may connect; a 403 [`Refusal`] if not.
    pub fn check(&self, request: &ConnectRequest) -> Result<(), Refusal> {
        let Some(origin) = request.header_value("origin") else {
            return Ok(());
        };
        let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
        let allowed = match self {
            OriginPolicy::Any => true,
            OriginPolicy::Only(origins) => origins.contains(&origin),
            OriginPolicy::SameHost => match (
                authority_of_origin(&origin),
                request.header_value("host").map(str::trim),
            ) {
                (Some((scheme, origin_host)), Some(host)) if !host.is_empty() => {
                    with_port(origin_host, scheme) == with_port(&host.to_ascii_lowercase(), scheme)
                }
                _ => false,
            },
        };
        if allowed {
            Ok(())
        } else {
            Err(Refusal::forbidden(format!(
                "origin `{origin}` may not open a socket here"
            )))
        }
    }
}

/// The scheme and `host[:port]` of an origin (`null` and the like have
/// none).
fn authority_of_origin(origin: &str) -> Option<(&str, &str)> {
    let (scheme, host) = origin.split_once("://")?;
    (!host.is_empty() && !host.contains('/')).then_some((scheme, host))
}

/// `host` with its port, the scheme's default one if it has none, so that
/// `https://x.example` and `Host: x.example:443` are the same host.
fn with_port(host: &str, scheme: &str) -> String {
    // An IPv6 literal is bracketed; its port comes after the `]`.
    let has_port = match host.rfind(']') {
        Some(end) => host[end..].contains(':'),
        None => host.contains(':'),
    };
    if has_port {
        return host.to_string();
    }
    let port = match scheme {
        "https" | "wss" => 443,
        _ => 80,
    };
    format!("{host}:{port}")
}

/// What an [`Authorizer`] decided about a connection, kept with it: the
/// application's own value (a user, a session), handed to
/// [`Authorizer::allow`] and readable by message handlers with
/// [`SocketHandle::client`](crate::SocketHandle::client).
pub(crate) type Client = Arc<dyn Any + Send + Sync>;

/// The application's authorization hook: decides, with the upgrade request
/// in hand, whether a client may connect at all (before the upgrade, so a
/// refused client gets an HTTP 401 or 403), and then which events it may
/// receive, for the events the server subscribes it to and for each one it
/// asks for in a control message.
///
/// ```
/// use tbone_dispatch::{Authorizer, ConnectRequest, Refusal, SocketOptions};
///
/// struct User {
///     admin: bool,
/// }
///
/// struct BySession;
///
/// impl Authorizer for BySession {
///     type Client = User;
///
///     async fn connect(&self, request: &ConnectRequest) -> Result<User, Refusal> {
///         // A real application would look the session up, asynchronously.
///         match request.cookie("session") {
///             Some("admin-token") => Ok(User { admin: true }),
///             Some(_) => Ok(User { admin: false }),
///             None => Err(Refusal::unauthorized("log in first")),
///         }
///     }
///
///     async fn allow(&self, user: &User, _channel: &str, event: &str) -> bool {
///         user.admin || !event.starts_with("admin_")
///     }
/// }
///
/// let options = SocketOptions::new(["resource_create", "admin_audit"]).authorize(BySession);
/// # let _ = options;
/// ```
pub trait Authorizer: Send + Sync + 'static {
    /// What the application remembers about an authorized client.
    type Client: Send + Sync + 'static;

    /// Decides before the upgrade. An error refuses the connection with
    /// its HTTP status.
    fn connect(
        &self,
        request: &ConnectRequest,
    ) -> impl Future<Output = Result<Self::Client, Refusal>> + Send;

    /// Whether `client` may receive `event` of `channel` (default: yes).
    /// Refused events of the server's list are left out silently; a
    /// refused control message gets an error frame.
    fn allow(
        &self,
        client: &Self::Client,
        channel: &str,
        event: &str,
    ) -> impl Future<Output = bool> + Send {
        let _ = (client, channel, event);
        async { true }
    }
}

/// [`Authorizer`] with its types erased, as [`SocketOptions`](crate::SocketOptions) keeps it.
pub(crate) trait DynAuthorizer: Send + Sync + 'static {
    fn connect<'a>(&'a self, request: &'a ConnectRequest)
        -> BoxFuture<'a, Result<Client, Refusal>>;

    fn allow<'a>(
        &'a self,
        client: &'a (dyn Any + Send + Sync),
        channel: &'a str,
        event: &'a str,
    ) -> BoxFuture<'a, bool>;
}

impl<A: Authorizer> DynAuthorizer for A {
    fn connect<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Client, Refusal>> {
        Authorizer::connect(self, request)
            .map(|decided| decided.map(|client| Arc::new(client) as Client))
            .boxed()
    }

    fn allow<'a>(
        &'a self,
        client: &'a (dyn Any + Send + Sync),
        channel: &'a str,
        event: &'a str,
    ) -> BoxFuture<'a, bool> {
        match client.downcast_ref::<A::Client>() {
            Some(client) => Authorizer::allow(self, client, channel, event).boxed(),
            // Only this authorizer's own clients reach it.
            None => futures::future::ready(false).boxed(),
        }
    }
}

impl fmt::Debug for dyn DynAuthorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authorizer")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_and_cookies() {
        let request = ConnectRequest::new("/ws?a=1&b=x+y%21&bad=%zz&a=2")
            .header("Cookie", "k=v; quoted=\"q\"")
            .header("cookie", "second=2");
        assert_eq!(request.query_param("a").as_deref(), Some("1"));
        assert_eq!(request.query_param("b").as_deref(), Some("x y!"));
        assert_eq!(request.query_param("bad").as_deref(), Some("%zz"));
        assert_eq!(request.query_param("missing"), None);
        assert_eq!(request.cookie("quoted"), Some("q"));
        assert_eq!(request.cookie("second"), Some("2"));
        assert_eq!(request.cookie("k"), Some("v"));
        assert_eq!(request.cookie("v"), None);
    }

    #[test]
    fn origins() {
        let with = |origin: Option<&str>| {
            let request = ConnectRequest::new("/").header("host", "127.0.0.1:8000");
            match origin {
                Some(origin) => request.header("origin", origin),
                None => request,
            }
        };
        let same = OriginPolicy::SameHost;
        assert!(same.check(&with(None)).is_ok(), "not a browser");
        assert!(same.check(&with(Some("http://127.0.0.1:8000"))).is_ok());
        assert!(same.check(&with(Some("http://127.0.0.1:8001"))).is_err());
        assert!(same.check(&with(Some("null"))).is_err());
        let host = |host: &str, origin: &str| {
            ConnectRequest::new("/")
                .header("host", host)
                .header("origin", origin)
        };
        assert!(same
            .check(&host("x.example:443", "https://x.example"))
            .is_ok());
        assert!(same
            .check(&host("x.example", "https://x.example:443"))
            .is_ok());
        assert!(same
            .check(&host("x.example", "http://x.example:80"))
            .is_ok());
        assert!(same
            .check(&host("x.example", "https://x.example:8443"))
            .is_err());
        assert!(same.check(&host("[::1]:8000", "http://[::1]:8000")).is_ok());
        assert!(same.check(&host("", "null")).is_err(), "an empty Host");
        assert!(same.check(&host("", "http://")).is_err());
        let only = OriginPolicy::only(["HTTP://App.example/"]);
        assert!(only.check(&with(Some("http://app.example"))).is_ok());
        assert!(only.check(&with(Some("http://127.0.0.1:8000"))).is_err());
        assert!(OriginPolicy::Any.check(&with(Some("http://x"))).is_ok());
    }
}
