//! Tests of the whole load: the shipped example, the broken fixtures the CLI
//! tests use, secrets in every form and their redaction, defaults, policy.

use super::*;
use std::fs;
use std::path::Path;
use tempfile::TempDir;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Writes `files` (relative path → content) into a fresh directory.
fn tree(files: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (rel, content) in files {
        let path = dir.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    dir
}

const MINIMAL_TENANT: &str = r#"
id = "acme"
agent_secret = { file = "agent" }

[[mdm]]
name = "Acme SOTI"
kind = "soti"
url = "https://acme.mobicontrol.example/MobiControl"
[mdm.credentials]
client_id = "cid"
client_secret = { file = "agent" }
username = "api"
password = { file = "agent" }
"#;

fn load_tree(files: &[(&str, &str)]) -> (TempDir, Result<Config, ConfigErrors>) {
    let dir = tree(files);
    let result = load(&dir.path().join("main.toml"));
    (dir, result)
}

fn errors_of(files: &[(&str, &str)]) -> Vec<ConfigError> {
    match load_tree(files).1 {
        Ok(c) => panic!("expected errors, loaded {c:?}"),
        Err(e) => e.0,
    }
}

fn only_error(files: &[(&str, &str)]) -> ConfigError {
    let errors = errors_of(files);
    assert_eq!(
        errors.len(),
        1,
        "expected one error, got: {}",
        ConfigErrors(errors.clone())
    );
    errors.into_iter().next().unwrap()
}

// ---- the shipped example ------------------------------------------------

#[test]
fn the_example_config_and_its_tenants_load_without_errors_or_warnings() {
    let config = load(&repo("config.example.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        config.warnings.is_empty(),
        "warnings: {:#?}",
        config.warnings
    );
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.store.path, repo("data/mtd-connector.db"));
    assert_eq!(config.tenants_dir, repo("examples/tenants.d"));
    assert!(config.admin.token.is_some());
    assert_eq!(config.sync, SyncConfig::default());
    assert_eq!(config.dispatch, DispatchConfig::default());
    assert_eq!(config.server.tls, None);
    assert_eq!(config.ise, IseConfig::default());
    let kinds: Vec<MdmKind> = config
        .tenants
        .iter()
        .flat_map(|t| t.mdms.iter().map(|m| m.kind))
        .collect();
    for kind in MdmKind::ALL {
        assert!(kinds.contains(&kind), "no example tenant with kind {kind}");
    }
    for t in &config.tenants {
        assert!(!t.policy.rules.is_empty(), "tenant {} has no rules", t.id);
        for m in &t.mdms {
            assert!(!m.enabled, "{}: example URLs point at no real MDM", m.name);
        }
    }
}

#[test]
fn the_example_policies_decide_as_their_comments_say() {
    let config = load(&repo("config.example.toml")).unwrap();
    let acme = config
        .tenants
        .iter()
        .find(|t| t.mdms[0].kind == MdmKind::Soti)
        .unwrap();
    let decide = |t: &str, s| acme.policy.decide(t, s, &[]).map(|r| r.action);
    assert_eq!(
        decide("network.arp_mitm", Severity::High),
        Some(ActionKind::DisconnectWifi)
    );
    assert_eq!(
        decide("device.jailbroken_rooted", Severity::Low),
        Some(ActionKind::Lock)
    );
    assert_eq!(
        decide("app.malicious", Severity::Critical),
        Some(ActionKind::EnterpriseWipe)
    );
    assert_eq!(
        decide("app.malicious", Severity::Medium),
        Some(ActionKind::None)
    );
    assert_eq!(
        decide("phishing.url", Severity::Low),
        Some(ActionKind::None)
    );
}

// ---- the broken fixtures (the CLI tests print these) ---------------------

/// Loads `tests/fixtures/config/NAME/config.toml` and returns its only error.
fn fixture_error(name: &str) -> ConfigError {
    let errors = match load(&repo(&format!("tests/fixtures/config/{name}/config.toml"))) {
        Ok(_) => panic!("fixture {name} loaded"),
        Err(e) => e.0,
    };
    assert_eq!(errors.len(), 1, "{name}: {}", ConfigErrors(errors.clone()));
    errors.into_iter().next().unwrap()
}

fn assert_at(e: &ConfigError, file: &str, line: usize, col: usize, needle: &str) {
    assert!(e.file.ends_with(file), "{e}: expected the error in {file}");
    assert_eq!((e.line, e.col), (line, col), "{e}");
    assert!(
        e.message.contains(needle),
        "{e}: expected it to contain {needle:?}"
    );
}

#[test]
fn an_unknown_key_is_reported_at_the_key_and_named() {
    let e = fixture_error("unknown-key");
    assert_at(
        &e,
        "unknown-key/tenants.d/acme.toml",
        9,
        1,
        "unknown field `mask_pi`",
    );
}

#[test]
fn a_wrong_type_is_reported_at_the_value_with_the_dotted_key() {
    let e = fixture_error("wrong-type");
    assert_at(
        &e,
        "wrong-type/tenants.d/acme.toml",
        9,
        19,
        "`mdm.background_sync`: invalid type: string \"yes\", expected a boolean",
    );
}

#[test]
fn a_duplicate_mdm_name_is_reported_at_the_second_name() {
    let e = fixture_error("duplicate-mdm-name");
    assert_at(
        &e,
        "duplicate-mdm-name/tenants.d/acme.toml",
        16,
        8,
        "`mdm.name`: duplicate MDM name `Acme SOTI`",
    );
    assert!(e.message.contains("line 6"), "{e}");
}

#[test]
fn an_invalid_action_is_reported_at_the_action() {
    let e = fixture_error("invalid-action");
    assert_at(
        &e,
        "invalid-action/tenants.d/acme.toml",
        17,
        10,
        "`policy.rule.action`: unknown action `reboot`",
    );
}

#[test]
fn a_missing_credential_is_reported_at_the_credentials_table() {
    let e = fixture_error("missing-credential");
    assert_at(
        &e,
        "missing-credential/tenants.d/acme.toml",
        9,
        1,
        "`mdm.credentials.client_secret` is required for kind soti",
    );
}

#[test]
fn a_duplicate_tenant_id_is_reported_in_the_second_file_naming_the_first() {
    let e = fixture_error("duplicate-tenant-id");
    assert_at(
        &e,
        "duplicate-tenant-id/tenants.d/b-acme-again.toml",
        2,
        6,
        "`id`: tenant id `acme` is already used by",
    );
    assert!(e.message.contains("a-acme.toml"), "{e}");
}

#[test]
fn a_bad_duration_is_reported_at_the_value_with_the_accepted_forms() {
    let e = fixture_error("bad-duration");
    assert_at(
        &e,
        "bad-duration/config.toml",
        6,
        19,
        "`sync.full_sync_every`: invalid duration `daily`",
    );
    assert!(
        e.message.contains("\"4h\"") && e.message.contains("\"0\""),
        "{e}"
    );
}

#[test]
fn a_rule_group_of_an_unknown_mdm_is_reported_at_the_group() {
    let e = fixture_error("unknown-group-mdm");
    assert_at(
        &e,
        "unknown-group-mdm/tenants.d/acme.toml",
        17,
        40,
        "`policy.rule.groups`: `Globex SOTI \\\\Company\\Sales` does not start with the name of an MDM",
    );
    assert!(
        e.message
            .ends_with("(the MDMs of this tenant: `Acme SOTI`)"),
        "{e}"
    );
}

// ---- errors from whole trees ---------------------------------------------

#[test]
fn errors_from_every_file_are_collected_in_file_then_line_order() {
    let errors = errors_of(&[
        (
            "main.toml",
            "[sync]\nmax_removal_percent = 101\nfull_sync_every = \"soon\"\n",
        ),
        ("tenants.d/a.toml", "id = \"A\"\nagent_secret = \"x\"\n"),
        (
            "tenants.d/b.toml",
            "id = \"b\"\nagent_secret = \"x\"\nwat = 1\n",
        ),
        ("tenants.d/notes.txt", "not a tenant"),
    ]);
    let lines: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "{}:{}:{}",
                e.file.file_name().unwrap().to_string_lossy(),
                e.line,
                e.col
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            "main.toml:2:23",
            "main.toml:3:19",
            "a.toml:1:6",
            "b.toml:3:1"
        ],
        "{}",
        ConfigErrors(errors)
    );
}

#[test]
fn a_missing_tenants_directory_is_reported_at_the_key_or_at_the_start() {
    let e = only_error(&[("main.toml", "[tenants]\ndir = \"nowhere\"\n")]);
    assert_eq!((e.line, e.col), (2, 7), "{e}");
    assert!(
        e.message.contains("`tenants.dir`")
            && e.message.contains("nowhere")
            && e.message.contains("does not exist"),
        "{e}"
    );

    let e = only_error(&[("main.toml", "")]);
    assert_eq!((e.line, e.col), (1, 1), "{e}");
    assert!(e.message.contains("tenants.d"), "{e}");
}

#[test]
fn a_toml_syntax_error_is_reported_at_its_position() {
    let e = only_error(&[
        ("main.toml", "[server]\nlisten = \"127.0.0.1:8080\nx"),
        ("tenants.d/.keep", ""),
    ]);
    assert_eq!(e.line, 2, "{e}");
    assert!(e.message.starts_with("invalid TOML"), "{e}");
}

#[test]
fn semantic_checks_name_the_key_at_fault() {
    let tenant = r#"
id = "acme"
agent_secret = { file = "agent" }
[[mdm]]
name = ""
kind = "intune"
url = "ftp://x.example/"
[[mdm]]
name = "B"
kind = "bcdm"
url = "https://user:pw@b.example/"
wifi_disconnect_profile_id = "p"
[mdm.credentials]
access_key = "k"
secret_key = { file = "agent" }
dm_code = "d"
api_key = "nope"
[[mdm]]
name = "C"
kind = "airwatch"
url = "not a url"
wifi_profile_removal_minutes = 0
ca_cert = "missing.pem"
[mdm.credentials]
username = "u"
password = { env = "MTD_CONFIG_TEST_SURELY_UNSET" }
api_key = { file = "no-such-file" }
[mdm.permit]
disconnect_wifi = true
[policy]
mode = "audit"
[[policy.rule]]
threat = "Network.ARP"
min_severity = "severe"
action = "lock"
[[policy.rule]]
action = "lock"
"#;
    let errors = errors_of(&[
        ("main.toml", "[server]\nlisten = \"localhost\"\n"),
        ("tenants.d/acme.toml", tenant),
        ("tenants.d/agent", "s3cr3t\n"),
    ]);
    let text = ConfigErrors(errors.clone()).to_string();
    for needle in [
        "main.toml:2:10: `server.listen`: invalid socket address",
        "acme.toml:5:8: `mdm.name` must not be empty",
        "acme.toml:6:8: `mdm.kind`: unknown MDM kind `intune`, expected one of: soti, maas360 (alias: mcms), airwatch, bcdm",
        "acme.toml:7:7: `mdm.url`: scheme `ftp` is not supported",
        "acme.toml:11:7: `mdm.url` must not contain a user name or password",
        "acme.toml:12:30: `mdm.wifi_disconnect_profile_id` is not accepted for kind bcdm",
        "acme.toml:17:11: `mdm.credentials.api_key` is not a credential of kind bcdm (expected access_key, secret_key, dm_code)",
        "acme.toml:21:7: `mdm.url`: not a valid URL",
        "acme.toml:22:32: `mdm.wifi_profile_removal_minutes` must be at least 1",
        "acme.toml:23:11: `mdm.ca_cert`: cannot read CA certificate",
        "acme.toml:26:12: `mdm.credentials.password`: environment variable MTD_CONFIG_TEST_SURELY_UNSET is not set",
        "acme.toml:27:11: `mdm.credentials.api_key`: cannot read secret file",
        "acme.toml:29:19: `mdm.wifi_disconnect_profile_id` is required for kind airwatch when `mdm.permit.disconnect_wifi = true`",
        "acme.toml:31:8: `policy.mode`: unknown mode `audit`",
        "acme.toml:33:10: `policy.rule.threat`: invalid threat pattern `Network.ARP`",
        "acme.toml:34:16: `policy.rule.min_severity`: unknown severity `severe`",
        "acme.toml:36:1: `policy.rule.threat` is required",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert_eq!(errors.len(), 17, "{text}");
}

#[test]
fn credentials_of_another_kind_and_missing_ones_are_both_reported() {
    let tenant =
        MINIMAL_TENANT.replace("client_id = \"cid\"\n", "api_key = { file = \"agent\" }\n");
    let errors = errors_of(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", &tenant),
        ("tenants.d/agent", "s"),
    ]);
    let text = ConfigErrors(errors).to_string();
    assert!(
        text.contains("acme.toml:9:1: `mdm.credentials.client_id` is required for kind soti"),
        "{text}"
    );
    assert!(text.contains("acme.toml:10:11: `mdm.credentials.api_key` is not a credential of kind soti (expected client_id, client_secret, username, password)"), "{text}");
}

#[test]
fn a_missing_credentials_table_is_reported_at_the_mdm_entry() {
    let tenant = &MINIMAL_TENANT[..MINIMAL_TENANT.find("[mdm.credentials]").unwrap()];
    let e = only_error(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", tenant),
        ("tenants.d/agent", "s"),
    ]);
    assert_eq!((e.line, e.col), (5, 1), "{e}");
    assert!(
        e.message
            .contains("`mdm.credentials` is required for kind soti"),
        "{e}"
    );
}

#[test]
fn inline_credentials_tables_are_accepted_and_a_wrong_type_inside_is_named() {
    let tenant = r#"
id = "acme"
agent_secret = { file = "agent" }
[[mdm]]
name = "M"
kind = "airwatch"
url = "https://m.example"
credentials = { username = "u", password = { file = "agent" }, api_key = { file = "agent" } }
permit = { lock = "yes" }
"#;
    let e = only_error(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", tenant),
        ("tenants.d/agent", "s"),
    ]);
    assert_eq!((e.line, e.col), (9, 19), "{e}");
    assert!(
        e.message
            .starts_with("`mdm.permit.lock`: invalid type: string \"yes\", expected a boolean"),
        "{e}"
    );
}

// ---- MaaS360 (Cisco MCMS) and AirWatch ----------------------------------

const MAAS360_TENANT: &str = r#"
id = "acme"
agent_secret = { file = "agent" }

[[mdm]]
name = "Acme MaaS360"
kind = "KIND"
url = "https://services.m3.maas360.com"
[mdm.credentials]
billing_id = "30012345"
app_id = "com.acme.mtd"
app_version = "1.0"
platform_id = "3"
app_access_key = { file = "agent" }
username = "mtd-api"
password = { file = "agent" }
"#;

#[test]
fn maas360_and_its_alias_mcms_load_with_the_seven_credentials() {
    for kind in ["maas360", "mcms"] {
        let tenant = MAAS360_TENANT.replace("KIND", kind);
        let (_dir, config) = load_tree(&[
            ("main.toml", ""),
            ("tenants.d/acme.toml", &tenant),
            ("tenants.d/agent", "s3cr3t-value"),
        ]);
        let config = config.unwrap_or_else(|e| panic!("{kind}: {e}"));
        let mdm = &config.tenants[0].mdms[0];
        assert_eq!(mdm.kind, MdmKind::Maas360, "{kind}");
        match &mdm.credentials {
            Credentials::Maas360 {
                billing_id,
                app_id,
                app_version,
                platform_id,
                app_access_key,
                username,
                password,
            } => {
                assert_eq!(
                    (billing_id.as_str(), app_id.as_str(), app_version.as_str()),
                    ("30012345", "com.acme.mtd", "1.0")
                );
                assert_eq!((platform_id.as_str(), username.as_str()), ("3", "mtd-api"));
                assert_eq!(app_access_key.expose(), "s3cr3t-value");
                assert_eq!(password.expose(), "s3cr3t-value");
                assert!(!format!("{:?}", mdm.credentials).contains("s3cr3t"));
            }
            other => panic!("{kind}: {other:?}"),
        }
    }
}

#[test]
fn kind_mcms_with_airwatch_credentials_is_refused_at_the_kind_naming_airwatch() {
    let tenant = r#"
id = "acme"
agent_secret = { file = "agent" }
[[mdm]]
name = "Old MCMS"
kind = "mcms"
url = "https://as1506.awmdm.com"
[mdm.credentials]
username = "api"
password = { file = "agent" }
api_key = { file = "agent" }
"#;
    let e = only_error(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", tenant),
        ("tenants.d/agent", "s"),
    ]);
    assert_eq!((e.line, e.col), (6, 8), "{e}");
    assert!(e.message.contains("kind = \"airwatch\""), "{e}");
    assert!(e.message.contains("MaaS360"), "{e}");
}

#[test]
fn a_maas360_entry_refuses_the_wifi_profile_keys_and_airwatch_credentials() {
    let tenant = MAAS360_TENANT.replace("KIND", "maas360").replace(
        "[mdm.credentials]",
        "wifi_disconnect_profile_id = \"7\"\n[mdm.credentials]",
    );
    let e = only_error(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", &tenant),
        ("tenants.d/agent", "s"),
    ]);
    assert_eq!((e.line, e.col), (9, 30), "{e}");
    assert!(
        e.message.contains(
            "not accepted for kind maas360: MaaS360 has no call to take a device off Wi-Fi"
        ),
        "{e}"
    );

    let tenant = MAAS360_TENANT
        .replace("KIND", "maas360")
        .replace("platform_id = \"3\"\n", "api_key = \"k\"\n");
    let text = ConfigErrors(errors_of(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", &tenant),
        ("tenants.d/agent", "s"),
    ]))
    .to_string();
    assert!(
        text.contains("`mdm.credentials.platform_id` is required for kind maas360"),
        "{text}"
    );
    assert!(
        text.contains("`mdm.credentials.api_key` is not a credential of kind maas360"),
        "{text}"
    );
}

// ---- secrets ---------------------------------------------------------------

#[test]
fn secrets_resolve_from_literals_env_vars_and_files() {
    std::env::set_var("MTD_CONFIG_TEST_PASSWORD", "pw-from-env");
    let tenant = r#"
id = "acme"
agent_secret = "literal-agent-secret"
[[mdm]]
name = "S"
kind = "soti"
url = "https://s.example/MobiControl"
[mdm.credentials]
client_id = { file = "secrets/client-id" }
client_secret = { file = "secrets/client-secret" }
username = "api"
password = { env = "MTD_CONFIG_TEST_PASSWORD" }
"#;
    let (_dir, result) = load_tree(&[
        ("main.toml", "[admin]\ntoken = { file = \"admin-token\" }\n"),
        ("admin-token", "admin-token-0123456789\r\n"),
        ("tenants.d/acme.toml", tenant),
        ("tenants.d/secrets/client-id", "cid\n"),
        ("tenants.d/secrets/client-secret", "line1\nline2\n\n"),
    ]);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.admin.token.as_ref().unwrap().expose(),
        "admin-token-0123456789"
    );
    let t = &config.tenants[0];
    assert_eq!(t.agent_secret.expose(), "literal-agent-secret");
    match &t.mdms[0].credentials {
        Credentials::Soti {
            client_id,
            client_secret,
            username,
            password,
        } => {
            assert_eq!(client_id, "cid");
            // Only the one trailing newline is trimmed.
            assert_eq!(client_secret.expose(), "line1\nline2\n");
            assert_eq!(username, "api");
            assert_eq!(password.expose(), "pw-from-env");
        }
        other => panic!("{other:?}"),
    }
    // Literal secrets warn (identifiers such as `username` do not).
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].ends_with("acme.toml:3:16: `agent_secret` is a literal; use { env = … } or { file = … } in production"), "{:?}", config.warnings);
}

#[test]
fn empty_and_malformed_secrets_are_errors() {
    std::env::set_var("MTD_CONFIG_TEST_EMPTY", "");
    let tenant = r#"
id = "acme"
agent_secret = ""
[[mdm]]
name = "B"
kind = "bcdm"
url = "https://b.example"
[mdm.credentials]
access_key = { env = "MTD_CONFIG_TEST_EMPTY" }
secret_key = { env = "X", file = "y" }
dm_code = 42
"#;
    let errors = errors_of(&[
        ("main.toml", "admin.token = { file = \"empty\" }\n"),
        ("empty", "\n"),
        ("tenants.d/acme.toml", tenant),
    ]);
    let text = ConfigErrors(errors).to_string();
    // serde stops at the first error of a file: the malformed `secret_key`.
    assert!(text.contains("acme.toml:10:14: `mdm.credentials.secret_key`: a secret takes either `env` or `file`, not both"), "{text}");
    assert!(
        text.contains("main.toml:1:15: `admin.token` is empty (secret file"),
        "{text}"
    );

    let tenant = tenant.replace(
        "secret_key = { env = \"X\", file = \"y\" }",
        "secret_key = \"k\"",
    );
    let text = ConfigErrors(errors_of(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", &tenant),
    ]))
    .to_string();
    assert!(text.contains("acme.toml:11:11: `mdm.credentials.dm_code`: expected a string, { env = \"VAR\" } or { file = \"path\" }, found an integer"), "{text}");
    assert!(!text.contains("42"), "{text}");

    let tenant = tenant.replace("dm_code = 42", "dm_code = \"d\"");
    let text = ConfigErrors(errors_of(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", &tenant),
    ]))
    .to_string();
    assert!(
        text.contains("acme.toml:3:16: `agent_secret` is empty"),
        "{text}"
    );
    assert!(text.contains("acme.toml:9:14: `mdm.credentials.access_key` is empty (environment variable MTD_CONFIG_TEST_EMPTY is empty)"), "{text}");
}

#[test]
fn no_secret_value_appears_in_debug_output_warnings_or_errors() {
    const SECRETS: [&str; 6] = [
        "S3cret-admin-token-1",
        "S3cret-agent-literal-2",
        "S3cret-client-secret-file-3",
        "S3cret-password-env-4",
        "S3cret-api-key-literal-5",
        "S3cret-bcdm-secret-key-6",
    ];
    std::env::set_var("MTD_CONFIG_TEST_REDACT_PASSWORD", SECRETS[3]);
    let main = format!("[admin]\ntoken = \"{}\"\n", SECRETS[0]);
    let acme = format!(
        r#"id = "acme"
agent_secret = "{agent}"
[[mdm]]
name = "S"
kind = "soti"
url = "https://s.example/MobiControl"
[mdm.credentials]
client_id = "cid"
client_secret = {{ file = "client-secret" }}
username = "u"
password = {{ env = "MTD_CONFIG_TEST_REDACT_PASSWORD" }}
[[mdm]]
name = "M"
kind = "airwatch"
url = "https://m.example"
[mdm.credentials]
username = "u"
password = {{ env = "MTD_CONFIG_TEST_REDACT_PASSWORD" }}
api_key = "{api}"
"#,
        agent = SECRETS[1],
        api = SECRETS[4]
    );
    let initech = format!(
        r#"id = "initech"
agent_secret = {{ file = "client-secret" }}
[[mdm]]
name = "B"
kind = "bcdm"
url = "https://b.example"
[mdm.credentials]
access_key = "ak"
secret_key = "{}"
dm_code = "dm"
"#,
        SECRETS[5]
    );
    let files = [
        ("main.toml", main.as_str()),
        ("tenants.d/acme.toml", acme.as_str()),
        ("tenants.d/initech.toml", initech.as_str()),
        ("tenants.d/client-secret", SECRETS[2]),
    ];
    let (_dir, result) = load_tree(&files);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    let mut outputs = vec![
        format!("{config:?}"),
        format!("{config:#?}"),
        config.warnings.join("\n"),
    ];
    for t in &config.tenants {
        outputs.push(format!("{t:?}"));
        for m in &t.mdms {
            outputs.push(format!("{m:?} {:?}", m.credentials));
        }
    }
    // admin.token, agent_secret, api_key and secret_key are literals.
    assert_eq!(config.warnings.len(), 4, "{:#?}", config.warnings);

    // Broken variants: every secret field next to something wrong, and
    // secrets written where they do not belong.
    let broken_acme = acme
        .replace(
            "kind = \"airwatch\"",
            "kind = \"airwatch\"\nwifi_profile_removal_minutes = -1",
        )
        .replace("name = \"S\"", "name = \"M\"");
    let broken_initech = initech.replace("secret_key = \"", "api_key = \"");
    let broken_main = format!(
        "[admin]\ntoken = \"{}\"\n[sync]\nfull_sync_every = \"{}\"\n",
        SECRETS[0], "1x"
    );
    let broken = [
        ("main.toml", broken_main.as_str()),
        ("tenants.d/acme.toml", broken_acme.as_str()),
        ("tenants.d/initech.toml", broken_initech.as_str()),
        ("tenants.d/client-secret", SECRETS[2]),
    ];
    let (_dir, result) = load_tree(&broken);
    let errors = result.expect_err("the broken variant must not load");
    assert!(errors.0.len() >= 4, "{errors}");
    outputs.push(errors.to_string());
    outputs.push(format!("{errors:?}"));

    // A secret given in a wrong type, and an unknown key next to a secret.
    let typed = acme.replace(&format!("\"{}\"", SECRETS[4]), "12345678987654321");
    let (_dir, result) = load_tree(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", &typed),
        ("tenants.d/client-secret", SECRETS[2]),
    ]);
    let errors = result.expect_err("an integer secret must not load");
    outputs.push(errors.to_string());
    assert!(
        !errors.to_string().contains("12345678987654321"),
        "{errors}"
    );

    for output in &outputs {
        for secret in SECRETS {
            assert!(
                !output.contains(secret),
                "secret {secret:?} leaked into:\n{output}"
            );
        }
    }
}

// ---- durations and defaults ------------------------------------------------

#[test]
fn durations_accept_humantime_forms_and_zero_turns_scheduling_off() {
    let cases: [(&str, Option<u64>); 7] = [
        ("\"4h\"", Some(4 * 3600)),
        ("\"90s\"", Some(90)),
        ("\"30m\"", Some(1800)),
        ("\"1h30m\"", Some(5400)),
        ("\"0\"", None),
        ("0", None),
        ("\"0s\"", None),
    ];
    for (value, expected) in cases {
        let main = format!("[sync]\nfull_sync_every = {value}\n");
        let (_dir, result) = load_tree(&[("main.toml", &main), ("tenants.d/.keep", "")]);
        let config = result.unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(
            config.sync.full_sync_every,
            expected.map(Duration::from_secs),
            "{value}"
        );
    }
    for bad in ["\"4\"", "\"4 hrs please\"", "14400", "true", "\"-1h\""] {
        let main = format!("[sync]\nfull_sync_every = {bad}\n");
        let e = only_error(&[("main.toml", &main), ("tenants.d/.keep", "")]);
        assert_eq!((e.line, e.col), (2, 19), "{bad}: {e}");
        assert!(
            e.message.starts_with("`sync.full_sync_every`"),
            "{bad}: {e}"
        );
        assert!(e.message.contains("\"1h30m\""), "{bad}: {e}");
    }
}

#[test]
fn an_empty_main_file_and_a_minimal_tenant_get_every_default() {
    let (dir, result) = load_tree(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", MINIMAL_TENANT),
        ("tenants.d/agent", "agent-secret-0123456789\n"),
    ]);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.main_path, dir.path().join("main.toml"));
    assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(config.store.path, dir.path().join("data/mtd-connector.db"));
    assert_eq!(config.admin.token, None);
    assert_eq!(config.tenants_dir, dir.path().join("tenants.d"));
    assert_eq!(
        config.sync.full_sync_every,
        Some(Duration::from_secs(4 * 3600))
    );
    assert_eq!(config.sync.max_removal_percent, 20);
    assert_eq!(config.dispatch.max_attempts, 12);
    assert_eq!(
        config.dispatch.give_up_after,
        Duration::from_secs(24 * 3600)
    );
    assert_eq!(config.dispatch.per_mdm_concurrency, 4);
    assert_eq!(config.server.max_connections, 1024);
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(30));
    assert_eq!(config.server.idle_timeout, Duration::from_secs(30));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let t = &config.tenants[0];
    assert_eq!((t.id.as_str(), t.display_name.as_str()), ("acme", "acme"));
    assert_eq!(t.source, dir.path().join("tenants.d/acme.toml"));
    assert_eq!(t.policy, PolicyConfig::default());
    assert_eq!(t.policy.mode, PolicyMode::Enforce);
    assert_eq!(t.policy.action_cooldown_minutes, 15);
    assert_eq!(t.policy.max_destructive_actions_per_hour, 10);
    let m = &t.mdms[0];
    assert!(m.enabled);
    assert!(m.background_sync);
    assert!(!m.mask_pii);
    assert_eq!(m.ca_cert, None);
    assert_eq!(m.wifi_disconnect_profile_id, None);
    assert_eq!(m.wifi_profile_removal_minutes, 120);
    assert_eq!(
        m.permit,
        Permit {
            lock: true,
            disconnect_wifi: false,
            enterprise_wipe: false,
            wipe: false
        }
    );
    assert_eq!(
        m.url.as_str(),
        "https://acme.mobicontrol.example/MobiControl"
    );
}

#[test]
fn relative_paths_resolve_against_the_file_that_names_them() {
    let main = "[store]\npath = \"db/x.db\"\n[tenants]\ndir = \"conf/tenants\"\n";
    let tenant = MINIMAL_TENANT.replace(
        "[mdm.credentials]",
        "ca_cert = \"certs/ca.pem\"\n[mdm.credentials]",
    );
    let (dir, result) = load_tree(&[
        ("main.toml", main),
        ("conf/tenants/acme.toml", &tenant),
        ("conf/tenants/agent", "s"),
        ("conf/tenants/certs/ca.pem", "-----BEGIN CERTIFICATE-----\n"),
    ]);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.store.path, dir.path().join("db/x.db"));
    assert_eq!(config.tenants_dir, dir.path().join("conf/tenants"));
    assert_eq!(
        config.tenants[0].mdms[0].ca_cert,
        Some(dir.path().join("conf/tenants/certs/ca.pem"))
    );
}

#[test]
fn tenant_files_load_sorted_by_name_and_ids_must_be_unique() {
    let b = MINIMAL_TENANT.replace("id = \"acme\"", "id = \"beta\"");
    let (_dir, result) = load_tree(&[
        ("main.toml", ""),
        ("tenants.d/b.toml", &b),
        ("tenants.d/a.toml", MINIMAL_TENANT),
        ("tenants.d/agent", "s"),
        ("tenants.d/README.md", "ignored"),
    ]);
    let ids: Vec<String> = result.unwrap().tenants.into_iter().map(|t| t.id).collect();
    assert_eq!(ids, ["acme", "beta"]);
}

#[test]
fn rules_that_can_never_act_are_warnings_not_errors() {
    let tenant = format!(
        "{MINIMAL_TENANT}[[policy.rule]]\nthreat = \"*\"\naction = \"wipe\"\n[[policy.rule]]\nthreat = \"network.arp_mitm\"\naction = \"lock\"\n[[policy.rule]]\nthreat = \"malware.*\"\naction = \"none\"\n"
    );
    let (_dir, result) = load_tree(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", &tenant),
        ("tenants.d/agent", "s"),
    ]);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    let w = config.warnings.join("\n");
    assert!(w.contains("acme.toml:16:10: `policy.rule.action`: `wipe` is not permitted on any MDM of this tenant"), "{w}");
    assert!(w.contains("acme.toml:18:10: `policy.rule.threat`: this rule never matches: the rule `*` on line 15"), "{w}");
    assert!(
        w.contains("acme.toml:21:10: `policy.rule.threat`: unknown threat category `malware`"),
        "{w}"
    );
}

// ---- policy ------------------------------------------------------------------

#[test]
fn threat_patterns_parse_and_match() {
    let p = |s: &str| s.parse::<ThreatPattern>();
    assert_eq!(p("*"), Ok(ThreatPattern::Any));
    assert_eq!(
        p("network.*"),
        Ok(ThreatPattern::Category("network".into()))
    );
    assert_eq!(
        p("network.arp_mitm"),
        Ok(ThreatPattern::Exact("network.arp_mitm".into()))
    );
    for bad in [
        "",
        "network",
        "network.",
        ".x",
        "Network.x",
        "a.b.c",
        "a.*.b",
        "a-b.c",
        "**",
        "*.x",
    ] {
        assert!(p(bad).is_err(), "{bad:?} parsed");
    }
    assert!(ThreatPattern::Any.matches("anything.at_all"));
    let cat = p("network.*").unwrap();
    assert!(cat.matches("network.arp_mitm"));
    assert!(cat.matches("network.brand_new"));
    assert!(!cat.matches("networks.arp_mitm"));
    assert!(!cat.matches("device.jailbroken_rooted"));
    let exact = p("network.arp_mitm").unwrap();
    assert!(exact.matches("network.arp_mitm"));
    assert!(!exact.matches("network.arp_mitm2"));
    assert_eq!(cat.to_string(), "network.*");
}

#[test]
fn the_first_matching_rule_decides_and_min_severity_is_a_floor() {
    let rule = |threat: &str, min: Option<Severity>, action| Rule {
        threat: threat.parse().unwrap(),
        min_severity: min,
        groups: Vec::new(),
        action,
    };
    let policy = PolicyConfig {
        rules: vec![
            rule(
                "app.malicious",
                Some(Severity::High),
                ActionKind::EnterpriseWipe,
            ),
            rule("network.arp_mitm", None, ActionKind::DisconnectWifi),
            rule("network.*", Some(Severity::Critical), ActionKind::Lock),
            rule("*", None, ActionKind::None),
        ],
        ..PolicyConfig::default()
    };
    let decide = |t, s| policy.decide(t, s, &[]).map(|r| r.action);
    assert_eq!(
        decide("app.malicious", Severity::High),
        Some(ActionKind::EnterpriseWipe)
    );
    assert_eq!(
        decide("app.malicious", Severity::Critical),
        Some(ActionKind::EnterpriseWipe)
    );
    assert_eq!(
        decide("app.malicious", Severity::Medium),
        Some(ActionKind::None)
    );
    // The exact rule comes first, so even a critical ARP MITM only disconnects.
    assert_eq!(
        decide("network.arp_mitm", Severity::Critical),
        Some(ActionKind::DisconnectWifi)
    );
    assert_eq!(
        decide("network.ssl_strip", Severity::Critical),
        Some(ActionKind::Lock)
    );
    assert_eq!(
        decide("network.ssl_strip", Severity::High),
        Some(ActionKind::None)
    );
    assert_eq!(
        PolicyConfig::default().decide("network.scan", Severity::Low, &[]),
        None
    );
}

#[test]
fn severities_are_ordered_and_parse_from_lowercase() {
    assert!(Severity::Low < Severity::Medium && Severity::High < Severity::Critical);
    for s in Severity::ALL {
        assert_eq!(s.as_str().parse::<Severity>(), Ok(s));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
    assert!("High".parse::<Severity>().is_err());
}

#[test]
fn permit_allows_none_always_and_the_rest_as_configured() {
    let p = Permit::default();
    assert!(p.allows(ActionKind::None) && p.allows(ActionKind::Lock));
    assert!(
        !p.allows(ActionKind::DisconnectWifi)
            && !p.allows(ActionKind::EnterpriseWipe)
            && !p.allows(ActionKind::Wipe)
    );
    let all = Permit {
        lock: false,
        disconnect_wifi: true,
        enterprise_wipe: true,
        wipe: true,
    };
    assert!(
        all.allows(ActionKind::Wipe)
            && !all.allows(ActionKind::Lock)
            && all.allows(ActionKind::None)
    );
}

// ---- [dispatch] ------------------------------------------------------------

#[test]
fn dispatch_limits_are_read_and_each_bad_value_is_reported_at_its_position() {
    let (_dir, result) = load_tree(&[
        (
            "main.toml",
            "[dispatch]\nmax_attempts = 3\ngive_up_after = \"2h\"\nper_mdm_concurrency = 16\n",
        ),
        ("tenants.d/acme.toml", MINIMAL_TENANT),
        ("tenants.d/agent", "s\n"),
    ]);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config.dispatch,
        DispatchConfig {
            max_attempts: 3,
            give_up_after: Duration::from_secs(7200),
            per_mdm_concurrency: 16,
        }
    );

    let errors = errors_of(&[
        (
            "main.toml",
            "[dispatch]\nmax_attempts = 0\ngive_up_after = \"0\"\nper_mdm_concurrency = 65\nretries = 2\n",
        ),
        ("tenants.d/acme.toml", MINIMAL_TENANT),
        ("tenants.d/agent", "s\n"),
    ]);
    let found: Vec<(usize, usize, bool)> = errors
        .iter()
        .map(|e| {
            (
                e.line,
                e.col,
                e.message.contains("dispatch.") || e.message.contains("retries"),
            )
        })
        .collect();
    // serde stops at the unknown key before the semantic checks run.
    assert_eq!(found, [(5, 1, true)], "{}", ConfigErrors(errors.clone()));

    let errors = errors_of(&[
        (
            "main.toml",
            "[dispatch]\nmax_attempts = 0\ngive_up_after = \"0\"\nper_mdm_concurrency = 65\n",
        ),
        ("tenants.d/acme.toml", MINIMAL_TENANT),
        ("tenants.d/agent", "s\n"),
    ]);
    let text = ConfigErrors(errors.clone()).to_string();
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(at, [(2, 16), (3, 17), (4, 23)], "{text}");
    assert!(
        text.contains("`dispatch.max_attempts` must be at least 1"),
        "{text}"
    );
    assert!(
        text.contains("`dispatch.give_up_after` must be longer than 0"),
        "{text}"
    );
    assert!(
        text.contains("`dispatch.per_mdm_concurrency` must be at most 64"),
        "{text}"
    );
}

// ---- [server] limits and start-up warnings (issue 13) ----------------------

#[test]
fn server_limits_are_read_and_each_bad_value_is_reported_at_its_position() {
    let (_dir, result) = load_tree(&[
        (
            "main.toml",
            "[server]\nmax_connections = 64\nheader_read_timeout = \"5s\"\nidle_timeout = \"2m\"\n",
        ),
        ("tenants.d/.keep", ""),
    ]);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.server.max_connections, 64);
    assert_eq!(config.server.header_read_timeout, Duration::from_secs(5));
    assert_eq!(config.server.idle_timeout, Duration::from_secs(120));

    let errors = errors_of(&[
        (
            "main.toml",
            "[server]\nmax_connections = 0\nheader_read_timeout = \"0\"\nidle_timeout = \"soon\"\n",
        ),
        ("tenants.d/.keep", ""),
    ]);
    let text = ConfigErrors(errors.clone()).to_string();
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(at, [(2, 19), (3, 23), (4, 16)], "{text}");
    assert!(
        text.contains("`server.max_connections` must be at least 1"),
        "{text}"
    );
    assert!(
        text.contains("`server.header_read_timeout` must be longer than 0"),
        "{text}"
    );
    assert!(
        text.contains("`server.idle_timeout`: invalid duration"),
        "{text}"
    );
    let e = only_error(&[
        ("main.toml", "[server]\nmax_connections = 1000001\n"),
        ("tenants.d/.keep", ""),
    ]);
    assert!(e.message.contains("at most 1000000"), "{e}");
}

#[test]
fn short_secrets_and_plain_http_to_another_host_are_warnings_that_never_show_the_secret() {
    let tenant = |url: &str| {
        format!(
            r#"id = "acme"
agent_secret = {{ file = "agent" }}
[[mdm]]
name = "Acme SOTI"
kind = "soti"
url = "{url}"
[mdm.credentials]
client_id = "cid"
client_secret = {{ env = "MTD_CONFIG_TEST_SECRET" }}
username = "api"
password = {{ env = "MTD_CONFIG_TEST_SECRET" }}
"#
        )
    };
    std::env::set_var("MTD_CONFIG_TEST_SECRET", "a-long-enough-secret");
    let remote = tenant("http://soti.example.com/MobiControl");
    let (_dir, result) = load_tree(&[
        ("main.toml", "[admin]\ntoken = { file = \"token\" }\n"),
        ("token", "tok-s3cr3t\n"),
        ("tenants.d/acme.toml", &remote),
        ("tenants.d/agent", "ag-s3cr3t\n"),
    ]);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    let w = config.warnings.join("\n");
    assert_eq!(config.warnings.len(), 3, "{w}");
    assert!(
        config.warnings[0].contains("main.toml:2:9: `admin.token` is shorter than 16 bytes"),
        "{w}"
    );
    assert!(
        config.warnings[1]
            .contains("acme.toml:2:16: `agent_secret` of tenant `acme` is shorter than 16 bytes"),
        "{w}"
    );
    assert!(
        config.warnings[2].contains("acme.toml:6:7: `mdm.url` of MDM `Acme SOTI` (tenant `acme`) is plain http:// to soti.example.com"),
        "{w}"
    );
    assert!(!w.contains("tok-s3cr3t") && !w.contains("ag-s3cr3t"), "{w}");

    for local in [
        "http://127.0.0.1:8900/MobiControl",
        "http://[::1]:8900/MobiControl",
        "http://localhost/MobiControl",
        "https://soti.example.com/MobiControl",
    ] {
        let t = tenant(local);
        let (_dir, result) = load_tree(&[
            ("main.toml", ""),
            ("tenants.d/acme.toml", &t),
            ("tenants.d/agent", "agent-secret-0123456789\n"),
        ]);
        let config = result.unwrap_or_else(|e| panic!("{e}"));
        assert!(config.warnings.is_empty(), "{local}: {:?}", config.warnings);
    }
}

// ---- [[mdm]] enabled ---------------------------------------------------------

#[test]
fn an_mdm_is_enabled_by_default_and_enabled_false_keeps_it_in_the_config() {
    let tenant = MINIMAL_TENANT.replace("[mdm.credentials]", "enabled = false\n[mdm.credentials]");
    let (_dir, result) = load_tree(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", &tenant),
        ("tenants.d/agent", "agent-secret-0123456789\n"),
    ]);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    let m = &config.tenants[0].mdms[0];
    assert!(!m.enabled);
    assert!(m.background_sync, "enabled does not change background_sync");
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);

    let tenant = MINIMAL_TENANT.replace("[mdm.credentials]", "enabled = true\n[mdm.credentials]");
    let (_dir, result) = load_tree(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", &tenant),
        ("tenants.d/agent", "agent-secret-0123456789\n"),
    ]);
    assert!(result.unwrap_or_else(|e| panic!("{e}")).tenants[0].mdms[0].enabled);
}

#[test]
fn a_non_boolean_enabled_is_reported_at_the_value() {
    for (value, found) in [("\"no\"", "string \"no\""), ("0", "integer `0`")] {
        let tenant = MINIMAL_TENANT.replace(
            "[mdm.credentials]",
            &format!("enabled = {value}\n[mdm.credentials]"),
        );
        let e = only_error(&[
            ("main.toml", ""),
            ("tenants.d/acme.toml", &tenant),
            ("tenants.d/agent", "s"),
        ]);
        assert_eq!((e.line, e.col), (9, 11), "{e}");
        assert!(
            e.message.starts_with(&format!(
                "`mdm.enabled`: invalid type: {found}, expected a boolean"
            )),
            "{e}"
        );
    }
}

// ---- [[policy.rule]] groups ----------------------------------------------------

/// Four MDMs: `Acme` (bcdm) is a prefix of `Acme SOTI` (soti), which keeps groups.
const GROUPS_TENANT: &str = r#"id = "acme"
agent_secret = { file = "agent" }
[[mdm]]
name = "Acme"
kind = "bcdm"
url = "https://acme.bcdm.example"
[mdm.credentials]
access_key = "k"
secret_key = { file = "agent" }
dm_code = "d"
[[mdm]]
name = "Acme SOTI"
kind = "soti"
url = "https://acme.mobicontrol.example/MobiControl"
[mdm.credentials]
client_id = "cid"
client_secret = { file = "agent" }
username = "api"
password = { file = "agent" }
[[mdm]]
name = "Acme AirWatch"
kind = "airwatch"
url = "https://acme.awmdm.example"
[mdm.credentials]
username = "u"
password = { file = "agent" }
api_key = { file = "agent" }
[[mdm]]
name = "Acme MaaS360"
kind = "maas360"
url = "https://services.m3.maas360.example"
[mdm.credentials]
billing_id = "1"
app_id = "a"
app_version = "1"
platform_id = "3"
app_access_key = { file = "agent" }
username = "u"
password = { file = "agent" }
"#;

/// `GROUPS_TENANT` (39 lines) plus `rules`, which start on line 40.
fn load_groups(rules: &str) -> (TempDir, Result<Config, ConfigErrors>) {
    let tenant = format!("{GROUPS_TENANT}{rules}");
    load_tree(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", &tenant),
        ("tenants.d/agent", "agent-secret-0123456789\n"),
    ])
}

#[test]
fn rule_groups_load_as_written_in_file_order_with_duplicates() {
    let (_dir, result) = load_groups(
        r#"[[policy.rule]]
threat = "*"
groups = ['Acme SOTI \\Company\Sales', "Acme AirWatch Sales EMEA", 'Acme SOTI \\Company\Sales']
action = "lock"
[[policy.rule]]
threat = "*"
action = "none"
"#,
    );
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    let t = &config.tenants[0];
    assert_eq!(
        t.policy.rules[0].groups,
        [
            r"Acme SOTI \\Company\Sales",
            "Acme AirWatch Sales EMEA",
            r"Acme SOTI \\Company\Sales"
        ]
    );
    assert!(t.policy.rules[1].groups.is_empty());
    assert!(t.policy.has_group_rules());

    // The longest MDM name wins: `Acme SOTI …` is the SOTI's, not `Acme`'s.
    let (mdm, group) = t.group_mdm(r"Acme SOTI \\Company\Sales").unwrap();
    assert_eq!(
        (mdm.name.as_str(), group),
        ("Acme SOTI", r"\\Company\Sales")
    );
    let (mdm, group) = t.group_mdm("Acme SOTIX").unwrap();
    assert_eq!((mdm.name.as_str(), group), ("Acme", "SOTIX"));
    assert!(t.group_mdm("Globex Sales").is_none());
    assert!(t.group_mdm("AcmeSOTI x").is_none());
}

#[test]
fn groups_are_split_at_the_longest_mdm_name_followed_by_a_space() {
    let names = ["Acme", "Acme SOTI", "Acme SOTI EU"];
    assert_eq!(
        split_group(r"Acme SOTI EU \\Co", names),
        Some(("Acme SOTI EU", r"\\Co"))
    );
    assert_eq!(
        split_group(r"Acme SOTI \\Co", names),
        Some(("Acme SOTI", r"\\Co"))
    );
    assert_eq!(
        split_group("Acme SOTI EUROPE", names),
        Some(("Acme SOTI", "EUROPE"))
    );
    assert_eq!(split_group("Acme SOTI ", names), Some(("Acme SOTI", "")));
    assert_eq!(split_group("Acme", names), None);
    assert_eq!(split_group("acme SOTI x", names), None);
    assert_eq!(split_group(" x", [""]), None);
}

#[test]
fn every_bad_group_is_reported_at_its_own_element() {
    let errors = errors_of(&[
        ("main.toml", ""),
        (
            "tenants.d/acme.toml",
            &format!(
                "{GROUPS_TENANT}{}",
                r#"[[policy.rule]]
threat = "*"
groups = [
  'Acme SOTI \\Company\Sales',
  42,
  "",
  'Globex SOTI \\Company',
  'Acme MaaS360 Sales',
  'Acme Sales',
  'Acme SOTI ',
  'Acme SOTI \\Company\Sales',
]
action = "lock"
[[policy.rule]]
threat = "*"
groups = ["Acme AirWatch Sales", { name = "x" }]
action = "none"
"#
            ),
        ),
        ("tenants.d/agent", "s"),
    ]);
    let text = ConfigErrors(errors.clone()).to_string();
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(
        at,
        [
            (44, 3),
            (45, 3),
            (46, 3),
            (47, 3),
            (48, 3),
            (49, 3),
            (55, 34)
        ],
        "{text}"
    );
    let expect = [
        "`policy.rule.groups`: a group must be a string (the name of an [[mdm]] of this tenant, \
         a space, then the MDM's group name, e.g. 'Acme SOTI \\\\Company\\Sales'), found an integer",
        "`policy.rule.groups`: a group must not be empty: write the name of an [[mdm]] of this tenant",
        "`policy.rule.groups`: `Globex SOTI \\\\Company` does not start with the name of an MDM of this \
         tenant followed by a space (the MDMs of this tenant: `Acme`, `Acme SOTI`, `Acme AirWatch`, `Acme MaaS360`)",
        "`policy.rule.groups`: `Acme MaaS360 Sales` names the MDM `Acme MaaS360`, of kind maas360: \
         maas360 and bcdm MDMs keep no groups, so no device would ever match \
         (only groups of soti and airwatch MDMs can be named)",
        "`policy.rule.groups`: `Acme Sales` names the MDM `Acme`, of kind bcdm: \
         maas360 and bcdm MDMs keep no groups",
        "`policy.rule.groups`: `Acme SOTI ` names the MDM `Acme SOTI` but none of its groups: \
         write the MDM's group name after the space",
        "`policy.rule.groups`: a group must be a string (the name of an [[mdm]] of this tenant, \
         a space, then the MDM's group name, e.g. 'Acme SOTI \\\\Company\\Sales'), found a table",
    ];
    for (e, want) in errors.iter().zip(expect) {
        assert!(e.message.starts_with(want), "{e}\nexpected: {want}");
        assert!(e.file.ends_with("tenants.d/acme.toml"), "{e}");
    }
}

#[test]
fn a_group_in_a_tenant_without_mdms_says_there_is_none() {
    let tenant = r#"id = "acme"
agent_secret = { file = "agent" }
[[policy.rule]]
threat = "*"
groups = ['Acme SOTI \\Company']
action = "none"
"#;
    let e = only_error(&[
        ("main.toml", ""),
        ("tenants.d/acme.toml", tenant),
        ("tenants.d/agent", "agent-secret-0123456789\n"),
    ]);
    assert_eq!((e.line, e.col), (5, 11), "{e}");
    assert!(
        e.message
            .ends_with("followed by a space (this tenant has no [[mdm]])"),
        "{e}"
    );
}

#[test]
fn groups_that_are_not_an_array_are_a_type_error_at_the_value() {
    let (_dir, result) = load_groups(
        "[[policy.rule]]\nthreat = \"*\"\ngroups = 'Acme SOTI \\\\Company'\naction = \"lock\"\n",
    );
    let errors = result.expect_err("a string is not an array").0;
    assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
    let e = &errors[0];
    assert_eq!((e.line, e.col), (42, 10), "{e}");
    assert!(
        e.message
            .starts_with("`policy.rule.groups`: invalid type: string"),
        "{e}"
    );
}

#[test]
fn group_rules_shadow_and_permit_warnings_take_the_groups_into_account() {
    let (_dir, result) = load_groups(
        r#"[[policy.rule]]
threat = "network.*"
groups = ['Acme SOTI \\Company\Sales']
action = "lock"
[[policy.rule]]
threat = "network.*"
action = "lock"
[[policy.rule]]
threat = "network.arp_mitm"
groups = ['Acme SOTI \\Company\Sales\East']
action = "lock"
[[policy.rule]]
threat = "app.*"
groups = ["Acme AirWatch Sales"]
action = "wipe"
"#,
    );
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    let w = config.warnings.join("\n");
    // The rule on line 41 is scoped to a group, so it does not shadow the
    // unscoped one on line 45; the one on line 48 is inside its group: shadowed.
    assert_eq!(config.warnings.len(), 2, "{w}");
    assert!(
        config.warnings[0].contains(
            "acme.toml:48:10: `policy.rule.threat`: this rule never matches: the rule `network.*` on line 41"
        ),
        "{w}"
    );
    assert!(
        config.warnings[1].contains(
            "acme.toml:54:10: `policy.rule.action`: `wipe` is not permitted on any MDM this rule's groups belong to"
        ),
        "{w}"
    );
}

// ---- group matching -----------------------------------------------------------

fn scoped(threat: &str, groups: &[&str], action: ActionKind) -> Rule {
    Rule {
        threat: threat.parse().unwrap(),
        min_severity: None,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        action,
    }
}

fn device(groups: &[&str]) -> Vec<String> {
    groups.iter().map(|g| g.to_string()).collect()
}

#[test]
fn a_rule_with_groups_matches_its_groups_and_their_subgroups_only() {
    let rule = scoped(
        "*",
        &[r"Acme SOTI \\Company\Sales", "Acme AirWatch EMEA"],
        ActionKind::Lock,
    );
    let m = |groups: &[&str]| rule.matches("network.arp_mitm", Severity::Low, &device(groups));
    // Equal.
    assert!(m(&[r"Acme SOTI \\Company\Sales"]));
    assert!(m(&["Acme AirWatch EMEA"]));
    // A subgroup, at any depth.
    assert!(m(&[r"Acme SOTI \\Company\Sales\East"]));
    assert!(m(&[r"Acme SOTI \\Company\Sales\East\Berlin"]));
    // One of several device groups is enough.
    assert!(m(&[
        r"Acme SOTI \\Company\IT",
        r"Acme SOTI \\Company\Sales\East"
    ]));
    // A sibling whose name starts the same is not inside.
    assert!(!m(&[r"Acme SOTI \\Company\SalesX"]));
    assert!(!m(&["Acme AirWatch EMEA North"]));
    // The parent, another group, another MDM, another case.
    assert!(!m(&[r"Acme SOTI \\Company"]));
    assert!(!m(&[r"Acme SOTI \\Company\IT"]));
    assert!(!m(&[r"Acme SOTI2 \\Company\Sales"]));
    assert!(!m(&[r"Acme SOTI \\company\sales"]));
    // A device in no group is in no rule's groups.
    assert!(!m(&[]));
    // The threat and severity still have to match.
    let severe = Rule {
        min_severity: Some(Severity::High),
        ..scoped("network.*", &[r"Acme SOTI \\Company"], ActionKind::Lock)
    };
    let sales = device(&[r"Acme SOTI \\Company\Sales"]);
    assert!(severe.matches("network.scan", Severity::High, &sales));
    assert!(!severe.matches("network.scan", Severity::Medium, &sales));
    assert!(!severe.matches("app.malicious", Severity::Critical, &sales));

    // A root written with its trailing separator contains everything below it.
    assert!(group_contains(r"Acme SOTI \\", r"Acme SOTI \\Company"));
    assert!(group_contains(
        r"Acme SOTI \\Company\",
        r"Acme SOTI \\Company\Sales"
    ));
}

#[test]
fn a_rule_without_groups_matches_every_device_and_the_first_matching_rule_decides() {
    let policy = PolicyConfig {
        rules: vec![
            scoped(
                "network.*",
                &[r"Acme SOTI \\Company\Sales"],
                ActionKind::DisconnectWifi,
            ),
            scoped("network.*", &[r"Acme SOTI \\Company"], ActionKind::Lock),
            scoped("network.*", &[], ActionKind::None),
        ],
        ..PolicyConfig::default()
    };
    assert!(policy.has_group_rules());
    let decide = |groups: &[&str]| {
        policy
            .decide("network.arp_mitm", Severity::High, &device(groups))
            .map(|r| r.action)
    };
    // Inside both scoped rules: the first in file order decides.
    assert_eq!(
        decide(&[r"Acme SOTI \\Company\Sales\East"]),
        Some(ActionKind::DisconnectWifi)
    );
    assert_eq!(decide(&[r"Acme SOTI \\Company\IT"]), Some(ActionKind::Lock));
    // In no group of any rule, or in no group at all: the unscoped rule.
    assert_eq!(decide(&["Acme AirWatch EMEA"]), Some(ActionKind::None));
    assert_eq!(decide(&[]), Some(ActionKind::None));

    let unscoped = scoped("*", &[], ActionKind::Lock);
    assert!(unscoped.matches("app.malicious", Severity::Low, &[]));
    assert!(unscoped.matches(
        "app.malicious",
        Severity::Low,
        &device(&["Acme AirWatch EMEA"])
    ));
    assert!(!PolicyConfig {
        rules: vec![unscoped],
        ..PolicyConfig::default()
    }
    .has_group_rules());
    assert!(!PolicyConfig::default().has_group_rules());

    // Only scoped rules, and a device outside them: nothing decides.
    let only_scoped = PolicyConfig {
        rules: vec![scoped("*", &[r"Acme SOTI \\Company"], ActionKind::Lock)],
        ..PolicyConfig::default()
    };
    assert_eq!(
        only_scoped.decide("app.malicious", Severity::Critical, &[]),
        None
    );
}

#[test]
fn may_act_is_true_wherever_some_device_could_get_an_action_and_false_where_none_can() {
    let policy = PolicyConfig {
        rules: vec![
            scoped(
                "network.*",
                &[r"Acme SOTI \\Company\Sales"],
                ActionKind::Lock,
            ),
            scoped("network.*", &[r"Acme SOTI \\Company"], ActionKind::None),
            scoped("network.*", &[], ActionKind::None),
            scoped("app.*", &[r"Acme SOTI \\Company"], ActionKind::None),
            scoped("*", &[], ActionKind::EnterpriseWipe),
        ],
        ..PolicyConfig::default()
    };
    // A device in Sales gets a lock: the scoped rule may act.
    assert!(policy.may_act("network.arp_mitm", Severity::Low));
    // Scoped `none`, then the unscoped wipe for devices outside the scope.
    assert!(policy.may_act("app.malicious", Severity::Low));
    assert!(policy.may_act("phishing.url", Severity::Low));
    let quiet = PolicyConfig {
        rules: vec![
            scoped("network.*", &[r"Acme SOTI \\Company"], ActionKind::None),
            scoped("network.*", &[], ActionKind::None),
            scoped("*", &[], ActionKind::Lock),
        ],
        ..PolicyConfig::default()
    };
    // Every device's first matching rule is a `none`: the unscoped one ends the search.
    assert!(!quiet.may_act("network.arp_mitm", Severity::Critical));
    assert!(quiet.may_act("device.jailbroken_rooted", Severity::Low));
    assert!(!PolicyConfig::default().may_act("device.jailbroken_rooted", Severity::Critical));
    // Agrees with `decide` for every device where no rule is scoped.
    let flat = PolicyConfig {
        rules: vec![
            scoped("network.*", &[], ActionKind::None),
            scoped("*", &[], ActionKind::Lock),
        ],
        ..PolicyConfig::default()
    };
    for t in ["network.scan", "app.sideloaded", "other.thing"] {
        let acts = flat
            .decide(t, Severity::High, &[])
            .is_some_and(|r| r.action != ActionKind::None);
        assert_eq!(flat.may_act(t, Severity::High), acts, "{t}");
    }
}

#[test]
fn the_risk_signal_section_is_off_by_default_named_by_default_and_its_name_checked() {
    let base = MAAS360_TENANT.replace("KIND", "maas360");
    let load = |extra: &str| {
        load_tree(&[
            ("main.toml", ""),
            ("tenants.d/acme.toml", &format!("{base}{extra}")),
            ("tenants.d/agent", "s3cr3t-value"),
        ])
    };
    let (_d, off) = load("");
    assert_eq!(off.unwrap().tenants[0].mdms[0].risk_signal, None);
    let (_d, disabled) = load("[mdm.risk_signal]\nenabled = false\nname = \"X\"\n");
    assert_eq!(disabled.unwrap().tenants[0].mdms[0].risk_signal, None);
    let (_d, default) = load("[mdm.risk_signal]\nenabled = true\n");
    assert_eq!(
        default.unwrap().tenants[0].mdms[0].risk_signal,
        Some(crate::config::RiskSignalConfig {
            name: "MTD_Threat_Level".into()
        })
    );
    let (_d, named) = load("[mdm.risk_signal]\nenabled = true\nname = \"Acme_Risk\"\n");
    assert_eq!(
        named.unwrap().tenants[0].mdms[0]
            .risk_signal
            .as_ref()
            .unwrap()
            .name,
        "Acme_Risk"
    );
    let (_d, bad) = load("[mdm.risk_signal]\nenabled = true\nname = \"a b\"\n");
    let errors = bad.unwrap_err();
    let e = &errors.0[0];
    assert!(e.message.contains("mdm.risk_signal.name"), "{e}");
    let (_d, unknown) = load("[mdm.risk_signal]\nenabled = true\ncolour = \"red\"\n");
    assert!(unknown.is_err());
}

// ---- [server] tls_cert / tls_key ------------------------------------------------

/// A self-signed certificate for localhost and 127.0.0.1, and its key, as PEM.
fn self_signed() -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    (c.cert.pem(), c.key_pair.serialize_pem())
}

/// The main file naming `cert.pem` and `key.pem`: values at 2:12 and 3:11.
const TLS_MAIN: &str = "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n";

fn tls_errors(cert: Option<&str>, key: Option<&str>) -> Vec<ConfigError> {
    let mut files = vec![("main.toml", TLS_MAIN), ("tenants.d/.keep", "")];
    if let Some(cert) = cert {
        files.push(("cert.pem", cert));
    }
    if let Some(key) = key {
        files.push(("key.pem", key));
    }
    errors_of(&files)
}

#[test]
fn a_certificate_and_its_key_load_relative_to_the_main_file_ready_to_serve() {
    let (cert, key) = self_signed();
    let dir = tree(&[
        (
            "conf/main.toml",
            "[server]\ntls_cert = \"certs/server.pem\"\ntls_key = \"certs/server.key\"\n",
        ),
        ("conf/tenants.d/.keep", ""),
        ("conf/certs/server.pem", &cert),
        ("conf/certs/server.key", &key),
    ]);
    let config = load(&dir.path().join("conf/main.toml")).unwrap_or_else(|e| panic!("{e}"));
    let tls = config.server.tls.as_ref().expect("TLS is on");
    assert_eq!(tls.cert_path, dir.path().join("conf/certs/server.pem"));
    assert_eq!(tls.key_path, dir.path().join("conf/certs/server.key"));
    assert_eq!(tls.chain.len(), 1);
    assert_eq!(config.server.scheme(), "https");
    assert_eq!(
        tls.server_config.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    assert!(
        !config.warnings.iter().any(|w| w.contains("tls")),
        "{:?}",
        config.warnings
    );
    // The key is nowhere in the Debug output.
    let key_body: String = key.lines().filter(|l| !l.starts_with("-----")).collect();
    let debug = format!("{config:?}");
    assert!(!debug.contains(&key_body[..40]), "{debug}");
    assert!(debug.contains("server.key"), "{debug}");
    // The same files load equal; a new certificate makes `[server]` differ.
    let again = load(&dir.path().join("conf/main.toml")).unwrap();
    assert_eq!(again.server, config.server);
    let (cert2, key2) = self_signed();
    fs::write(dir.path().join("conf/certs/server.pem"), cert2).unwrap();
    fs::write(dir.path().join("conf/certs/server.key"), key2).unwrap();
    let renewed = load(&dir.path().join("conf/main.toml")).unwrap();
    assert_ne!(renewed.server, config.server);
    // Without the keys: plain HTTP.
    assert_eq!(ServerConfig::default().tls, None);
    assert_eq!(ServerConfig::default().scheme(), "http");
}

#[test]
fn tls_cert_and_tls_key_come_together_or_not_at_all() {
    let e = only_error(&[
        ("main.toml", "[server]\ntls_cert = \"cert.pem\"\n"),
        ("tenants.d/.keep", ""),
    ]);
    assert_eq!((e.line, e.col), (2, 12), "{e}");
    assert!(
        e.message
            .starts_with("`server.tls_cert` is set but `server.tls_key` is not: HTTPS needs both"),
        "{e}"
    );
    let e = only_error(&[
        (
            "main.toml",
            "[server]\nlisten = \"127.0.0.1:8443\"\ntls_key = \"key.pem\"\n",
        ),
        ("tenants.d/.keep", ""),
    ]);
    assert_eq!((e.line, e.col), (3, 11), "{e}");
    assert!(
        e.message
            .starts_with("`server.tls_key` is set but `server.tls_cert` is not"),
        "{e}"
    );
    let e = only_error(&[
        (
            "main.toml",
            "[server]\ntls_cert = \"\"\ntls_key = \"key.pem\"\n",
        ),
        ("tenants.d/.keep", ""),
    ]);
    assert_eq!((e.line, e.col), (2, 12), "{e}");
    assert_eq!(e.message, "`server.tls_cert` must not be empty");
}

#[test]
fn unreadable_certificate_and_key_files_are_reported_at_their_keys_with_path_and_os_error() {
    let errors = tls_errors(None, None);
    assert_eq!(errors.len(), 2, "{}", ConfigErrors(errors.clone()));
    let (cert, key) = (&errors[0], &errors[1]);
    assert_eq!((cert.line, cert.col), (2, 12), "{cert}");
    assert_eq!((key.line, key.col), (3, 11), "{key}");
    let dir = cert.file.parent().unwrap();
    assert_eq!(
        cert.message,
        format!(
            "`server.tls_cert`: cannot read the certificate chain {}: No such file or directory (os error 2)",
            dir.join("cert.pem").display()
        )
    );
    assert_eq!(
        key.message,
        format!(
            "`server.tls_key`: cannot read the private key {}: No such file or directory (os error 2)",
            dir.join("key.pem").display()
        )
    );
    // A directory is no certificate either.
    let (dir, result) = load_tree(&[
        ("main.toml", TLS_MAIN),
        ("tenants.d/.keep", ""),
        ("cert.pem/.keep", ""),
        ("key.pem", &self_signed().1),
    ]);
    let errors = result.unwrap_err().0;
    assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
    assert!(
        errors[0].message.starts_with(&format!(
            "`server.tls_cert`: cannot read the certificate chain {}: ",
            dir.path().join("cert.pem").display()
        )),
        "{}",
        errors[0]
    );
}

#[test]
fn a_certificate_file_without_a_certificate_is_reported_at_tls_cert() {
    let (_, key) = self_signed();
    for not_a_chain in [key.as_str(), "", "just some text\n"] {
        let errors = tls_errors(Some(not_a_chain), Some(&key));
        assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
        let e = &errors[0];
        assert_eq!((e.line, e.col), (2, 12), "{e}");
        assert!(e.message.starts_with("`server.tls_cert`: "), "{e}");
        assert!(
            e.message.contains(
                "cert.pem holds no certificate: expected PEM `-----BEGIN CERTIFICATE-----` blocks"
            ),
            "{e}"
        );
    }
    let broken = "-----BEGIN CERTIFICATE-----\nMIIB\n";
    let e = &tls_errors(Some(broken), Some(&key))[0];
    assert!(
        e.message
            .ends_with("cert.pem is not a valid PEM file: a PEM block has no END line"),
        "{e}"
    );
}

#[test]
fn a_key_file_without_a_usable_private_key_is_reported_at_tls_key() {
    let (cert, key) = self_signed();
    let cases: [(&str, &str); 4] = [
        (&cert, "key.pem holds no private key: expected a PEM `PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY` block"),
        (
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "is encrypted, and the daemon cannot ask for its passphrase",
        ),
        (
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "is not supported (",
        ),
        (&format!("{key}{key}"), "key.pem holds 2 private keys"),
    ];
    for (key_file, needle) in cases {
        let errors = tls_errors(Some(&cert), Some(key_file));
        assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
        let e = &errors[0];
        assert_eq!((e.line, e.col), (3, 11), "{e}");
        assert!(e.message.starts_with("`server.tls_key`: "), "{e}");
        assert!(e.message.contains(needle), "{e}\nwanted: {needle}");
    }
    // The unsupported key says which keys work.
    let e = &tls_errors(
        Some(&cert),
        Some("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
    )[0];
    assert!(
        e.message
            .contains("use an RSA (2048 bits or more), ECDSA P-256 or P-384, or Ed25519 key"),
        "{e}"
    );
}

#[test]
fn a_key_that_does_not_belong_to_the_certificate_is_reported_at_tls_key() {
    let (cert, _) = self_signed();
    let (_, other_key) = self_signed();
    let errors = tls_errors(Some(&cert), Some(&other_key));
    assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
    let e = &errors[0];
    assert_eq!((e.line, e.col), (3, 11), "{e}");
    let dir = e.file.parent().unwrap();
    assert_eq!(
        e.message,
        format!(
            "`server.tls_key`: the private key in {} does not belong to the certificate in {} \
             (the first certificate of the chain must be the server's own, issued for this key)",
            dir.join("key.pem").display(),
            dir.join("cert.pem").display()
        )
    );
    // A chain whose second certificate matches is still wrong: the server's comes first.
    let (cert_b, key_b) = self_signed();
    let chain = format!("{cert}{cert_b}");
    let e = &tls_errors(Some(&chain), Some(&key_b))[0];
    assert!(
        e.message.contains("does not belong to the certificate"),
        "{e}"
    );
}

// ---- [ise] ------------------------------------------------------------------------

/// A tenant with an `[ise]` section (line 3; its keys from line 4 on).
fn ise_tenant(id: &str, ise: &str) -> String {
    format!("id = \"{id}\"\nagent_secret = {{ file = \"agent\" }}\n[ise]\n{ise}")
}

const AGENT_FILE: (&str, &str) = ("tenants.d/agent", "agent-secret-0123456789\n");

#[test]
fn the_main_ise_section_is_off_by_default_and_its_extensions_are_checked() {
    let (_d, result) = load_tree(&[("main.toml", ""), ("tenants.d/.keep", "")]);
    let config = result.unwrap();
    assert_eq!(config.ise, IseConfig::default());
    assert_eq!(
        config.ise,
        IseConfig {
            enabled: false,
            query_max_size: 1000,
            redirect_url: None
        }
    );

    let (_d, result) = load_tree(&[
        (
            "main.toml",
            "[ise]\nenabled = false\nquery_max_size = 5000\nredirect_url = \"https://enroll.example.com/mdm\"\n",
        ),
        ("tenants.d/.keep", ""),
    ]);
    let ise = result.unwrap_or_else(|e| panic!("{e}")).ise;
    assert_eq!(ise.query_max_size, 5000);
    assert_eq!(
        ise.redirect_url.unwrap().as_str(),
        "https://enroll.example.com/mdm"
    );

    let errors = errors_of(&[
        (
            "main.toml",
            "[ise]\nquery_max_size = 0\nredirect_url = \"ftp://enroll.example.com\"\n",
        ),
        ("tenants.d/.keep", ""),
    ]);
    let text = ConfigErrors(errors.clone()).to_string();
    let at: Vec<(usize, usize)> = errors.iter().map(|e| (e.line, e.col)).collect();
    assert_eq!(at, [(2, 18), (3, 16)], "{text}");
    assert_eq!(
        errors[0].message,
        "`ise.query_max_size` must be at least 1, found 0"
    );
    assert_eq!(
        errors[1].message,
        "`ise.redirect_url`: scheme `ftp` is not supported, expected http or https"
    );
    let e = only_error(&[
        ("main.toml", "[ise]\nquery_max_size = 5001\n"),
        ("tenants.d/.keep", ""),
    ]);
    assert_eq!(
        e.message,
        "`ise.query_max_size` must be at most 5000, found 5001"
    );
    let e = only_error(&[
        (
            "main.toml",
            "[ise]\nredirect_url = \"https://u:p@x.example\"\n",
        ),
        ("tenants.d/.keep", ""),
    ]);
    assert_eq!(
        e.message,
        "`ise.redirect_url` must not contain a user name or password"
    );
    assert!(!e.message.contains("u:p"), "{e}");
    let e = only_error(&[
        ("main.toml", "[ise]\nenabled = true\nport = 9443\n"),
        ("tenants.d/.keep", ""),
    ]);
    assert_eq!((e.line, e.col), (3, 1), "{e}");
    assert!(e.message.contains("unknown field `port`"), "{e}");
}

#[test]
fn a_tenants_ise_section_gives_its_credentials_and_threshold() {
    std::env::set_var("MTD_CONFIG_TEST_ISE_PASSWORD", "ise-password-from-env");
    let acme = ise_tenant(
        "acme",
        "username = \"ise-acme\"\npassword = { env = \"MTD_CONFIG_TEST_ISE_PASSWORD\" }\nnoncompliant_at = \"medium\"\n",
    );
    let globex = ise_tenant(
        "globex",
        "username = \"ise-globex\"\npassword = { file = \"agent\" }\n",
    );
    let (_d, result) = load_tree(&[
        ("main.toml", "[ise]\nenabled = true\n"),
        ("tenants.d/acme.toml", &acme),
        ("tenants.d/globex.toml", &globex),
        (
            "tenants.d/initech.toml",
            &MINIMAL_TENANT.replace("acme", "initech"),
        ),
        AGENT_FILE,
    ]);
    let config = result.unwrap_or_else(|e| panic!("{e}"));
    assert!(config.ise.enabled);
    let ise = config.tenants[0].ise.as_ref().unwrap();
    assert_eq!(ise.username, "ise-acme");
    assert_eq!(ise.password.expose(), "ise-password-from-env");
    assert_eq!(ise.noncompliant_at, IseThreshold::Medium);
    let ise = config.tenants[1].ise.as_ref().unwrap();
    assert_eq!(
        (ise.username.as_str(), ise.noncompliant_at),
        ("ise-globex", IseThreshold::High),
        "high by default"
    );
    assert_eq!(config.tenants[2].ise, None);
    assert!(!format!("{config:?}").contains("ise-password-from-env"));

    // The threshold: its names, order and meaning.
    for t in IseThreshold::ALL {
        assert_eq!(t.as_str().parse::<IseThreshold>(), Ok(t));
        assert_eq!(t.to_string(), t.as_str());
    }
    assert_eq!(
        IseThreshold::ALL.map(IseThreshold::as_str),
        ["low", "medium", "high", "critical"]
    );
    assert!(IseThreshold::High.is_reached_by(Some(Severity::Critical)));
    assert!(IseThreshold::High.is_reached_by(Some(Severity::High)));
    assert!(!IseThreshold::High.is_reached_by(Some(Severity::Medium)));
    assert!(!IseThreshold::Low.is_reached_by(None), "secured");
}

#[test]
fn a_bad_ise_section_is_reported_at_the_key_at_fault() {
    let cases: [(&str, (usize, usize), &str); 8] = [
        (
            "password = { file = \"agent\" }\n",
            (3, 1),
            "`ise.username` is required in [ise]: the HTTP Basic user name this tenant's Cisco ISE logs in with",
        ),
        (
            "username = \"ise-acme\"\n",
            (3, 1),
            "`ise.password` is required in [ise]",
        ),
        (
            "username = \" \"\npassword = { file = \"agent\" }\n",
            (4, 12),
            "`ise.username` must not be empty",
        ),
        (
            "username = \"ise:acme\"\npassword = { file = \"agent\" }\n",
            (4, 12),
            "`ise.username` must not contain `:`: HTTP Basic authentication cannot carry it in a user name",
        ),
        (
            &format!("username = \"{}\"\npassword = {{ file = \"agent\" }}\n", "u".repeat(129)),
            (4, 12),
            "`ise.username` is longer than 128 characters",
        ),
        (
            "username = \"ise-acme\"\npassword = { file = \"agent\" }\nnoncompliant_at = \"severe\"\n",
            (6, 19),
            "`ise.noncompliant_at`: unknown risk level `severe`, expected one of: low, medium, high, critical",
        ),
        (
            "username = \"ise-acme\"\npassword = { env = \"MTD_CONFIG_TEST_ISE_UNSET\" }\n",
            (5, 12),
            "`ise.password`: environment variable MTD_CONFIG_TEST_ISE_UNSET is not set",
        ),
        (
            "username = \"ise-acme\"\npassword = { file = \"agent\" }\nnoncompliant = \"low\"\n",
            (6, 1),
            "unknown field `noncompliant`",
        ),
    ];
    for (ise, (line, col), needle) in cases {
        let tenant = ise_tenant("acme", ise);
        let errors = errors_of(&[
            ("main.toml", "[ise]\nenabled = true\n"),
            ("tenants.d/acme.toml", &tenant),
            AGENT_FILE,
        ]);
        assert_eq!(errors.len(), 1, "{ise}: {}", ConfigErrors(errors.clone()));
        let e = &errors[0];
        assert!(e.file.ends_with("acme.toml"), "{e}");
        assert_eq!((e.line, e.col), (line, col), "{ise}: {e}");
        assert!(e.message.contains(needle), "{e}\nwanted: {needle}");
    }
}

#[test]
fn an_ise_username_used_by_two_tenants_is_reported_at_the_second_naming_the_first() {
    let a = ise_tenant(
        "acme",
        "username = \"ise-shared\"\npassword = { file = \"agent\" }\n",
    );
    let b = ise_tenant(
        "globex",
        "username = \"ise-shared\"\npassword = { file = \"agent\" }\n",
    );
    let c = ise_tenant(
        "initech",
        "username = \"ISE-shared\"\npassword = { file = \"agent\" }\n",
    );
    let errors = errors_of(&[
        ("main.toml", "[ise]\nenabled = true\n"),
        ("tenants.d/a.toml", &a),
        ("tenants.d/b.toml", &b),
        ("tenants.d/c.toml", &c),
        AGENT_FILE,
    ]);
    assert_eq!(errors.len(), 1, "{}", ConfigErrors(errors.clone()));
    let e = &errors[0];
    assert!(e.file.ends_with("b.toml"), "{e}");
    assert_eq!((e.line, e.col), (4, 12), "{e}");
    assert_eq!(
        e.message,
        format!(
            "`ise.username`: the ISE user name `ise-shared` is already used by tenant `acme` ({}): \
             it selects the tenant, so each tenant needs its own",
            e.file.with_file_name("a.toml").display()
        )
    );
}

#[test]
fn ise_sections_without_the_api_and_the_api_without_https_are_warnings() {
    let (cert, key) = self_signed();
    let tenant = ise_tenant(
        "acme",
        "username = \"ise-acme\"\npassword = { file = \"agent\" }\n",
    );
    let warnings = |main: &str| {
        let (_d, result) = load_tree(&[
            ("main.toml", main),
            ("cert.pem", &cert),
            ("key.pem", &key),
            ("tenants.d/acme.toml", &tenant),
            AGENT_FILE,
        ]);
        let config = result.unwrap_or_else(|e| panic!("{e}"));
        // Every tenant here has no [[mdm]], which is a warning of its own.
        config
            .warnings
            .into_iter()
            .filter(|w| !w.contains("no [[mdm]]"))
            .collect::<Vec<_>>()
    };

    let off = warnings("");
    assert_eq!(off.len(), 1, "{off:?}");
    assert!(
        off[0].ends_with(
            "acme.toml:3:1: `[ise]` of tenant `acme` has no effect: the Cisco ISE API is off \
             (set `[ise] enabled = true` in the main file to serve it)"
        ),
        "{off:?}"
    );

    let plain = warnings("[ise]\nenabled = true\n");
    assert_eq!(plain.len(), 1, "{plain:?}");
    assert!(
        plain[0].ends_with(
            "main.toml:2:11: `ise.enabled`: Cisco ISE talks to an MDM server over HTTPS only, and \
             `[server] tls_cert`/`tls_key` are not set: set them, or put a TLS proxy in front of the listener"
        ),
        "{plain:?}"
    );

    let https = warnings(&format!("{TLS_MAIN}[ise]\nenabled = true\n"));
    assert!(https.is_empty(), "{https:?}");

    // A literal ISE password is flagged like any literal secret, never shown.
    let literal = ise_tenant(
        "acme",
        "username = \"ise-acme\"\npassword = \"S3cret-ise-literal-7\"\n",
    );
    let (_d, result) = load_tree(&[
        ("main.toml", &format!("{TLS_MAIN}[ise]\nenabled = true\n")),
        ("cert.pem", &cert),
        ("key.pem", &key),
        ("tenants.d/acme.toml", &literal),
        AGENT_FILE,
    ]);
    let config = result.unwrap();
    let w = config.warnings.join("\n");
    assert!(
        w.contains("acme.toml:5:12: `ise.password` is a literal; use { env = … } or { file = … } in production"),
        "{w}"
    );
    assert!(!w.contains("S3cret-ise-literal-7"), "{w}");
    assert!(!format!("{config:?}").contains("S3cret-ise-literal-7"));
    assert!(!format!("{config:#?}").contains("S3cret-ise-literal-7"));
}

#[test]
fn the_commented_tls_and_ise_keys_of_the_examples_load_once_uncommented() {
    let dir = tempfile::tempdir().unwrap();
    let uncomment = |text: &str, keys: &[&str]| -> String {
        text.lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if keys.iter().any(|k| rest.starts_with(k)) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let main = fs::read_to_string(repo("config.example.toml")).unwrap();
    let main = uncomment(&main, &["tls_cert =", "tls_key =", "redirect_url ="]);
    let ise_at = main.find("\n[ise]\n").expect("the example has [ise]");
    let main = format!(
        "{}{}",
        &main[..ise_at],
        main[ise_at..].replacen("enabled = false", "enabled = true", 1)
    );
    fs::write(dir.path().join("config.toml"), main).unwrap();
    let (cert, key) = self_signed();
    fs::create_dir_all(dir.path().join("certs")).unwrap();
    fs::write(dir.path().join("certs/server.pem"), cert).unwrap();
    fs::write(dir.path().join("certs/server.key"), key).unwrap();
    for sub in ["examples/secrets", "examples/tenants.d"] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
        for entry in fs::read_dir(repo(sub)).unwrap() {
            let path = entry.unwrap().path();
            let text = fs::read_to_string(&path).unwrap();
            let text = if sub.ends_with("tenants.d") {
                uncomment(
                    &text,
                    &["[ise]", "username =", "password =", "noncompliant_at ="],
                )
            } else {
                text
            };
            fs::write(dir.path().join(sub).join(path.file_name().unwrap()), text).unwrap();
        }
    }
    for id in ["ACME", "GLOBEX", "INITECH", "UMBRELLA"] {
        std::env::set_var(format!("{id}_ISE_PASSWORD"), "an-ise-password-0123456789");
    }
    let config = load(&dir.path().join("config.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert!(config.warnings.is_empty(), "{:#?}", config.warnings);
    assert!(config.server.tls.is_some());
    assert!(config.ise.enabled);
    assert!(config.ise.redirect_url.is_some());
    for t in &config.tenants {
        let ise = t
            .ise
            .as_ref()
            .unwrap_or_else(|| panic!("{}: no [ise]", t.id));
        assert_eq!(ise.username, format!("ise-{}", t.id));
        assert_eq!(ise.noncompliant_at, IseThreshold::High);
    }
}
