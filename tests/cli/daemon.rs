use crate::support::*;
use std::time::{Duration, Instant};

#[test]
fn run_serves_health_and_readiness_and_exits_zero_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let daemon = Daemon::start(&config);

    assert_eq!(get(&daemon.url("/healthz")).0, 200);
    let (status, body) = get(&daemon.url("/readyz"));
    assert_eq!(status, 200, "{body}");
    assert!(
        dir.path().join("state/connector.db").exists(),
        "the SQLite file is created beside the config"
    );

    let asked = Instant::now();
    daemon.sigterm();
    let (status, log) = daemon.wait_exit(Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}; log:\n{log}");
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(log.contains("Shutdown requested"), "{log}");
    assert_no_secret(&log, "the trace-level log");
}

#[test]
fn a_second_start_on_the_same_store_works() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    for round in 0..2 {
        let daemon = Daemon::start(&config);
        assert_eq!(get(&daemon.url("/readyz")).0, 200, "round {round}");
        daemon.sigterm();
        let (status, log) = daemon.wait_exit(Duration::from_secs(5));
        assert!(status.success(), "round {round}: {log}");
    }
}

#[test]
fn the_store_has_every_migration_applied() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let daemon = Daemon::start(&config);
    daemon.sigterm();
    daemon.wait_exit(Duration::from_secs(5));

    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let applied: i64 = rt.block_on(async {
        let url = format!(
            "sqlite://{}",
            dir.path().join("state/connector.db").display()
        );
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations WHERE success = 1")
            .fetch_one(&pool)
            .await
            .unwrap()
    });
    assert_eq!(applied as usize, migrations);
}

#[test]
fn json_log_format_writes_one_json_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let daemon = Daemon::start(&config);
    daemon.sigterm();
    let (_, log) = daemon.wait_exit(Duration::from_secs(5));
    for line in log.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

#[test]
fn run_with_a_broken_config_exits_two_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    std::fs::write(
        dir.path().join("tenants.d/broken.toml"),
        "id = \"Bad Id\"\nagent_secret = \"x\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("broken.toml:1:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!dir.path().join("state/connector.db").exists());
}
