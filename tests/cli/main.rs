//! The CLI through the built binary: exit codes, `FILE:LINE:COL` errors,
//! the daemon's health endpoints, SIGTERM, and that no secret is ever printed.

mod admin;
mod check_config;
mod daemon;
mod demo;
mod notify;
mod ops;
mod reload;
mod server;
mod support;

use support::bin;

#[test]
fn help_lists_the_commands_that_exist() {
    let out = std::process::Command::new(bin())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "run",
        "demo",
        "check-config",
        "test-connection",
        "sync",
        "sim",
        "status",
        "actions",
        "approve",
        "cancel",
    ] {
        assert!(text.contains(cmd), "--help does not list `{cmd}`:\n{text}");
    }
    assert!(
        text.contains("--log-format"),
        "--help does not show the global --log-format:\n{text}"
    );
}

#[test]
fn every_command_has_its_own_help() {
    for cmd in [
        "run",
        "check-config",
        "test-connection",
        "sync",
        "status",
        "actions",
        "approve",
        "cancel",
    ] {
        let out = std::process::Command::new(bin())
            .args([cmd, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{cmd} --help failed");
        assert!(String::from_utf8_lossy(&out.stdout).contains("--config"));
    }
}
