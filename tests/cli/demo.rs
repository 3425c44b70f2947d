use crate::support::bin;
use std::process::Command;

/// Too few devices for the demo's events (it picked devices of each kind by
/// index and panicked at 10): a clear usage error instead, exit 2.
#[test]
fn demo_with_too_few_devices_is_a_usage_error_not_a_panic() {
    for n in ["10", "0"] {
        let out = Command::new(bin())
            .args([
                "demo",
                "--exit-after",
                "--listen",
                "127.0.0.1:0",
                "--devices",
                n,
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{n}: {stderr}");
        assert!(
            stderr.contains("--devices") && stderr.contains("20..=100000"),
            "{n}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{n}: {stderr}");
    }
}

#[test]
fn demo_exit_after_runs_every_step_and_prints_the_summary() {
    let out = Command::new(bin())
        .args([
            "demo",
            "--exit-after",
            "--listen",
            "127.0.0.1:0",
            "--devices",
            "30",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    for needle in [
        "1. Initial sync",
        "acme     Acme SOTI",
        "umbrella Umbrella MaaS360",
        "globex   Globex AirWatch",
        "initech  Initech BCDM",
        "-> 202",
        "3. Actions (device, action, state)",
        "4. What each simulated MDM received",
        "Lock",
        "EnterpriseWipe",
        "lockDevice",
        "selectiveWipeDevice",
        "wipeDevice",
        "5. Risk level at each MDM",
        "detected: MDM holds high resolved: MDM holds secured",
        "6. Cisco ISE's view",
        "before    ",
        "NOT compliant: high risk: open threats network.arp_mitm",
        "curl -sS -u ise-acme:",
        "curl -sS -X POST http://",
        "Every step worked.",
    ] {
        assert!(
            stdout.contains(needle),
            "the summary lacks `{needle}`:\n{stdout}"
        );
    }
    assert!(!stdout.contains("FAILED"), "{stdout}");
    // The demo holds its credentials as files, as it tells admins to.
    assert!(
        !stderr.contains("is a literal"),
        "the demo config has literal secrets:\n{stderr}"
    );
}

/// Issue 20's acceptance: `status` against the running demo prints every
/// tenant and MDM with their health and risk counts, from the config path
/// the demo prints.
#[test]
fn status_against_the_running_demo_shows_every_tenant_and_mdm_with_health_and_risk() {
    use std::io::{BufRead, BufReader};
    let mut demo = Command::new(bin())
        .args(["demo", "--listen", "127.0.0.1:0", "--devices", "20"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Ends the demo however the test ends.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = demo.stdout.take().unwrap();
    let mut demo = Stop(demo);
    let mut summary = String::new();
    let mut config = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        if let Some(path) =
            line.strip_prefix("Command line, while the demo runs: mtd-connector status --config ")
        {
            config = Some(path.to_string());
        }
        let serving = line.starts_with("Serving until Ctrl-C");
        summary.push_str(&line);
        summary.push('\n');
        if serving {
            break;
        }
    }
    let config = config.unwrap_or_else(|| panic!("the demo names no config:\n{summary}"));
    // The console, named in the summary, answers with its login page.
    let console = summary
        .lines()
        .find_map(|l| l.strip_prefix("Console in the browser, while the demo runs: "))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("the demo names no console:\n{summary}"));
    let (code, page) = crate::support::get(&format!("{console}login"));
    assert_eq!(code, 200, "{console}login: {page}");
    assert!(page.contains("token"), "{page}");
    assert!(
        summary.contains(&format!("config      {config}")),
        "{summary}"
    );

    let out = Command::new(bin())
        .args(["status", "--config", &config])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("4 tenant(s)"), "{text}");
    for (tenant, mdm, kind) in [
        ("acme", "Acme SOTI", "soti"),
        ("umbrella", "Umbrella MaaS360", "maas360"),
        ("globex", "Globex AirWatch", "airwatch"),
        ("initech", "Initech BCDM", "bcdm"),
    ] {
        let block = text
            .split("\ntenant ")
            .find(|b| b.starts_with(&format!("{tenant} ")))
            .unwrap_or_else(|| panic!("no tenant {tenant}:\n{text}"));
        for needle in [
            format!("MDM \"{mdm}\" ({kind}): enabled"),
            "last sync   succeeded".to_string(),
            "devices by risk  secured ".to_string(),
            "back-off    none".to_string(),
            "actions     pending ".to_string(),
        ] {
            assert!(
                block.contains(&needle),
                "tenant {tenant} lacks `{needle}`:\n{block}"
            );
        }
    }
    // The demo's threats leave devices at risk; status counts them.
    let at_risk: u64 = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("devices by risk  "))
        .flat_map(|l| l.split(", "))
        .filter(|kv| !kv.starts_with("secured"))
        .filter_map(|kv| kv.split(' ').nth(1)?.parse::<u64>().ok())
        .sum();
    assert!(at_risk > 0, "no device at risk:\n{text}");

    let pid = demo.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = demo.0.wait().unwrap();
    assert!(
        status.success(),
        "the demo ends with 0 on SIGTERM: {status:?}"
    );
    assert!(
        !std::path::Path::new(&config).exists(),
        "the throw-away config is removed"
    );
}
