//! Issue 13, item 15: the full-sync schedule cannot stop.
//!
//! tokio-cron-scheduler's fixed-repeat jobs stopped for good once a tick came
//! more than one interval late: a forward jump of the wall clock, or the
//! process being suspended (SIGSTOP, a paused VM) for longer than an
//! interval. The second is what this test does to the real binary: it needs
//! no root and leaves the machine's clock alone.

use crate::api::MdmSpec;
use crate::support::*;
use mtd_sim::SimKind;
use std::process::Command;
use std::time::{Duration, Instant};

const SCHEDULED: &str =
    "SELECT COUNT(*) FROM sync_runs WHERE trigger = 'scheduled' AND outcome = 'succeeded'";

async fn scheduled_runs(db: &std::path::Path) -> i64 {
    let pool = open_store(db).await;
    let n: i64 = sqlx::query_scalar(SCHEDULED)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

async fn wait_for_runs(db: &std::path::Path, at_least: i64, limit: Duration) -> i64 {
    let deadline = Instant::now() + limit;
    loop {
        let n = scheduled_runs(db).await;
        if n >= at_least {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{n} scheduled runs, not {at_least}, after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_full_syncs_go_on_after_the_daemon_was_suspended_for_several_intervals() {
    let env = env_without_rate_limits(&[SimKind::Soti], 5).await;
    let config = env.write_config("schedule", &[MdmSpec::new(SimKind::Soti)], "1s", "");
    let db = env.db_path();
    let mut daemon = Daemon::start(&config, "info").await;
    wait_for_runs(&db, 2, Duration::from_secs(20)).await;

    // Four intervals without the process running: to its scheduler, time
    // jumps four intervals ahead at once.
    signal(daemon.pid(), "STOP");
    tokio::time::sleep(Duration::from_secs(4)).await;
    signal(daemon.pid(), "CONT");

    let before = scheduled_runs(&db).await;
    wait_for_runs(&db, before + 3, Duration::from_secs(15)).await;

    let status = daemon.sigterm(Duration::from_secs(15)).await;
    assert!(status.success(), "{status}");
}
