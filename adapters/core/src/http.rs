//! The HTTP client every adapter uses, and the mapping of transport failures
//! and status codes to [`AdapterError`].
//!
//! One builder so that every vendor gets the same rustls setup, the per-MDM
//! extra trust anchor (`ca_cert`), the connect/request timeouts and the
//! redirect policy; one classifier so that "cannot connect", "TLS trust" and
//! "timeout" mean the same for all three MDMs.
//!
//! Answers are read by [`read_body`], never by reqwest's unbounded
//! `text()`/`bytes()`: at most [`MAX_BODY_BYTES`], refused up front by
//! `Content-Length` and counted chunk by chunk when there is none.
//!
//! Redirects: only within the origin (scheme, host, port) of the request's
//! URL, at most three. A redirect elsewhere is never followed, whatever the
//! method: reqwest drops `Authorization` on another host, but not a form body
//! (SOTI's password grant, resent on a 307) nor `aw-tenant-code` or BCDM's
//! signed headers; it ends the call as [`AdapterError::Redirected`].

pub use crate::error::MAX_RETRY_AFTER;
use crate::AdapterError;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::StatusCode;
use std::error::Error as _;
use std::time::Duration;

/// Transport settings of one MDM integration.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    /// Extra PEM trust anchor(s) for this MDM only, on top of the system's.
    pub ca_cert_pem: Option<Vec<u8>>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            ca_cert_pem: None,
        }
    }
}

/// The checks every vendor makes on its `url`: http(s), usable as a base, and
/// no query or fragment (request paths are appended to it). The error is a
/// message for the caller to prefix with the MDM's name.
pub fn check_base_url(url: &url::Url, example: &str) -> Result<(), String> {
    if !matches!(url.scheme(), "https" | "http") || url.cannot_be_a_base() {
        return Err(format!("url must be an http(s) URL such as {example}"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("url must not carry a query or a fragment".to_string());
    }
    Ok(())
}

/// The largest MDM answer body read (CONTRACT §6); a larger one fails the
/// call. Pages are far smaller: this bounds memory against a broken or
/// hostile server, it is not a paging limit.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Reads an answer's body as text (invalid UTF-8 replaced, as reqwest's
/// `text()` without a charset does), at most [`MAX_BODY_BYTES`].
///
/// `method` classifies a failure as [`classify_request_error`] does. A body
/// over the limit is [`AdapterError::Decode`] for a read, and
/// [`AdapterError::NoAnswer`] for a command (a POST): its answer could not be
/// read, and the MDM may have acted on it.
pub async fn read_body(
    response: reqwest::Response,
    method: &reqwest::Method,
) -> Result<String, AdapterError> {
    read_body_limited(response, method, MAX_BODY_BYTES).await
}

/// [`read_body`] with another limit (tests use a small one).
pub async fn read_body_limited(
    mut response: reqwest::Response,
    method: &reqwest::Method,
    limit: usize,
) -> Result<String, AdapterError> {
    let too_large = |response: &reqwest::Response| {
        let message = format!(
            "{method} {}: the answer is larger than {}, the most the connector reads; it was not read further",
            response.url().path(),
            human_size(limit)
        );
        if method == reqwest::Method::POST {
            AdapterError::NoAnswer(message)
        } else {
            AdapterError::Decode(message)
        }
    };
    let declared = response.content_length();
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(&response));
    }
    // Not more up front than a typical page, whatever the header claims.
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(1 << 20));
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(e) => return Err(classify_request_error(method, &e)),
        };
        if body.len() + chunk.len() > limit {
            return Err(too_large(&response));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(match String::from_utf8(body) {
        Ok(text) => text,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

fn human_size(bytes: usize) -> String {
    const MIB: usize = 1024 * 1024;
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Builds the rustls-based client for one MDM.
pub fn build_client(settings: &HttpSettings) -> Result<reqwest::Client, AdapterError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        // Idle connections are dropped before a typical server keep-alive
        // (60 s and up) closes them: a command written into a connection the
        // server is closing gets no answer, and a wipe without an answer is
        // not repeated (`NoAnswer`).
        .pool_idle_timeout(std::time::Duration::from_secs(20))
        .user_agent(concat!("mtd-connector/", env!("CARGO_PKG_VERSION")))
        .redirect(same_origin_redirects());
    if let Some(pem) = &settings.ca_cert_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| AdapterError::Config(format!("ca_cert is not a PEM certificate: {e}")))?;
        if certs.is_empty() {
            return Err(AdapterError::Config(
                "ca_cert holds no PEM certificate".into(),
            ));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder
        .build()
        .map_err(|e| AdapterError::Config(format!("cannot build the HTTP client: {e}")))
}

/// Redirects followed within the MDM's own origin (a path moved, a trailing
/// slash added); one more is refused.
const MAX_REDIRECTS: usize = 3;

/// Why the redirect policy stopped a call; found again in the reqwest error's
/// sources by [`classify_send_error`].
#[derive(Debug, thiserror::Error)]
#[error("redirect to {location} not followed: {why}")]
struct RedirectRefused {
    status: u16,
    location: String,
    why: &'static str,
}

/// Follows a redirect only to the origin the call was made to (see the
/// module header), up to [`MAX_REDIRECTS`].
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        // reqwest lists every URL of the chain so far, the first one first.
        let first = attempt.previous().first();
        let why = if first.is_some_and(|from| !same_origin(from, attempt.url())) {
            Some("it points to another origin (scheme, host or port) than the MDM's url")
        } else if attempt.previous().len() > MAX_REDIRECTS {
            Some("more than 3 redirects")
        } else {
            None
        };
        match why {
            None => attempt.follow(),
            Some(why) => {
                let refused = RedirectRefused {
                    status: attempt.status().as_u16(),
                    location: shown_url(attempt.url()),
                    why,
                };
                attempt.error(refused)
            }
        }
    })
}

fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// A URL for a message: without any user name or password it may carry.
fn shown_url(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_password(None);
    let _ = shown.set_username("");
    shown.to_string()
}

/// Maps a failed `send()` (no status received) to the error class.
pub fn classify_send_error(err: &reqwest::Error) -> AdapterError {
    let mut source = err.source();
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<RedirectRefused>() {
            return AdapterError::Redirected {
                status: refused.status,
                location: refused.location.clone(),
                why: refused.why.to_string(),
            };
        }
        source = s.source();
    }
    let chain = error_chain(err);
    let lower = chain.to_ascii_lowercase();
    if err.is_timeout() {
        return AdapterError::Timeout(chain);
    }
    if lower.contains("certificate") || lower.contains("tls") || lower.contains("handshake") {
        return AdapterError::Tls(chain);
    }
    if err.is_connect() {
        return AdapterError::Connect(chain);
    }
    if err.is_decode() {
        return AdapterError::Decode(chain);
    }
    // A connection that dropped mid-request (reset, closed before the answer).
    AdapterError::Unavailable {
        status: None,
        retry_after: None,
        message: chain,
    }
}

/// As [`classify_send_error`], for a command (a POST that changes something
/// at the MDM): once the connection stood, a lost or late answer is
/// [`AdapterError::NoAnswer`], because the MDM may have acted on the command.
/// Only a failure to connect (or to agree on TLS) proves it never left.
pub fn classify_command_send_error(err: &reqwest::Error) -> AdapterError {
    match classify_send_error(err) {
        // A redirect is the MDM's answer that it did not take the command;
        // nothing went to where it pointed.
        e @ (AdapterError::Connect(_) | AdapterError::Tls(_) | AdapterError::Redirected { .. }) => {
            e
        }
        _ if err.is_connect() => AdapterError::Connect(error_chain(err)),
        _ => AdapterError::NoAnswer(error_chain(err)),
    }
}

/// The classification of a failed request by its method, the one rule every
/// adapter follows: a POST changes something at the MDM (every adapter POST
/// is a command), so it is classified as a command; anything else as a read.
pub fn classify_request_error(method: &reqwest::Method, err: &reqwest::Error) -> AdapterError {
    if method == reqwest::Method::POST {
        classify_command_send_error(err)
    } else {
        classify_send_error(err)
    }
}

/// The error and all its sources on one line (reqwest hides the cause otherwise).
fn error_chain(err: &reqwest::Error) -> String {
    let mut out = without_url(err).to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn without_url(err: &reqwest::Error) -> String {
    // The URL carries no secret in any of our vendors' APIs, but query strings
    // can be long; keep only the path for readability.
    match err.url() {
        Some(url) => format!("{} ({})", strip_url(&err.to_string()), url.path()),
        None => err.to_string(),
    }
}

fn strip_url(s: &str) -> String {
    match s.find(" for url (") {
        Some(i) => s[..i].to_string(),
        None => s.to_string(),
    }
}

/// `Retry-After` as seconds (the HTTP-date form is read as "now + difference"),
/// at most [`MAX_RETRY_AFTER`]: a longer value counts as one hour.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let wait = if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 are as much "too long" as u64::MAX.
        raw.parse::<u64>()
            .map(Duration::from_secs)
            .unwrap_or(MAX_RETRY_AFTER)
    } else {
        let when = chrono::DateTime::parse_from_rfc2822(raw).ok()?;
        let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
        delta.to_std().unwrap_or(Duration::ZERO)
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// Maps a non-success status to the error class. `message` is what the vendor
/// said (already extracted from its error JSON) or a short excerpt of the body.
pub fn error_for_status(status: StatusCode, headers: &HeaderMap, message: String) -> AdapterError {
    let code = status.as_u16();
    match code {
        401 => AdapterError::Unauthorized(message),
        403 => AdapterError::Forbidden(message),
        404 => AdapterError::NotFound(message),
        408 => AdapterError::Timeout(message),
        429 => AdapterError::RateLimited {
            retry_after: retry_after(headers),
            message,
        },
        500..=599 => AdapterError::Unavailable {
            status: Some(code),
            retry_after: retry_after(headers),
            message,
        },
        _ => AdapterError::Rejected {
            status: code,
            message,
        },
    }
}

/// As [`error_for_status`], for the answer to a command (a POST that changes
/// something at the MDM). A 502 or 504 comes from a gateway in front of the
/// MDM that lost its answer or gave up waiting for it: the MDM may have acted,
/// so it is [`AdapterError::NoAnswer`] (a wipe is then never sent again). Any
/// other status means what it means for a read.
pub fn error_for_command_status(
    status: StatusCode,
    headers: &HeaderMap,
    message: String,
) -> AdapterError {
    match status.as_u16() {
        code @ (502 | 504) => AdapterError::NoAnswer(format!(
            "{code} {} from a gateway in front of the MDM, which may have received the command ({message})",
            status.canonical_reason().unwrap_or("")
        )),
        _ => error_for_status(status, headers, message),
    }
}

/// The one rule every adapter follows for a non-success status, as
/// [`classify_request_error`] for a failed send: a POST is a command.
pub fn error_for_request_status(
    method: &reqwest::Method,
    status: StatusCode,
    headers: &HeaderMap,
    message: String,
) -> AdapterError {
    if method == reqwest::Method::POST {
        error_for_command_status(status, headers, message)
    } else {
        error_for_status(status, headers, message)
    }
}

/// The error for an answer to a command that has a success status but is not
/// the vendor's documented success answer (`documented`, e.g. "MobiControl's
/// 204 with no body"): a sign-in page of a portal or a proxy, a body where
/// none is due. It does not count as sent (CONTRACT §4). Whether the MDM acted
/// on it is unknown, so it is [`AdapterError::NoAnswer`]: a wipe is never sent
/// again, an idempotent command is retried.
pub fn undocumented_answer(
    request: &str,
    status: StatusCode,
    body: &str,
    documented: &str,
) -> AdapterError {
    AdapterError::NoAnswer(format!(
        "{request}: answered {status} with {} instead of {documented}, so it does not count as sent",
        body_excerpt(body)
    ))
}

/// Whether a body is an HTML page (a login portal, a proxy's error page).
pub fn is_html_page(body: &str) -> bool {
    let start = body.trim_start();
    let head = start.get(..14).unwrap_or(start).to_ascii_lowercase();
    head.starts_with("<!doctype html") || head.starts_with("<html")
}

/// A short, single-line excerpt of a body that is not the vendor's error JSON
/// (an HTML error page, a proxy's text): enough to recognise it in a log.
pub fn body_excerpt(body: &str) -> String {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return "(empty body)".to_string();
    }
    let lower = trimmed.to_ascii_lowercase();
    if is_html_page(trimmed) {
        // The <title> of an error page says most ("404 - File or directory not found").
        if let (Some(a), Some(b)) = (lower.find("<title>"), lower.find("</title>")) {
            if b > a + 7 {
                return format!("HTML page: {}", trimmed[a + 7..b].trim());
            }
        }
        return "HTML page".to_string();
    }
    let one_line: String = trimmed.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut end = one_line.len().min(200);
    while !one_line.is_char_boundary(end) {
        end -= 1;
    }
    one_line[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn status_codes_map_to_their_classes() {
        let h = HeaderMap::new();
        assert_eq!(
            error_for_status(StatusCode::UNAUTHORIZED, &h, String::new()).class(),
            "unauthorized"
        );
        assert_eq!(
            error_for_status(StatusCode::FORBIDDEN, &h, String::new()).class(),
            "forbidden"
        );
        assert_eq!(
            error_for_status(StatusCode::NOT_FOUND, &h, String::new()).class(),
            "not_found"
        );
        assert_eq!(
            error_for_status(StatusCode::BAD_GATEWAY, &h, String::new()).class(),
            "unavailable"
        );
        assert_eq!(
            error_for_status(StatusCode::UNPROCESSABLE_ENTITY, &h, String::new()).class(),
            "rejected"
        );
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let e = error_for_status(StatusCode::TOO_MANY_REQUESTS, &h, String::new());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        // A command's answer lost behind a gateway: the MDM may have acted.
        let post = reqwest::Method::POST;
        for (status, class) in [
            (StatusCode::BAD_GATEWAY, "no_answer"),
            (StatusCode::GATEWAY_TIMEOUT, "no_answer"),
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            (StatusCode::INTERNAL_SERVER_ERROR, "unavailable"),
        ] {
            let e = error_for_request_status(&post, status, &h, String::new());
            assert_eq!(e.class(), class, "{status}");
        }
        let e = error_for_request_status(
            &reqwest::Method::GET,
            StatusCode::BAD_GATEWAY,
            &h,
            String::new(),
        );
        assert_eq!(e.class(), "unavailable");
    }

    #[test]
    fn a_retry_after_above_one_hour_counts_as_one_hour() {
        let hour = Some(Duration::from_secs(3600));
        for huge in [
            "18446744073709551615",
            "99999999999999999999999",
            "3601",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let mut h = HeaderMap::new();
            h.insert(RETRY_AFTER, HeaderValue::from_static(huge));
            assert_eq!(retry_after(&h), hour, "{huge}");
        }
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3600"));
        assert_eq!(retry_after(&h), hour);
        let e = AdapterError::RateLimited {
            retry_after: Some(Duration::MAX),
            message: String::new(),
        };
        assert_eq!(e.retry_after(), hour, "however the error was made");
    }

    #[tokio::test]
    async fn redirects_are_followed_within_the_origin_three_times_and_never_elsewhere() {
        use wiremock::matchers::path_regex;
        use wiremock::{Mock, MockServer, ResponseTemplate};
        let server = MockServer::start().await;
        // /hop/N redirects to /hop/N+1 on the same server; /hop/3 answers.
        for n in 0..4 {
            let answer = if n == 3 {
                ResponseTemplate::new(200).set_body_string("here")
            } else {
                ResponseTemplate::new(302).insert_header("Location", format!("/hop/{}", n + 1))
            };
            Mock::given(path_regex(format!("^/hop/{n}$")))
                .respond_with(answer)
                .mount(&server)
                .await;
        }
        let client = build_client(&HttpSettings::default()).unwrap();
        let ok = client
            .get(format!("{}/hop/0", server.uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "three redirects within the origin");
        let long = MockServer::start().await;
        Mock::given(path_regex("^/loop$"))
            .respond_with(ResponseTemplate::new(302).insert_header("Location", "/loop"))
            .mount(&long)
            .await;
        let err = client
            .get(format!("{}/loop", long.uri()))
            .send()
            .await
            .unwrap_err();
        let e = classify_send_error(&err);
        assert_eq!(e.class(), "redirected", "{e}");
        assert!(e.to_string().contains("more than 3 redirects"), "{e}");
        assert_eq!(long.received_requests().await.unwrap().len(), 4);

        let elsewhere = MockServer::start().await;
        let away = MockServer::start().await;
        let location = format!("{}/x", away.uri()).replace("http://", "http://user:pw@");
        Mock::given(path_regex("^/a$"))
            .respond_with(ResponseTemplate::new(307).insert_header("Location", location.as_str()))
            .mount(&elsewhere)
            .await;
        let err = client
            .post(format!("{}/a", elsewhere.uri()))
            .body("password=secret")
            .send()
            .await
            .unwrap_err();
        assert!(away.received_requests().await.unwrap().is_empty());
        let e = classify_command_send_error(&err);
        assert_eq!(e.class(), "redirected", "{e}");
        assert!(
            e.to_string().contains(&format!("{}/x", away.uri())),
            "names the Location: {e}"
        );
        assert!(!e.to_string().contains("pw@"), "without its password: {e}");
    }

    #[test]
    fn base_urls_must_be_http_without_query_or_fragment() {
        let ok = url::Url::parse("https://mc.example.com/MobiControl").unwrap();
        assert_eq!(check_base_url(&ok, "x"), Ok(()));
        for bad in [
            "ftp://mc.example.com",
            "mailto:a@b.c",
            "https://h/p?x=1",
            "https://h/p#frag",
        ] {
            let url = url::Url::parse(bad).unwrap();
            assert!(check_base_url(&url, "https://e.example").is_err(), "{bad}");
        }
    }

    #[test]
    fn html_error_pages_are_reduced_to_their_title() {
        let page =
            "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>…</body></html>";
        assert_eq!(body_excerpt(page), "HTML page: 502 Bad Gateway");
        assert_eq!(body_excerpt("  "), "(empty body)");
    }

    #[test]
    fn a_ca_cert_that_is_not_pem_is_a_config_error() {
        let settings = HttpSettings {
            ca_cert_pem: Some(b"not a cert".to_vec()),
            ..Default::default()
        };
        assert_eq!(build_client(&settings).unwrap_err().class(), "config");
    }

    /// A server that answers one request with `head` and then `body` in
    /// chunks of the chunked transfer coding (no Content-Length).
    async fn chunked_server(status: &'static str, chunks: Vec<Vec<u8>>) -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let head = format!("HTTP/1.1 {status}\r\ntransfer-encoding: chunked\r\n\r\n");
            let _ = socket.write_all(head.as_bytes()).await;
            for chunk in chunks {
                let _ = socket
                    .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
                    .await;
                let _ = socket.write_all(&chunk).await;
                let _ = socket.write_all(b"\r\n").await;
            }
            let _ = socket.write_all(b"0\r\n\r\n").await;
        });
        addr
    }

    #[tokio::test]
    async fn a_body_over_the_limit_fails_with_or_without_content_length() {
        let client = build_client(&HttpSettings::default()).unwrap();
        let get = reqwest::Method::GET;
        let post = reqwest::Method::POST;

        // Without Content-Length: counted while streaming.
        let addr = chunked_server("200 OK", vec![vec![b'a'; 600], vec![b'b'; 600]]).await;
        let resp = client
            .get(format!("http://{addr}/page"))
            .send()
            .await
            .unwrap();
        let e = read_body_limited(resp, &get, 1024).await.unwrap_err();
        assert_eq!(e.class(), "decode", "{e}");
        assert!(e.to_string().contains("larger than 1024 bytes"), "{e}");
        assert!(e.to_string().contains("GET /page"), "{e}");

        let addr = chunked_server("200 OK", vec![vec![b'a'; 600], vec![b'b'; 424]]).await;
        let resp = client
            .get(format!("http://{addr}/page"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            read_body_limited(resp, &get, 1024).await.unwrap().len(),
            1024
        );

        // With Content-Length: refused before reading; a command's answer is lost.
        let server = wiremock::MockServer::start().await;
        wiremock::Mock::given(wiremock::matchers::any())
            .respond_with(wiremock::ResponseTemplate::new(202).set_body_bytes(vec![b'x'; 2048]))
            .mount(&server)
            .await;
        let resp = client
            .post(format!("{}/cmd", server.uri()))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.content_length(), Some(2048));
        let e = read_body_limited(resp, &post, 1024).await.unwrap_err();
        assert_eq!(e.class(), "no_answer", "{e}");

        // Invalid UTF-8 is replaced, not an error.
        let addr = chunked_server("200 OK", vec![vec![b'o', b'k', 0xff]]).await;
        let resp = client.get(format!("http://{addr}/")).send().await.unwrap();
        assert_eq!(read_body(resp, &get).await.unwrap(), "ok\u{fffd}");
    }

    #[tokio::test]
    async fn a_closed_port_is_cannot_connect() {
        // Bind then drop a listener so the port is very likely closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = build_client(&HttpSettings::default()).unwrap();
        let err = client
            .get(format!("http://127.0.0.1:{port}/"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(classify_send_error(&err).class(), "connect");
    }

    #[tokio::test]
    async fn a_command_that_never_connected_is_cannot_connect_and_one_whose_answer_is_lost_is_no_answer(
    ) {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let client = build_client(&HttpSettings::default()).unwrap();
        let err = client
            .post(format!("http://127.0.0.1:{port}/command"))
            .send()
            .await
            .unwrap_err();
        assert_eq!(
            classify_command_send_error(&err).class(),
            "connect",
            "nothing left: safe to repeat"
        );

        // A server that reads the whole request, then closes without an answer.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut seen = Vec::new();
            while !String::from_utf8_lossy(&seen).contains("wipe") {
                let n = socket.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                seen.extend_from_slice(&buf[..n]);
            }
            drop(socket);
        });
        let err = client
            .post(format!("http://{addr}/command"))
            .body("wipe")
            .send()
            .await
            .unwrap_err();
        let e = classify_command_send_error(&err);
        assert_eq!(e.class(), "no_answer", "{e}");
        assert!(e.is_retryable(), "retryable for idempotent commands");
        assert_eq!(
            classify_send_error(&err).class(),
            "unavailable",
            "a read that lost its answer is just unavailable"
        );
    }
}
