//! Issue 20, item 3: `status`, `actions`, `approve`, `cancel` and `sync`
//! through the running daemon's admin API, with the address and token of
//! the config, and plain words when the daemon is not there or refuses.

use crate::ops::{soti_mdm, Sims};
use crate::support::*;
use mtd_sim::{soti, SimKind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now (the config needs a real one: the
/// commands find the daemon at `[server] listen`).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A main file on `listen` with `token`, and tenant acme on the SOTI
/// simulator: every enterprise wipe is held (hourly cap 0).
fn write_daemon_config(dir: &Path, listen: &str, token: &str, soti_url: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("tenants.d")).unwrap();
    std::fs::write(dir.join("token"), format!("{token}\n")).unwrap();
    let main = dir.join("connector.toml");
    std::fs::write(
        &main,
        format!(
            "[server]\nlisten = \"{listen}\"\n[store]\npath = \"state/c.db\"\n[admin]\ntoken = {{ file = \"token\" }}\n[sync]\nfull_sync_every = \"0\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("tenants.d/acme.toml"),
        format!(
            "id = \"acme\"\ndisplay_name = \"Acme Corp\"\nagent_secret = \"{AGENT_SECRET}\"\n\n{}[mdm.permit]\nenterprise_wipe = true\n\n[policy]\nmax_destructive_actions_per_hour = 0\n[[policy.rule]]\nthreat = \"device.*\"\naction = \"enterprise_wipe\"\n",
            soti_mdm("Acme SOTI", soti_url, soti::DEFAULT_PASSWORD)
        ),
    )
    .unwrap();
    main
}

/// Runs the binary with `args`; exit code, stdout, stderr.
pub(crate) fn cli(args: &[&str], config: Option<&Path>) -> (Option<i32>, String, String) {
    let mut c = Command::new(bin());
    c.args(args).env_remove("MTD_CONNECTOR_CONFIG");
    if let Some(config) = config {
        c.arg("--config").arg(config);
    }
    let out = c.output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_no_secret(&stdout, "stdout");
    assert_no_secret(&stderr, "stderr");
    (out.status.code(), stdout, stderr)
}

fn wait_until<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen in {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Posts a signed `device.jailbroken_rooted` event for the SOTI device `id`.
fn post_event(addr: &str, event_id: &str, device_id: &str) -> u16 {
    let body = serde_json::json!({
        "event_id": event_id,
        "detected_at": chrono::Utc::now().to_rfc3339(),
        "device": {"mdm_device_id": device_id},
        "threat": {"type": "device.jailbroken_rooted", "severity": "high"}
    })
    .to_string();
    let now = chrono::Utc::now().timestamp();
    let signature =
        mtd_connector::http::sign_agent_request(AGENT_SECRET.as_bytes(), now, body.as_bytes());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::new()
            .post(format!("http://{addr}/v1/agent/events"))
            .header("Content-Type", "application/json")
            .header("X-Mtd-Tenant", "acme")
            .header("X-Mtd-Timestamp", now.to_string())
            .header("X-Mtd-Signature", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

fn runs(addr: &str) -> Vec<serde_json::Value> {
    let (status, body) = admin_get(&format!("http://{addr}/v1/admin/tenants/acme/sync-runs"));
    assert_eq!(status, 200, "{body}");
    body["items"].as_array().unwrap().clone()
}

#[test]
fn the_commands_ask_the_running_daemon_and_say_plainly_what_went_wrong() {
    let sims = Sims::start();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let soti_url = sims.sim().base_url(SimKind::Soti);
    let config = write_daemon_config(dir.path(), &listen, ADMIN_TOKEN, &soti_url);

    // No daemon yet: plain words, non-zero.
    let (code, _, err) = cli(&["status"], Some(&config));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot reach the daemon at http://{listen}: connection refused; is `mtd-connector run` running on this config?")),
        "{err}"
    );

    let mut daemon = Daemon::start(&config);
    let addr = daemon.addr.clone();
    assert_eq!(addr, listen);
    daemon.wait_for_log(Duration::from_secs(60), |v| {
        v["message"] == "Full sync succeeded"
    });

    // Two held enterprise wipes.
    let devices = sims.sim().soti().unwrap().devices();
    let ids: Vec<String> = devices[..2]
        .iter()
        .map(|d| d["DeviceId"].as_str().unwrap().to_string())
        .collect();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(post_event(&addr, &format!("e-{n}"), id), 202);
    }
    let held: Vec<i64> = wait_until("two held wipes", Duration::from_secs(20), || {
        let (_, body) = admin_get(&format!(
            "http://{addr}/v1/admin/tenants/acme/actions?state=held"
        ));
        let ids: Vec<i64> = body["items"]
            .as_array()?
            .iter()
            .filter_map(|a| a["id"].as_i64())
            .collect();
        (ids.len() == 2).then_some(ids)
    });

    // status: the tenant, its MDM's health and the risk counts.
    let (code, out, err) = cli(&["status"], Some(&config));
    assert_eq!(code, Some(0), "{err}");
    for needle in [
        &format!("daemon http://{listen}: 1 tenant(s)"),
        "tenant acme  Acme Corp",
        "devices by risk  secured 23, low 0, medium 0, high 2, critical 0",
        "MDM \"Acme SOTI\" (soti): enabled",
        "last sync   succeeded",
        "initial: 25 added, 0 updated, 0 removed, 0 skipped",
        "errors      no failed sync in 24 h",
        "back-off    none",
        "actions     pending 0, held 2, dead 0",
        "devices     25 (0 activated)",
    ] {
        assert!(out.contains(needle), "`{needle}` missing:\n{out}");
    }
    let (code, out, _) = cli(&["status", "--tenant", "acme", "--json"], Some(&config));
    assert_eq!(code, Some(0));
    let json: serde_json::Value = serde_json::from_str(&out).expect("--json prints JSON");
    assert_eq!(json["tenants"][0]["status"]["devices_by_risk"]["high"], 2);
    let (code, _, err) = cli(&["status", "--tenant", "nope"], Some(&config));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("the daemon has no tenant `nope` (it has: acme)"),
        "{err}"
    );

    // actions: the held ones, aligned, then approve one and cancel the other.
    let (code, out, err) = cli(
        &["actions", "--tenant", "acme", "--state", "held"],
        Some(&config),
    );
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("ID"), "{out}");
    assert!(
        lines[1..].iter().all(|l| l.contains("enterprise_wipe")
            && l.contains("held")
            && l.contains("Acme SOTI")),
        "{out}"
    );
    let (code, out, err) = cli(
        &["approve", "--tenant", "acme", &held[0].to_string()],
        Some(&config),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("action {} (enterprise_wipe", held[0])),
        "{out}"
    );
    assert!(out.trim_end().ends_with("now pending"), "{out}");
    let (code, out, err) = cli(
        &["cancel", "--tenant", "acme", &held[1].to_string()],
        Some(&config),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.trim_end().ends_with("now cancelled"), "{out}");
    // The approved wipe reaches the MDM; the cancelled one never does.
    wait_until(
        "the approved wipe at the MDM",
        Duration::from_secs(20),
        || {
            let sent = sims.sim().soti().unwrap().core().actions();
            (sent.len() == 1).then_some(())
        },
    );
    let (code, _, err) = cli(
        &["approve", "--tenant", "acme", &held[1].to_string()],
        Some(&config),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "action {} is cancelled, not held: only a held action can be approved",
            held[1]
        )),
        "{err}"
    );
    let (code, _, err) = cli(&["cancel", "--tenant", "acme", "999999"], Some(&config));
    assert_eq!(code, Some(1));
    assert!(err.contains("tenant `acme` has no action 999999"), "{err}");
    let (code, _, err) = cli(&["actions", "--tenant", "nope"], Some(&config));
    assert_eq!(code, Some(1));
    assert!(err.contains("the daemon has no tenant `nope`"), "{err}");
    let (code, _, err) = cli(
        &["actions", "--tenant", "acme", "--state", "lost"],
        Some(&config),
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("the daemon refused: state:"), "{err}");

    // sync: asked of the daemon (trigger "admin"), followed to its end.
    let before = runs(&addr).len();
    let (code, out, err) = cli(&["sync", "--tenant", "acme"], Some(&config));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains("Acme SOTI: succeeded in")
            && out.contains("devices 0 added, 0 updated, 0 removed"),
        "{out}"
    );
    assert!(err.contains("full sync requested from the daemon"), "{err}");
    let after = runs(&addr);
    assert_eq!(after.len(), before + 1);
    assert_eq!(after[0]["trigger"], "admin", "the daemon ran it: {after:?}");
    assert_eq!(after[0]["outcome"], "succeeded");
    let (code, _, err) = cli(
        &["sync", "--tenant", "acme", "--mdm", "Nope"],
        Some(&config),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("mdm: the tenant has no MDM of that name"),
        "{err}"
    );

    // Another token on the same address: refused in words, and no sync here either.
    let other = tempfile::tempdir().unwrap();
    let wrong = write_daemon_config(other.path(), &listen, "some-other-token-123456", &soti_url);
    let (code, _, err) = cli(&["status"], Some(&wrong));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "the daemon at http://{listen} refused the admin token: the token that {} names ([admin] token) is not the daemon's",
            wrong.display()
        )),
        "{err}"
    );
    let (code, out, err) = cli(&["sync", "--tenant", "acme"], Some(&wrong));
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("refused the admin token"), "{err}");
    assert!(err.contains("not run in this process"), "{err}");
    assert!(
        !other.path().join("state/c.db").exists(),
        "no in-process sync opened a store"
    );
    assert_eq!(runs(&addr).len(), before + 1);

    // Daemon gone: `sync` runs in this process (trigger "cli").
    daemon.sigterm();
    let (status, _) = daemon.wait_exit(Duration::from_secs(20));
    assert!(status.success());
    let (code, out, err) = cli(&["sync", "--tenant", "acme"], Some(&config));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("Acme SOTI: succeeded in"), "{out}");
    assert!(!err.contains("requested from the daemon"), "{err}");
}

#[test]
fn status_reaches_an_https_daemon_on_an_unspecified_address_trusting_its_own_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let main = write_config(dir.path());
    // A certificate for a name the client does not connect to: the client
    // pins the configured certificate instead of checking names.
    let certified = rcgen::generate_simple_self_signed(vec!["mtd.example.com".into()]).unwrap();
    std::fs::write(dir.path().join("server.pem"), certified.cert.pem()).unwrap();
    std::fs::write(
        dir.path().join("server.key"),
        certified.key_pair.serialize_pem(),
    )
    .unwrap();
    let port = free_port();
    let text = std::fs::read_to_string(&main).unwrap().replacen(
        "listen = \"127.0.0.1:0\"\n",
        &format!(
            "listen = \"0.0.0.0:{port}\"\ntls_cert = \"server.pem\"\ntls_key = \"server.key\"\n"
        ),
        1,
    );
    std::fs::write(&main, text).unwrap();
    let _daemon = Daemon::start(&main);
    let (code, out, err) = cli(&["status"], Some(&main));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(&format!("daemon https://127.0.0.1:{port}: 1 tenant(s)")),
        "{out}"
    );
    assert!(out.contains("MDM \"Acme SOTI\" (soti): enabled"), "{out}");
    assert!(out.contains("last sync   never"), "{out}");

    // Another certificate in the config: the daemon's is not trusted.
    let other = rcgen::generate_simple_self_signed(vec!["mtd.example.com".into()]).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let main2 = dir2.path().join("connector.toml");
    std::fs::write(dir2.path().join("server.pem"), other.cert.pem()).unwrap();
    std::fs::write(
        dir2.path().join("server.key"),
        other.key_pair.serialize_pem(),
    )
    .unwrap();
    std::fs::write(
        &main2,
        format!("[server]\nlisten = \"0.0.0.0:{port}\"\ntls_cert = \"server.pem\"\ntls_key = \"server.key\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n"),
    )
    .unwrap();
    let (code, _, err) = cli(&["status"], Some(&main2));
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!(
            "cannot reach the daemon at https://127.0.0.1:{port}: TLS handshake failed"
        )),
        "{err}"
    );
}

#[test]
fn config_defaults_to_etc_and_mtd_connector_config_overrides_it() {
    for cmd in [
        "run",
        "check-config",
        "status",
        "sync",
        "actions",
        "approve",
    ] {
        let out = Command::new(bin()).args([cmd, "--help"]).output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains("MTD_CONNECTOR_CONFIG")
                && help.contains("/etc/mtd-connector/connector.toml"),
            "{cmd} --help does not say where --config comes from:\n{help}"
        );
    }
    // Neither given: the default path, named in the error.
    let (code, _, err) = cli(&["check-config"], None);
    assert_eq!(code, Some(2));
    assert!(err.contains("/etc/mtd-connector/connector.toml"), "{err}");
    // The variable alone is enough.
    let dir = tempfile::tempdir().unwrap();
    let main = write_config(dir.path());
    let out = Command::new(bin())
        .arg("check-config")
        .env("MTD_CONNECTOR_CONFIG", &main)
        .env(PASSWORD_ENV_VAR, ENV_PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("{}: OK", main.display())));
}

#[test]
fn a_config_on_port_zero_cannot_name_the_daemon_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let main = write_config(dir.path());
    let (code, _, err) = cli(&["status"], Some(&main));
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot reach the daemon at http://127.0.0.1:0: [server] listen has port 0"),
        "{err}"
    );
    // A broken tenant file does not matter to the commands that ask the daemon.
    std::fs::write(dir.path().join("tenants.d/broken.toml"), "id = ").unwrap();
    let (code, _, err) = cli(&["actions", "--tenant", "acme"], Some(&main));
    assert_eq!(code, Some(1));
    assert!(err.contains("port 0"), "{err}");
    // A broken main file does, with FILE:LINE:COL and exit 2.
    std::fs::write(&main, "[server]\nlisten = 8080\n").unwrap();
    let (code, _, err) = cli(&["status"], Some(&main));
    assert_eq!(code, Some(2));
    assert!(err.contains(&format!("{}:2:", main.display())), "{err}");
}
