use crate::support::*;
use std::path::Path;
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/config");

fn check(config: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_the_example_configuration() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let (code, stdout, stderr) = check(&example);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("OK"), "{stdout}");
    // The examples point at placeholder URLs: every MDM is listed as disabled.
    for kind in [
        "(soti, disabled)",
        "(maas360, disabled)",
        "(airwatch, disabled)",
        "(bcdm, disabled)",
    ] {
        assert!(
            stdout.contains(kind),
            "the summary lists no {kind} MDM:\n{stdout}"
        );
    }
}

/// (fixture, file the error is in, LINE:COL, text the message must contain)
const BROKEN: &[(&str, &str, &str, &str)] = &[
    ("unknown-key", "tenants.d/acme.toml", "9:1", "mask_pi"),
    (
        "wrong-type",
        "tenants.d/acme.toml",
        "9:19",
        "`mdm.background_sync`",
    ),
    (
        "duplicate-mdm-name",
        "tenants.d/acme.toml",
        "16:8",
        "`mdm.name`",
    ),
    (
        "invalid-action",
        "tenants.d/acme.toml",
        "17:10",
        "`policy.rule.action`",
    ),
    (
        "missing-credential",
        "tenants.d/acme.toml",
        "9:1",
        "`mdm.credentials.client_secret`",
    ),
    (
        "duplicate-tenant-id",
        "tenants.d/b-acme-again.toml",
        "2:6",
        "`id`",
    ),
    (
        "bad-duration",
        "config.toml",
        "6:19",
        "`sync.full_sync_every`",
    ),
    (
        "mcms-with-airwatch-credentials",
        "tenants.d/acme.toml",
        "7:8",
        "kind = \"airwatch\"",
    ),
    (
        "unknown-group-mdm",
        "tenants.d/acme.toml",
        "17:40",
        "`policy.rule.groups`",
    ),
];

#[test]
fn check_config_exits_two_with_file_line_col_naming_the_offending_key() {
    for (fixture, file, line_col, names) in BROKEN {
        let dir = Path::new(FIXTURES).join(fixture);
        let (code, stdout, stderr) = check(&dir.join("config.toml"));
        assert_eq!(
            code,
            Some(2),
            "{fixture}: stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let want_prefix = format!("{}:{line_col}: ", dir.join(file).display());
        let line = stderr
            .lines()
            .find(|l| l.starts_with(&want_prefix))
            .unwrap_or_else(|| {
                panic!("{fixture}: no line starting with `{want_prefix}` in:\n{stderr}")
            });
        assert!(
            line.contains(names),
            "{fixture}: `{line}` does not name {names}"
        );
    }
}

#[test]
fn check_config_never_prints_a_secret_value() {
    let secrets: Vec<String> = std::fs::read_dir(Path::new(FIXTURES).join("secrets"))
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .trim()
                .to_string()
        })
        .collect();
    assert!(!secrets.is_empty());
    let mut configs: Vec<_> = BROKEN
        .iter()
        .map(|(f, ..)| Path::new(FIXTURES).join(f).join("config.toml"))
        .collect();
    configs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml"));
    for config in configs {
        let (_, stdout, stderr) = check(&config);
        for s in &secrets {
            assert!(
                !stdout.contains(s.as_str()) && !stderr.contains(s.as_str()),
                "{} printed a secret",
                config.display()
            );
        }
    }

    // A config with literal secrets: valid, warned about, and still never printed.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .env(PASSWORD_ENV_VAR, ENV_PASSWORD)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("literal"),
        "a literal secret is accepted with a warning:\n{stderr}"
    );
    assert_no_secret(&stdout, "check-config stdout");
    assert_no_secret(&stderr, "check-config stderr");
}

#[test]
fn a_missing_environment_variable_is_an_error_naming_the_key_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(&config)
        .env_remove(PASSWORD_ENV_VAR)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(PASSWORD_ENV_VAR) && stderr.contains("password"),
        "{stderr}"
    );
}

#[test]
fn check_config_reports_a_rule_group_of_an_unknown_mdm_at_the_group_listing_the_tenants_mdms() {
    let dir = Path::new(FIXTURES).join("unknown-group-mdm");
    let (code, stdout, stderr) = check(&dir.join("config.toml"));
    assert_eq!(code, Some(2), "stdout:\n{stdout}\nstderr:\n{stderr}");
    let want = format!(
        "{}:17:40: `policy.rule.groups`: `Globex SOTI \\\\Company\\Sales` does not start with the name \
         of an MDM of this tenant followed by a space (the MDMs of this tenant: `Acme SOTI`)",
        dir.join("tenants.d/acme.toml").display()
    );
    assert!(
        stderr.lines().any(|l| l == want),
        "no line\n{want}\nin:\n{stderr}"
    );
    // The valid first group of the same rule is not reported.
    assert_eq!(
        stderr.lines().filter(|l| l.contains("acme.toml:")).count(),
        1,
        "{stderr}"
    );
}

/// A main file with `[server] tls_cert`/`tls_key` and `[ise]`, and the tenant
/// of [`write_config`] with an `[ise]` section; `cert` and `key` are the PEM
/// files' contents (`None`: the file is not written).
fn write_tls_ise_config(dir: &Path, cert: Option<&str>, key: Option<&str>) -> std::path::PathBuf {
    let main = write_config(dir);
    let text = std::fs::read_to_string(&main).unwrap().replacen(
        "[server]\n",
        "[server]\ntls_cert = \"certs/server.pem\"\ntls_key = \"certs/server.key\"\n",
        1,
    );
    std::fs::write(&main, format!("{text}[ise]\nenabled = true\n")).unwrap();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    if let Some(cert) = cert {
        std::fs::write(dir.join("certs/server.pem"), cert).unwrap();
    }
    if let Some(key) = key {
        std::fs::write(dir.join("certs/server.key"), key).unwrap();
    }
    let tenant = dir.join("tenants.d/acme.toml");
    let text = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(
        &tenant,
        format!(
            "{text}\n[ise]\nusername = \"ise-acme\"\npassword = {{ env = \"{PASSWORD_ENV_VAR}\" }}\n"
        ),
    )
    .unwrap();
    main
}

fn check_with_env(config: &Path) -> (Option<i32>, String, String) {
    let out = Command::new(bin())
        .args(["check-config", "--config"])
        .arg(config)
        .env(PASSWORD_ENV_VAR, ENV_PASSWORD)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_shows_https_and_each_tenants_ise_username_but_never_its_password() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_tls_ise_config(
        dir.path(),
        Some(&certified.cert.pem()),
        Some(&certified.key_pair.serialize_pem()),
    );
    let (code, stdout, stderr) = check_with_env(&config);
    assert_eq!(code, Some(0), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("  listen: https://127.0.0.1:0"), "{stdout}");
    assert!(stdout.contains("  ise: enabled"), "{stdout}");
    assert!(
        stdout.contains("  tenant acme: ISE username \"ise-acme\", not compliant from risk high"),
        "{stdout}"
    );
    assert_no_secret(&stdout, "check-config stdout");
    assert_no_secret(&stderr, "check-config stderr");
    let key_line = certified
        .key_pair
        .serialize_pem()
        .lines()
        .nth(1)
        .unwrap()
        .to_string();
    assert!(!stdout.contains(&key_line) && !stderr.contains(&key_line));
}

#[test]
fn check_config_reports_each_certificate_problem_at_its_key_and_exits_two() {
    let a = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key, other_key) = (
        a.cert.pem(),
        a.key_pair.serialize_pem(),
        b.key_pair.serialize_pem(),
    );
    // (certificate file, key file, the key at fault and LINE:COL, the message's start)
    let cases: [(Option<&str>, Option<&str>, &str, &str); 4] = [
        (
            None,
            Some(&key),
            "connector.toml:2:12",
            "`server.tls_cert`: cannot read the certificate chain ",
        ),
        (
            Some(&key),
            Some(&key),
            "connector.toml:2:12",
            "`server.tls_cert`: ",
        ),
        (
            Some(&cert),
            Some(&cert),
            "connector.toml:3:11",
            "`server.tls_key`: ",
        ),
        (
            Some(&cert),
            Some(&other_key),
            "connector.toml:3:11",
            "`server.tls_key`: the private key in ",
        ),
    ];
    for (i, (cert_file, key_file, at, starts)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let config = write_tls_ise_config(dir.path(), cert_file, key_file);
        let (code, stdout, stderr) = check_with_env(&config);
        assert_eq!(
            code,
            Some(2),
            "case {i}: stdout:\n{stdout}\nstderr:\n{stderr}"
        );
        let prefix = format!("{}: {starts}", dir.path().join(at).display());
        assert!(
            stderr.lines().any(|l| l.starts_with(&prefix)),
            "case {i}: no line starting with `{prefix}` in:\n{stderr}"
        );
        assert_no_secret(&stderr, "check-config stderr");
    }

    // Only one of the two keys.
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[server]\n",
        "[server]\ntls_key = \"certs/server.key\"\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let (code, _, stderr) = check_with_env(&config);
    assert_eq!(code, Some(2), "{stderr}");
    let want = format!(
        "{}:2:11: `server.tls_key` is set but `server.tls_cert` is not",
        config.display()
    );
    assert!(stderr.lines().any(|l| l.starts_with(&want)), "{stderr}");
}

#[test]
fn check_config_reports_an_ise_username_shared_by_two_tenants_at_the_second() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let ise = format!(
        "\n[ise]\nusername = \"ise-shared\"\npassword = {{ env = \"{PASSWORD_ENV_VAR}\" }}\n"
    );
    let acme = dir.path().join("tenants.d/acme.toml");
    let text = std::fs::read_to_string(&acme).unwrap();
    std::fs::write(&acme, format!("{text}{ise}")).unwrap();
    let globex = text.replace("id = \"acme\"", "id = \"globex\"");
    let globex_lines = globex.lines().count();
    std::fs::write(
        dir.path().join("tenants.d/globex.toml"),
        format!("{globex}{ise}"),
    )
    .unwrap();
    let (code, _, stderr) = check_with_env(&config);
    assert_eq!(code, Some(2), "{stderr}");
    // globex.toml: its text, an empty line, `[ise]`, then the user name.
    let want = format!(
        "{}:{}:12: `ise.username`: the ISE user name `ise-shared` is already used by tenant `acme` ({})",
        dir.path().join("tenants.d/globex.toml").display(),
        globex_lines + 3,
        acme.display()
    );
    assert!(
        stderr.lines().any(|l| l.starts_with(&want)),
        "no line\n{want}\nin:\n{stderr}"
    );
}
