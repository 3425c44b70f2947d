//! Helpers both bench binaries use: the machine line, the load average,
//! per-thread CPU time, reading numbers out of a case's JSON line.

use serde_json::Value;
use std::collections::HashMap;

pub fn f(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

/// The 1, 5 and 15 minute load averages: the figures are wall times, so
/// other work on the machine shows in them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU");
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| format!("{:.1} GiB RAM", kb / 1024.0 / 1024.0))
        .unwrap_or_else(|| "? RAM".into());
    format!("{cpus} CPUs (nproc), {model}, {mem}")
}

/// Per thread of this process: its name and user + system CPU ticks.
pub fn thread_cpu() -> HashMap<u64, (String, u64)> {
    let mut out = HashMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state …`: comm may hold spaces and parentheses, so
        // split at the last `)`. utime and stime are fields 14 and 15, i.e.
        // the 12th and 13th after the comm.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let rest: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let ticks = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.insert(tid, (comm, ticks(11) + ticks(12)));
    }
    out
}

/// `--help` (or `-h`) among a bench's arguments: prints the bench's
/// documentation, the `//!` header of its source (`include_str!` of the
/// bench's own file), and returns true so the caller stops before running
/// anything: an unknown flag must not start a run of many minutes.
pub fn help_asked(args: &[String], source: &str) -> bool {
    if !args.iter().any(|a| a == "--help" || a == "-h") {
        return false;
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for line in source.lines().take_while(|l| l.starts_with("//!")) {
        let text = line.trim_start_matches("//!");
        // A closed pipe (`--help | head`) ends the help, not in a panic.
        if writeln!(out, "{}", text.strip_prefix(' ').unwrap_or(text)).is_err() {
            break;
        }
    }
    true
}

/// An argument a bench's parser does not know. `cargo bench` passes `--bench`
/// and a filter (these benches have none), and `cargo bench -- OPTIONS` hands
/// OPTIONS to every bench binary, so an unknown option is warned about, not
/// refused: it may be another bench's.
pub fn other_arg(arg: &str) {
    if arg != "--bench" && arg.starts_with('-') {
        eprintln!("warning: `{arg}` is not an option of this bench; ignored (`--help` lists them)");
    }
}
