//! Issue 20, item 5: the daemon tells systemd (`Type=notify`) that it is
//! ready once it serves, reloading and ready again around a SIGHUP, and
//! stopping when it drains, on the socket `$NOTIFY_SOCKET` names.

use crate::support::*;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The next notification on `socket` (one datagram), as text.
fn next(socket: &UnixDatagram, what: &str) -> String {
    let mut buf = [0u8; 4096];
    match socket.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!("no notification ({what}): {e}"),
    }
}

fn start(config: &std::path::Path, notify_socket: std::ffi::OsString) -> Daemon {
    Daemon::start_with(
        config,
        &StartOptions {
            env: vec![("NOTIFY_SOCKET", notify_socket)],
            ..StartOptions::default()
        },
    )
}

#[test]
fn the_daemon_notifies_ready_once_serving_reloading_around_sighup_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let daemon = start(&config, path.clone().into_os_string());

    let ready = next(&socket, "ready");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(
        ready.contains(&format!("STATUS=Serving on http://{}", daemon.addr)),
        "{ready:?}"
    );
    // Ready means the listener answers and the store takes writes.
    assert_eq!(get(&daemon.url("/readyz")).0, 200);

    daemon.sighup();
    let reloading = next(&socket, "reloading");
    assert!(
        reloading.lines().any(|l| l == "RELOADING=1"),
        "{reloading:?}"
    );
    let again = next(&socket, "ready after the reload");
    assert!(again.lines().any(|l| l == "READY=1"), "{again:?}");
    assert!(again.contains("STATUS=Config reloaded"), "{again:?}");

    // A broken tenant file: refused, and ready again on the old config.
    std::fs::write(dir.path().join("tenants.d/broken.toml"), "id = ").unwrap();
    daemon.sighup();
    assert!(next(&socket, "reloading").contains("RELOADING=1"));
    let refused = next(&socket, "ready after a refused reload");
    assert!(refused.lines().any(|l| l == "READY=1"), "{refused:?}");
    assert!(refused.contains("Reload refused"), "{refused:?}");

    daemon.sigterm();
    let stopping = next(&socket, "stopping");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    let (status, log) = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{log}");
}

#[test]
fn the_daemon_notifies_an_abstract_socket_and_runs_without_one() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("mtd-connector-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let daemon = start(&config, format!("@{name}").into());
    assert!(next(&socket, "ready").lines().any(|l| l == "READY=1"));
    daemon.sigterm();
    assert!(daemon.wait_exit(Duration::from_secs(10)).0.success());

    // A socket nobody listens on: a warning, and the daemon serves all the same.
    let daemon = start(&config, dir.path().join("nobody.sock").into_os_string());
    assert_eq!(get(&daemon.url("/healthz")).0, 200);
    daemon.sigterm();
    let (status, log) = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{log}");
    assert!(log.contains("Cannot notify systemd"), "{log}");
}

/// The unit as shipped: `Type=notify`, the config checked before a reload,
/// no restart on the exit status `run` uses for a bad config, and clean for
/// `systemd-analyze verify` (where installed) once the binary path exists.
#[test]
fn the_systemd_unit_waits_for_ready_checks_before_reload_and_never_restarts_on_a_bad_config() {
    let unit_path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/mtd-connector.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    assert!(lines.contains(&"Type=notify"), "{unit}");
    let reloads: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ExecReload="))
        .collect();
    assert_eq!(reloads.len(), 2, "{unit}");
    assert!(reloads[0].contains(" check-config "), "{reloads:?}");
    assert!(reloads[1].contains("kill -HUP $MAINPID"), "{reloads:?}");
    assert!(
        lines.contains(
            &format!(
                "RestartPreventExitStatus={}",
                mtd_connector::cli::EXIT_CONFIG
            )
            .as_str()
        ),
        "{unit}"
    );
    assert!(lines.iter().any(|l| l.starts_with("StartLimitBurst=")));

    // `run` on a broken config exits with exactly that status.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.toml"), "[server\n").unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(dir.path().join("broken.toml"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(i32::from(mtd_connector::cli::EXIT_CONFIG))
    );

    let Ok(version) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed: the unit's syntax is not verified here");
        return;
    };
    assert!(version.status.success());
    let copy = dir.path().join("mtd-connector.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/mtd-connector", bin())).unwrap();
    let verify = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&verify.stderr).into_owned()
        + &String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success() && said.trim().is_empty(), "{said}");
}
