//! Pass one: the files as written, with the span of every value that pass two
//! checks.
//!
//! Every struct denies unknown fields. Fields are optional even where the
//! config requires them, so a missing key becomes a semantic error with a good
//! message (and does not stop the other checks); enum-like values (`kind`,
//! `action`, `mode`, …) are strings here for the same reason.

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use toml::Spanned;

/// The main file.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMain {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub tenants: RawTenants,
    #[serde(default)]
    pub sync: RawSync,
    #[serde(default)]
    pub dispatch: RawDispatch,
    #[serde(default)]
    pub ise: RawIse,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    pub listen: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub header_read_timeout: Option<Spanned<RawDuration>>,
    pub idle_timeout: Option<Spanned<RawDuration>>,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStore {
    pub path: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub token: Option<Spanned<RawSecret>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenants {
    pub dir: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSync {
    pub full_sync_every: Option<Spanned<RawDuration>>,
    pub max_removal_percent: Option<Spanned<i64>>,
    pub initial_sync: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDispatch {
    pub max_attempts: Option<Spanned<i64>>,
    pub give_up_after: Option<Spanned<RawDuration>>,
    pub per_mdm_concurrency: Option<Spanned<i64>>,
}

/// The main file's `[ise]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIse {
    pub enabled: Option<Spanned<bool>>,
    pub query_max_size: Option<Spanned<i64>>,
    pub redirect_url: Option<Spanned<String>>,
}

/// One tenant file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenant {
    pub id: Option<Spanned<String>>,
    pub display_name: Option<Spanned<String>>,
    pub agent_secret: Option<Spanned<RawSecret>>,
    /// Spanned so errors about a whole entry point at its `[[mdm]]` header
    /// (array-of-tables entries always carry a span; a plain sub-table written
    /// with dotted keys would not, so sub-tables are never `Spanned`).
    #[serde(default)]
    pub mdm: Vec<Spanned<RawMdm>>,
    #[serde(default)]
    pub policy: RawPolicy,
    pub ise: Option<RawTenantIse>,
}

/// A tenant file's `[ise]`: the credentials of the tenant's Cisco ISE.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTenantIse {
    pub username: Option<Spanned<String>>,
    pub password: Option<Spanned<RawSecret>>,
    pub noncompliant_at: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMdm {
    pub name: Option<Spanned<String>>,
    pub kind: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub enabled: Option<bool>,
    pub background_sync: Option<bool>,
    pub mask_pii: Option<bool>,
    pub ca_cert: Option<Spanned<String>>,
    pub wifi_disconnect_profile_id: Option<Spanned<String>>,
    pub wifi_profile_removal_minutes: Option<Spanned<i64>>,
    pub credentials: Option<RawCredentials>,
    #[serde(default)]
    pub permit: RawPermit,
    pub risk_signal: Option<RawRiskSignal>,
}

/// `[mdm.risk_signal]`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRiskSignal {
    pub enabled: Option<bool>,
    pub name: Option<Spanned<String>>,
}

/// The union of every kind's credential keys; pass two checks which belong to
/// the entry's kind (a tagged enum would lose spans and key names).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredentials {
    pub client_id: Option<Spanned<RawSecret>>,
    pub client_secret: Option<Spanned<RawSecret>>,
    pub username: Option<Spanned<RawSecret>>,
    pub password: Option<Spanned<RawSecret>>,
    pub api_key: Option<Spanned<RawSecret>>,
    pub access_key: Option<Spanned<RawSecret>>,
    pub secret_key: Option<Spanned<RawSecret>>,
    pub dm_code: Option<Spanned<RawSecret>>,
    pub billing_id: Option<Spanned<RawSecret>>,
    pub app_id: Option<Spanned<RawSecret>>,
    pub app_version: Option<Spanned<RawSecret>>,
    pub platform_id: Option<Spanned<RawSecret>>,
    pub app_access_key: Option<Spanned<RawSecret>>,
}

impl RawCredentials {
    /// Every key with its value, in a fixed order.
    pub fn entries(&self) -> [(&'static str, Option<&Spanned<RawSecret>>); 13] {
        [
            ("client_id", self.client_id.as_ref()),
            ("client_secret", self.client_secret.as_ref()),
            ("username", self.username.as_ref()),
            ("password", self.password.as_ref()),
            ("api_key", self.api_key.as_ref()),
            ("access_key", self.access_key.as_ref()),
            ("secret_key", self.secret_key.as_ref()),
            ("dm_code", self.dm_code.as_ref()),
            ("billing_id", self.billing_id.as_ref()),
            ("app_id", self.app_id.as_ref()),
            ("app_version", self.app_version.as_ref()),
            ("platform_id", self.platform_id.as_ref()),
            ("app_access_key", self.app_access_key.as_ref()),
        ]
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPermit {
    pub lock: Option<bool>,
    pub disconnect_wifi: Option<Spanned<bool>>,
    pub enterprise_wipe: Option<bool>,
    pub wipe: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub mode: Option<Spanned<String>>,
    pub action_cooldown_minutes: Option<Spanned<i64>>,
    pub max_destructive_actions_per_hour: Option<Spanned<i64>>,
    #[serde(default)]
    pub rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub threat: Option<Spanned<String>>,
    pub min_severity: Option<Spanned<String>>,
    /// Each element as any TOML value, so pass two reports a non-string at
    /// the element (and keeps checking the others) with a message of ours.
    pub groups: Option<Vec<Spanned<toml::Value>>>,
    pub action: Option<Spanned<String>>,
}

/// A secret as written: `"literal"`, `{ env = "VAR" }` or `{ file = "path" }`.
///
/// The deserializer is written by hand so that no error it produces quotes
/// the value (serde's default "invalid type: integer `1234`" would).
pub(super) enum RawSecret {
    Literal(String),
    Env(String),
    File(String),
}

impl fmt::Debug for RawSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawSecret::Literal(_) => f.write_str("Literal(**REDACTED**)"),
            RawSecret::Env(var) => f.debug_tuple("Env").field(var).finish(),
            RawSecret::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

const SECRET_FORMS: &str = "a string, { env = \"VAR\" } or { file = \"path\" }";

impl<'de> Deserialize<'de> for RawSecret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SecretVisitor)
    }
}

struct SecretVisitor;

impl SecretVisitor {
    fn found<E: de::Error>(what: &str) -> E {
        E::custom(format!("expected {SECRET_FORMS}, found {what}"))
    }
}

impl<'de> Visitor<'de> for SecretVisitor {
    type Value = RawSecret;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SECRET_FORMS)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawSecret, E> {
        Ok(RawSecret::Literal(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<RawSecret, E> {
        Ok(RawSecret::Literal(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawSecret, E> {
        Err(Self::found("a boolean"))
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawSecret, E> {
        Err(Self::found("an integer (quote it to make it a string)"))
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawSecret, E> {
        Err(Self::found("an integer (quote it to make it a string)"))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawSecret, E> {
        Err(Self::found("a float (quote it to make it a string)"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<RawSecret, A::Error> {
        Err(Self::found("an array"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawSecret, A::Error> {
        let mut env: Option<String> = None;
        let mut file: Option<String> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "env" if env.is_none() => env = Some(map.next_value()?),
                "file" if file.is_none() => file = Some(map.next_value()?),
                "env" | "file" => return Err(de::Error::duplicate_field("env or file")),
                // toml hands date-times to visitors as a private one-key map.
                k if k.starts_with("$__toml") => {
                    map.next_value::<IgnoredAny>()?;
                    return Err(Self::found("a date-time"));
                }
                other => {
                    map.next_value::<IgnoredAny>()?;
                    return Err(de::Error::custom(format!(
                        "unknown key `{other}` in a secret, expected {{ env = \"VAR\" }} or {{ file = \"path\" }}"
                    )));
                }
            }
        }
        match (env, file) {
            (Some(var), None) => Ok(RawSecret::Env(var)),
            (None, Some(path)) => Ok(RawSecret::File(path)),
            (Some(_), Some(_)) => Err(de::Error::custom(
                "a secret takes either `env` or `file`, not both",
            )),
            (None, None) => Err(Self::found("an empty table")),
        }
    }
}

/// A duration as written: a string (`"4h"`, `"0"`) or a bare integer, which
/// pass two accepts only as `0`.
pub(super) enum RawDuration {
    Text(String),
    Number(i64),
}

pub(super) const DURATION_FORMS: &str =
    "a duration such as \"4h\", \"90s\", \"30m\" or \"1h30m\", or \"0\" for off";

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(DURATION_FORMS)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        deserializer.deserialize_any(V)
    }
}
