//! SIGHUP to the running binary: a new tenant file is loaded and its MDM
//! synced without a restart; a broken file is refused, logged with
//! `FILE:LINE:COL`, and the daemon keeps serving the config it had.

use crate::ops::{airwatch_mdm, soti_mdm, Sims};
use crate::support::{admin_get, get, Daemon, ADMIN_TOKEN};
use mtd_sim::{airwatch, SimKind};
use std::path::Path;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(30);

fn write_tenant(dir: &Path, id: &str, mdm: &str) {
    let mdm = mdm.replace("background_sync = false", "background_sync = true");
    std::fs::write(
        dir.join(format!("tenants.d/{id}.toml")),
        format!("id = \"{id}\"\nagent_secret = \"{id}-agent-secret-1\"\n\n{mdm}"),
    )
    .unwrap();
}

/// Polls the admin API until the tenant's MDM has a finished sync run.
fn wait_synced(d: &Daemon, tenant: &str) -> serde_json::Value {
    let deadline = Instant::now() + LIMIT;
    loop {
        let (status, runs) = admin_get(&d.url(&format!("/v1/admin/tenants/{tenant}/sync-runs")));
        if status == 200 {
            if let Some(run) = runs["items"]
                .as_array()
                .and_then(|r| r.iter().find(|r| !r["finished_at"].is_null()))
            {
                return run.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{tenant} did not sync within {LIMIT:?} (last answer {status}: {runs})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tenant_ids(d: &Daemon) -> Vec<String> {
    let (status, list) = admin_get(&d.url("/v1/admin/tenants"));
    assert_eq!(status, 200, "{list}");
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn sighup_loads_a_new_tenant_and_a_broken_file_keeps_the_old_config() {
    let sims = Sims::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("tenants.d")).unwrap();
    let main = root.join("connector.toml");
    std::fs::write(
        &main,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data/c.db\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n[sync]\nfull_sync_every = \"0\"\n"),
    )
    .unwrap();
    let soti_url = sims.sim().base_url(SimKind::Soti);
    write_tenant(
        root,
        "acme",
        &soti_mdm("Acme SOTI", &soti_url, mtd_sim::soti::DEFAULT_PASSWORD),
    );
    let mut d = Daemon::start(&main);
    assert_eq!(wait_synced(&d, "acme")["outcome"], "succeeded");
    assert_eq!(tenant_ids(&d), ["acme"]);

    // A new tenant file, then SIGHUP: served and synced without a restart.
    let airwatch_url = sims.sim().base_url(SimKind::Airwatch);
    write_tenant(
        root,
        "beta",
        &airwatch_mdm("Beta AirWatch", &airwatch_url, airwatch::DEFAULT_USERNAME),
    );
    d.sighup();
    let reloaded = d.wait_for_log(LIMIT, |v| v["message"] == "Config reloaded");
    assert_eq!(reloaded["tenants"], 2, "{reloaded}");
    let run = wait_synced(&d, "beta");
    assert_eq!(run["outcome"], "succeeded", "{run}");
    assert_eq!(run["trigger"], "initial", "{run}");
    assert_eq!(tenant_ids(&d), ["acme", "beta"]);

    // A broken file: refused with FILE:LINE:COL, and the old config stays.
    let broken = root.join("tenants.d/gamma.toml");
    std::fs::write(
        &broken,
        "id = \"gamma\"\nagent_secret = \"gamma-agent-secret\"\n\n[[mdm]]\nname = \"G\"\nkind = \"intune\"\nurl = \"https://g.example\"\n",
    )
    .unwrap();
    d.sighup();
    d.wait_for_log(LIMIT, |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Reload refused"))
    });
    let position = format!("{}:6:8:", broken.display());
    assert!(
        d.log.iter().any(|l| l.contains(&position)),
        "the log names {position}:\n{}",
        d.log.join("\n")
    );
    assert_eq!(tenant_ids(&d), ["acme", "beta"], "still the old config");
    assert_eq!(get(&d.url("/readyz")).0, 200);

    // Removing a tenant file takes the tenant out of service.
    std::fs::remove_file(&broken).unwrap();
    std::fs::remove_file(root.join("tenants.d/beta.toml")).unwrap();
    d.sighup();
    d.wait_for_log(LIMIT, |v| v["message"] == "Config reloaded");
    assert_eq!(tenant_ids(&d), ["acme"]);
    assert_eq!(
        admin_get(&d.url("/v1/admin/tenants/beta/devices")).0,
        404,
        "a removed tenant is not served"
    );

    d.sigterm();
    let (status, _) = d.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
}
