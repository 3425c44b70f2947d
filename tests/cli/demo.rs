use crate::support::bin;
use std::process::Command;

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
