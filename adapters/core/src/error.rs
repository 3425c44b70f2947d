//! `AdapterError`: each variant is a decision the caller makes.
//!
//! The dispatcher asks [`AdapterError::is_retryable`] and
//! [`AdapterError::retry_after`]; `test-connection` turns the variant into a
//! plain-words diagnostic; metrics and logs use [`AdapterError::class`].
//! Messages carry what the MDM said, never a credential.

use std::time::Duration;

/// The longest an MDM's `Retry-After` is honoured (CONTRACT §4: a value above
/// one hour counts as one hour, wherever the connector waits for an MDM). A
/// wait is a promise of the MDM's, not a reason to stop for a day; and every
/// `Instant + wait` and `DateTime + wait` stays far from overflowing.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// No TCP connection: DNS, routing or a firewall.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The TLS handshake failed: the MDM's certificate is not trusted, or expired.
    #[error("TLS trust failure: {0}")]
    Tls(String),
    /// The MDM did not answer in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// 401 (or a refused token request): wrong user name, password or key.
    #[error("unauthorized (401): {0}")]
    Unauthorized(String),
    /// 403: the account lacks the API role (or the DM code does not match).
    #[error("forbidden (403): {0}")]
    Forbidden(String),
    /// 404: wrong URL or instance, or the object does not exist.
    #[error("not found (404): {0}")]
    NotFound(String),
    /// 429: slow down, and try again after `retry_after` if the MDM said.
    #[error("rate limited (429){}: {message}", retry_after.map(|d| format!(", retry after {}s", d.min(MAX_RETRY_AFTER).as_secs())).unwrap_or_default())]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// 5xx or a dropped connection mid-request: the MDM is having trouble.
    #[error("MDM unavailable{}: {message}", status.map(|s| format!(" ({s})")).unwrap_or_default())]
    Unavailable {
        status: Option<u16>,
        retry_after: Option<Duration>,
        message: String,
    },
    /// A command went out and no answer came back (timed out after sending,
    /// connection lost mid-answer): the MDM may or may not have acted on it.
    /// Retryable for a command that is idempotent at the MDM; a caller must
    /// not repeat one that is not (a wipe) without checking the MDM first.
    #[error("no answer to the command (the MDM may have acted on it; check the MDM console): {0}")]
    NoAnswer(String),
    /// The MDM refused this action by its own settings; retrying cannot help.
    /// `setting` names what an admin has to change at the MDM console.
    #[error("action not permitted by the MDM: change `{setting}` in the MDM console ({message})")]
    ActionNotPermitted { setting: String, message: String },
    /// The MDM answered a redirect the connector does not follow: to another
    /// origin (scheme, host or port) than the integration's `url`, or one
    /// too many. Nothing was sent to `location`; credentials never follow a
    /// redirect there.
    #[error("redirect not followed: the MDM answered {status} with Location {location}: {why}; nothing was sent there (if the MDM moved, set `url` to its new address)")]
    Redirected {
        status: u16,
        location: String,
        why: String,
    },
    /// A listing that would not end: the same page twice, or more records
    /// than the MDM announced (CONTRACT §6). The sync that reads it fails
    /// and removes nothing.
    #[error("listing stopped: {0}")]
    Listing(String),
    /// Any other 4xx: the request was refused and a repeat would be refused too.
    #[error("rejected ({status}): {message}")]
    Rejected { status: u16, message: String },
    /// The answer could not be read (malformed JSON, an HTML page where JSON was due).
    #[error("malformed answer: {0}")]
    Decode(String),
    /// The adapter cannot do this (a command the MDM does not offer).
    #[error("not supported by this MDM: {0}")]
    Unsupported(String),
    /// The integration's settings do not allow this (e.g. no Wi-Fi profile id).
    #[error("configuration: {0}")]
    Config(String),
}

impl AdapterError {
    /// Whether trying the same request again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            AdapterError::Connect(_)
                | AdapterError::Timeout(_)
                | AdapterError::NoAnswer(_)
                | AdapterError::RateLimited { .. }
                | AdapterError::Unavailable { .. }
        )
    }

    /// The delay the MDM asked for (`Retry-After`), if any, at most
    /// [`MAX_RETRY_AFTER`] however the error was made.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            AdapterError::RateLimited { retry_after, .. }
            | AdapterError::Unavailable { retry_after, .. } => {
                retry_after.map(|d| d.min(MAX_RETRY_AFTER))
            }
            _ => None,
        }
    }

    /// A short, stable name for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            AdapterError::Connect(_) => "connect",
            AdapterError::Tls(_) => "tls",
            AdapterError::Timeout(_) => "timeout",
            AdapterError::Unauthorized(_) => "unauthorized",
            AdapterError::Forbidden(_) => "forbidden",
            AdapterError::NotFound(_) => "not_found",
            AdapterError::RateLimited { .. } => "rate_limited",
            AdapterError::Unavailable { .. } => "unavailable",
            AdapterError::NoAnswer(_) => "no_answer",
            AdapterError::ActionNotPermitted { .. } => "action_not_permitted",
            AdapterError::Redirected { .. } => "redirected",
            AdapterError::Listing(_) => "listing",
            AdapterError::Rejected { .. } => "rejected",
            AdapterError::Decode(_) => "decode",
            AdapterError::Unsupported(_) => "unsupported",
            AdapterError::Config(_) => "config",
        }
    }

    /// Whether the error says the credentials are wrong (a sync must then remove nothing).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            AdapterError::Unauthorized(_) | AdapterError::Forbidden(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_retryable_and_refusals_are_not() {
        assert!(AdapterError::Connect("refused".into()).is_retryable());
        assert!(AdapterError::Timeout("30s".into()).is_retryable());
        assert!(AdapterError::Unavailable {
            status: Some(503),
            retry_after: None,
            message: String::new()
        }
        .is_retryable());
        let limited = AdapterError::RateLimited {
            retry_after: Some(Duration::from_secs(2)),
            message: "slow".into(),
        };
        assert!(limited.is_retryable());
        assert_eq!(limited.retry_after(), Some(Duration::from_secs(2)));
        assert!(limited.to_string().contains("retry after 2s"));
        for e in [
            AdapterError::Unauthorized(String::new()),
            AdapterError::Forbidden(String::new()),
            AdapterError::NotFound(String::new()),
            AdapterError::Tls(String::new()),
            AdapterError::Rejected {
                status: 400,
                message: String::new(),
            },
            AdapterError::ActionNotPermitted {
                setting: "Remote lock".into(),
                message: String::new(),
            },
            AdapterError::Decode(String::new()),
            AdapterError::Redirected {
                status: 307,
                location: "https://elsewhere.example/".into(),
                why: String::new(),
            },
        ] {
            assert!(!e.is_retryable(), "{e}");
            assert_eq!(e.retry_after(), None);
        }
    }

    #[test]
    fn action_not_permitted_names_the_console_setting() {
        let e = AdapterError::ActionNotPermitted {
            setting: "Remote Wipe".into(),
            message: "forbidden".into(),
        };
        assert!(e.to_string().contains("Remote Wipe"));
        assert_eq!(e.class(), "action_not_permitted");
    }
}
