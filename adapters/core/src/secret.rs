//! A credential value that never prints.
//!
//! `Debug` and `Display` both print `**REDACTED**`, so a secret can sit in any
//! config struct that derives `Debug` without leaking through logs or errors;
//! the clear value is reachable only through [`Secret::expose`], at the point of use.

use std::fmt;

/// A resolved secret (password, API key, signing key). Prints `**REDACTED**`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a clear value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The clear value. Call it only where the value is sent or used as a key.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the value is empty (an empty secret is a configuration error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "**REDACTED**");
        assert_eq!(format!("{s}"), "**REDACTED**");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(**REDACTED**)");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }
}
