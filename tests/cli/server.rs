//! Issue 13, items 4 and 14: the listener's timeouts and connection limit
//! (CONTRACT §6), the store's file modes, start-up warnings and plain logs on
//! a pipe, through the built binary over raw TCP (so a test sees exactly when
//! the daemon closes a connection).

use crate::support::*;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `write_config` with extra `[server]` keys.
fn config_with_server(dir: &Path, server: &str) -> PathBuf {
    let main = write_config(dir);
    let text = std::fs::read_to_string(&main).unwrap().replacen(
        "listen = \"127.0.0.1:0\"\n",
        &format!("listen = \"127.0.0.1:0\"\n{server}"),
        1,
    );
    std::fs::write(&main, text).unwrap();
    main
}

const HEALTHZ_KEEP_ALIVE: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: connector\r\n\r\n";
const HEALTHZ_CLOSE: &[u8] =
    b"GET /healthz HTTP/1.1\r\nHost: connector\r\nConnection: close\r\n\r\n";
/// A request head without its final empty line.
const HALF_SENT: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: connector\r\n";

/// A signed agent event (for a device no MDM can be asked about: it is kept and answered 202).
fn signed_event(event_id: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "event_id": event_id,
        "detected_at": "2026-11-22T10:00:00Z",
        "device": {"udid": format!("udid-{event_id}")},
        "threat": {"type": "device.usb_debugging", "severity": "high"}
    })
    .to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let signature =
        mtd_connector::http::sign_agent_request(AGENT_SECRET.as_bytes(), now, body.as_bytes());
    format!(
        "POST /v1/agent/events HTTP/1.1\r\nHost: connector\r\nContent-Type: application/json\r\n\
         X-Mtd-Tenant: acme\r\nX-Mtd-Timestamp: {now}\r\nX-Mtd-Signature: {signature}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 response (Content-Length framed) from `s`.
fn read_response(s: &mut TcpStream, limit: Duration) -> Result<(u16, String), String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("not an HTTP response: {head:?}"))?;
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + length]).to_string();
                return Ok((status, body));
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return Err(format!("closed before a whole response: {buf:?}")),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("no response within {limit:?}: {e}")),
        }
    }
}

/// One request on a fresh connection.
fn exchange(addr: &str, request: &[u8], limit: Duration) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("cannot connect: {e}"))?;
    s.write_all(request)
        .map_err(|e| format!("cannot send: {e}"))?;
    read_response(&mut s, limit)
}

/// Waits until the daemon closes `s`; `Err` if it is still open after `limit` (or sent data).
fn wait_closed(s: &mut TcpStream, limit: Duration) -> Result<(), String> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut chunk = [0u8; 1024];
    match s.read(&mut chunk) {
        Ok(0) => Ok(()),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
        Ok(n) => Err(format!(
            "unexpected data: {:?}",
            String::from_utf8_lossy(&chunk[..n])
        )),
        Err(e) => Err(format!("still open after {limit:?} ({e})")),
    }
}

#[test]
fn with_500_idle_and_half_sent_connections_under_a_low_descriptor_limit_health_and_signed_requests_are_answered(
) {
    let dir = tempfile::tempdir().unwrap();
    // Short timeouts: the descriptor limit (256) is below the 500 sockets, so
    // the daemon holds fewer than them and sheds the rest by its timeouts.
    let config = config_with_server(
        dir.path(),
        "header_read_timeout = \"1s\"\nidle_timeout = \"1s\"\n",
    );
    let daemon = Daemon::start_with(
        &config,
        &StartOptions {
            rust_log: "info",
            nofile: Some(256),
            ..Default::default()
        },
    );

    let mut held = Vec::new();
    for n in 0..500 {
        let mut s = TcpStream::connect(&daemon.addr).expect("the kernel queues the connection");
        if n % 2 == 1 {
            let _ = s.write_all(HALF_SENT);
        }
        held.push(s);
    }
    let addr = daemon.addr.clone();
    let health =
        std::thread::spawn(move || exchange(&addr, HEALTHZ_CLOSE, Duration::from_secs(15)));
    let addr = daemon.addr.clone();
    let agent = std::thread::spawn(move || {
        exchange(
            &addr,
            &signed_event("evt-under-load"),
            Duration::from_secs(15),
        )
    });
    let health = health.join().unwrap();
    let agent = agent.join().unwrap();
    drop(held);

    daemon.sigterm();
    let (status, log) = daemon.wait_exit(Duration::from_secs(10));
    assert_eq!(health.as_ref().map(|r| r.0), Ok(200), "{health:?}\n{log}");
    assert_eq!(agent.as_ref().map(|r| r.0), Ok(202), "{agent:?}\n{log}");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        log.contains("max_connections"),
        "the daemon says it holds fewer connections than configured: {log}"
    );
    assert_no_secret(&log, "the log");
}

#[test]
fn a_half_sent_request_head_and_a_silent_connection_are_closed_after_the_header_read_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_server(dir.path(), "header_read_timeout = \"1s\"\n");
    let daemon = Daemon::start_with(
        &config,
        &StartOptions {
            rust_log: "info",
            ..Default::default()
        },
    );
    let started = Instant::now();
    let mut half = TcpStream::connect(&daemon.addr).unwrap();
    half.write_all(HALF_SENT).unwrap();
    let mut silent = TcpStream::connect(&daemon.addr).unwrap();

    let closed_half = wait_closed(&mut half, Duration::from_secs(10));
    let closed_silent = wait_closed(&mut silent, Duration::from_secs(10));
    let elapsed = started.elapsed();
    assert_eq!(closed_half, Ok(()), "the half-sent head");
    assert_eq!(closed_silent, Ok(()), "the silent connection");
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed before the timeout: {elapsed:?}"
    );
    // The listener goes on serving.
    assert_eq!(
        exchange(&daemon.addr, HEALTHZ_CLOSE, Duration::from_secs(5)).map(|r| r.0),
        Ok(200)
    );
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout_and_served_until_then() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_server(
        dir.path(),
        "header_read_timeout = \"30s\"\nidle_timeout = \"1s\"\n",
    );
    let daemon = Daemon::start_with(
        &config,
        &StartOptions {
            rust_log: "info",
            ..Default::default()
        },
    );
    let mut s = TcpStream::connect(&daemon.addr).unwrap();
    for _ in 0..3 {
        s.write_all(HEALTHZ_KEEP_ALIVE).unwrap();
        assert_eq!(
            read_response(&mut s, Duration::from_secs(5)).map(|r| r.0),
            Ok(200),
            "a keep-alive request inside the idle timeout is served"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let idle_from = Instant::now();
    assert_eq!(wait_closed(&mut s, Duration::from_secs(10)), Ok(()));
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(600),
        "closed before the idle timeout: {idle:?}"
    );
}

#[test]
fn with_max_connections_two_a_third_connection_is_served_only_after_one_closes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_with_server(dir.path(), "max_connections = 2\n");
    let daemon = Daemon::start_with(
        &config,
        &StartOptions {
            rust_log: "info",
            ..Default::default()
        },
    );
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(&daemon.addr).unwrap();
        s.write_all(HEALTHZ_KEEP_ALIVE).unwrap();
        assert_eq!(
            read_response(&mut s, Duration::from_secs(5)).map(|r| r.0),
            Ok(200)
        );
        open.push(s);
    }
    let mut third = TcpStream::connect(&daemon.addr).expect("queued, not refused");
    third.write_all(HEALTHZ_KEEP_ALIVE).unwrap();
    let waiting = read_response(&mut third, Duration::from_millis(1500));
    assert!(
        waiting.is_err(),
        "the third connection was served while two were open: {waiting:?}"
    );
    drop(open.remove(0));
    assert_eq!(
        read_response(&mut third, Duration::from_secs(5)).map(|r| r.0),
        Ok(200),
        "served once a connection closed"
    );
}

#[test]
fn the_store_files_are_readable_by_their_owner_only_whatever_the_umask() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let daemon = Daemon::start_with(
        &config,
        &StartOptions {
            rust_log: "info",
            umask: Some(0o022),
            ..Default::default()
        },
    );
    assert_eq!(get(&daemon.url("/readyz")).0, 200);
    for name in ["connector.db", "connector.db-wal", "connector.db-shm"] {
        let path = dir.path().join("state").join(name);
        let mode = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{name} has mode {mode:o}: it holds the PII masking key"
        );
    }
}

#[test]
fn a_store_file_left_world_readable_by_an_older_version_is_made_private_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let db = dir.path().join("state/connector.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
    let daemon = Daemon::start_with(
        &config,
        &StartOptions {
            rust_log: "info",
            ..Default::default()
        },
    );
    assert_eq!(get(&daemon.url("/readyz")).0, 200);
    let mode = std::fs::metadata(&db).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "mode {mode:o}");
}

#[test]
fn start_warns_about_plain_http_to_a_remote_mdm_and_short_secrets_without_printing_them() {
    const SHORT_AGENT: &str = "short-agent-sec"; // 15 bytes
    const SHORT_ADMIN: &str = "short-admin-tok"; // 15 bytes
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let main = std::fs::read_to_string(&config)
        .unwrap()
        .replace(ADMIN_TOKEN, SHORT_ADMIN);
    std::fs::write(&config, main).unwrap();
    let tenant_file = dir.path().join("tenants.d/acme.toml");
    let tenant = std::fs::read_to_string(&tenant_file)
        .unwrap()
        .replace(AGENT_SECRET, SHORT_AGENT)
        .replace(
            "https://127.0.0.1:9/MobiControl",
            "http://mdm.example.com/MobiControl",
        );
    // A second MDM on loopback over http: no warning for it.
    let local = tenant
        .split("[policy]")
        .next()
        .unwrap()
        .split_once("[[mdm]]")
        .unwrap()
        .1
        .replace("Acme SOTI", "Local SOTI")
        .replace(
            "http://mdm.example.com/MobiControl",
            "http://127.0.0.1:9/MobiControl",
        );
    let tenant = tenant.replacen("[policy]", &format!("[[mdm]]{local}\n[policy]"), 1);
    std::fs::write(&tenant_file, tenant).unwrap();

    let daemon = Daemon::start_with(
        &config,
        &StartOptions {
            rust_log: "info",
            ..Default::default()
        },
    );
    assert_eq!(get(&daemon.url("/healthz")).0, 200);
    daemon.sigterm();
    let (status, log) = daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{log}");
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("\"WARN\"")).collect();
    let has = |parts: &[&str]| warnings.iter().any(|w| parts.iter().all(|p| w.contains(p)));
    assert!(
        has(&["Acme SOTI", "http://", "mdm.example.com"]),
        "no warning about the plain-http MDM: {warnings:#?}"
    );
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("Local SOTI") && w.contains("http")),
        "an http MDM on loopback is fine: {warnings:#?}"
    );
    assert!(
        has(&["agent_secret", "acme", "16"]),
        "no warning about the short agent secret: {warnings:#?}"
    );
    assert!(
        has(&["admin.token", "16"]),
        "no warning about the short admin token: {warnings:#?}"
    );
    for secret in [SHORT_AGENT, SHORT_ADMIN] {
        assert!(!log.contains(secret), "the log shows a secret:\n{log}");
    }
}

#[test]
fn text_logs_written_to_a_pipe_carry_no_colour_codes() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .env(PASSWORD_ENV_VAR, ENV_PASSWORD)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log.contains("Serving the agent and admin API") && Instant::now() < deadline {
        let mut line = String::new();
        if stderr.read_line(&mut line).unwrap() == 0 {
            break;
        }
        log.push_str(&line);
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = stderr.read_to_string(&mut log);
    let status = child.wait().unwrap();
    assert!(status.success(), "{log}");
    assert!(log.contains("Serving the agent and admin API"), "{log}");
    assert!(
        !log.contains("\x1b["),
        "ANSI escape codes in a log written to a pipe:\n{log:?}"
    );
}

/// Text logs on a terminal carry colours, unless `NO_COLOR` is set (the
/// terminal is a pseudo-terminal from util-linux's `script`, when installed).
#[test]
fn text_logs_on_a_terminal_carry_colours_unless_no_color_is_set() {
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("`script` is not installed: no terminal to test colours on");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // A port that is taken: `run` logs an ERROR line and exits at once.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let config = write_config(dir.path());
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", taken.local_addr().unwrap()),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let on_terminal = |no_color: Option<&str>| {
        let mut c = std::process::Command::new("script");
        c.args(["-qec"])
            .arg(format!("'{}' run --config '{}'", bin(), config.display()))
            .arg("/dev/null")
            .env(PASSWORD_ENV_VAR, ENV_PASSWORD)
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = on_terminal(None);
    assert!(coloured.contains("Cannot start"), "{coloured:?}");
    assert!(
        coloured.contains("\x1b["),
        "no colour on a terminal: {coloured:?}"
    );
    let plain = on_terminal(Some("1"));
    assert!(plain.contains("Cannot start"), "{plain:?}");
    assert!(
        !plain.contains("\x1b["),
        "colours despite NO_COLOR: {plain:?}"
    );
}
