//! Process metrics, rendered in the Prometheus text exposition format 0.0.4
//! at `GET /metrics` (see `http::metrics`).
//!
//! A leaf: recorders take plain labels (`&'static str` codes), so nothing
//! here names HTTP errors, store rows or adapters; the callers map their
//! own types to labels.
//!
//! Hand-written on purpose: a dozen families at event and sync rates need a
//! `Mutex<BTreeMap<labels, value>>` each, not a metrics framework and its
//! dependencies. The registry is one process-wide `static` ([`REGISTRY`],
//! built in a `const` context, so there is nothing to initialise): the call
//! sites (the adapter decorator built by `adapters::build`, which
//! `test-connection` uses too, the sync workers, the dispatcher, the agent
//! handlers) share no handle but the process, and a metric is a fact about
//! the process, which is what Prometheus scrapes. Tests that share the
//! registry read deltas of series labelled with a tenant of their own; the
//! rendering is tested on local [`Registry`] values.
//!
//! What the families count:
//! - `mtd_agent_events_*_total{tenant}`: events in verified, well-formed
//!   posts (received), and of those the new ones stored (accepted) and the
//!   repeats of a stored `event_id` (duplicate).
//! - `mtd_agent_requests_refused_total{tenant,reason}`: agent requests
//!   answered with an error. `tenant` is present only when the signature was
//!   verified: a refusal before that (`unauthorized`, `payload_too_large`)
//!   must not put client-chosen text in a label.
//! - `mtd_actions_total{kind,state}`: each time an action row *enters* a
//!   state: `pending`, `held` or `skipped` when decided (at ingest, for a
//!   deferred event, or a scheduled follow-up), then `failed` for each
//!   attempt to be retried, and its final state (`sent`, `skipped`, `dead`,
//!   `cancelled`). So `state="sent"` counts actions delivered, and
//!   `state="pending"` actions queued; one action may count in several states.
//! - `mtd_action_delivery_seconds{kind}`: from the action row's creation to
//!   `sent`, for actions a threat caused; scheduled follow-ups (the Wi-Fi
//!   profile removal) wait on purpose and are left out.
//! - `mtd_mdm_requests_total{kind,operation,class}` and
//!   `mtd_mdm_request_seconds{kind,operation}`: one per adapter call
//!   (`health_check`, `lookup_device`, `execute`) and per page of a listing
//!   (`list_devices`, `list_users`, `list_groups`); `class` is `ok` or the
//!   adapter error's class (`unauthorized`, `unavailable`, …). One call may
//!   be more than one HTTP request (a login first).
//! - `mtd_sync_runs_total{kind,outcome}`, `mtd_sync_run_seconds{kind}`: full syncs.
//! - `mtd_ise_requests_total{tenant,operation}`, `mtd_ise_request_seconds{operation}`:
//!   Cisco ISE's authenticated requests (`mdminfo`, `devices`, `noncompliant`,
//!   `batchdevices`, `action`, `sendmessage`) and how long the answers took.
//! - `mtd_ise_auth_failures_total`: ISE requests refused for their credentials
//!   (no tenant label: an unknown user name names none).
//! - `mtd_devices{tenant}`: live devices, read from the store at scrape time.
//! - `mtd_devices_by_risk{tenant,level}`: live devices at each risk level
//!   (`secured`, `low` … `critical`), read from the store at scrape time.
//! - `mtd_mdm_last_successful_sync_timestamp_seconds{tenant,mdm}`: when the
//!   MDM's last successful full sync ended (Unix time; 0 if it never
//!   succeeded, so `time() - x > 3600` alerts on it too), from the store.
//! - `mtd_mdm_devices{tenant,mdm}` and `mtd_mdm_devices_by_risk{tenant,mdm,level}`:
//!   the MDM's live devices, in all and at each risk level, from the store.
//! - `mtd_build_info{version}`: always 1.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The `Content-Type` of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bounds of MDM call latencies: tens of milliseconds to a timeout.
const MDM_BUCKETS: &[f64] = &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
/// Bounds of ISE answers: ISE waits 200 ms, our target is 50 ms at p99.
const ISE_BUCKETS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5];
/// Bounds of delivery: sub-second when the MDM answers at once, hours when it retries.
const DELIVERY_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
];
/// Bounds of full syncs: a second for a small MDM to an hour for a large one.
const SYNC_BUCKETS: &[f64] = &[
    0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0,
];

/// One MDM's figures read from the store at scrape time (plain values: this
/// module names no store type).
#[derive(Debug, Clone, PartialEq)]
pub struct MdmFigures {
    pub tenant: String,
    pub mdm: String,
    /// Unix seconds of the end of the last successful full sync; `None`: never.
    pub last_success: Option<f64>,
    pub devices: u64,
    /// Live devices per risk level (`secured`, `low` … `critical`).
    pub by_risk: Vec<(&'static str, u64)>,
}

/// The process-wide registry every call site records into.
pub static REGISTRY: Registry = Registry::new();

/// Every family the connector exports (other than the two computed at scrape time).
#[derive(Debug)]
pub struct Registry {
    pub events_received: CounterVec,
    pub events_accepted: CounterVec,
    pub events_duplicate: CounterVec,
    pub requests_refused: CounterVec,
    pub actions: CounterVec,
    pub action_delivery: HistogramVec,
    pub mdm_requests: CounterVec,
    pub mdm_request_seconds: HistogramVec,
    pub sync_runs: CounterVec,
    pub sync_run_seconds: HistogramVec,
    pub ise_requests: CounterVec,
    pub ise_request_seconds: HistogramVec,
    pub ise_auth_failures: CounterVec,
}

impl Registry {
    pub const fn new() -> Registry {
        Registry {
            events_received: CounterVec::new(
                "mtd_agent_events_received_total",
                "Events in verified, well-formed agent posts.",
                &["tenant"],
            ),
            events_accepted: CounterVec::new(
                "mtd_agent_events_accepted_total",
                "Events stored as new.",
                &["tenant"],
            ),
            events_duplicate: CounterVec::new(
                "mtd_agent_events_duplicate_total",
                "Events whose event_id was already stored (nothing changed).",
                &["tenant"],
            ),
            requests_refused: CounterVec::new(
                "mtd_agent_requests_refused_total",
                "Agent requests answered with an error, by reason; tenant only once verified.",
                &["tenant", "reason"],
            ),
            actions: CounterVec::new(
                "mtd_actions_total",
                "Actions entering a state: decided (pending, held, skipped), retried (failed), final (sent, skipped, dead, cancelled).",
                &["kind", "state"],
            ),
            action_delivery: HistogramVec::new(
                "mtd_action_delivery_seconds",
                "Time from an action's creation to its delivery to the MDM.",
                &["kind"],
                DELIVERY_BUCKETS,
            ),
            mdm_requests: CounterVec::new(
                "mtd_mdm_requests_total",
                "Calls to MDMs (one per call or listing page), by outcome class.",
                &["kind", "operation", "class"],
            ),
            mdm_request_seconds: HistogramVec::new(
                "mtd_mdm_request_seconds",
                "Duration of calls to MDMs (one per call or listing page).",
                &["kind", "operation"],
                MDM_BUCKETS,
            ),
            sync_runs: CounterVec::new(
                "mtd_sync_runs_total",
                "Full syncs finished, by outcome.",
                &["kind", "outcome"],
            ),
            sync_run_seconds: HistogramVec::new(
                "mtd_sync_run_seconds",
                "Duration of full syncs.",
                &["kind"],
                SYNC_BUCKETS,
            ),
            ise_requests: CounterVec::new(
                "mtd_ise_requests_total",
                "Authenticated Cisco ISE requests answered, by operation.",
                &["tenant", "operation"],
            ),
            ise_request_seconds: HistogramVec::new(
                "mtd_ise_request_seconds",
                "Time to answer a Cisco ISE request (ISE waits 200 ms at most).",
                &["operation"],
                ISE_BUCKETS,
            ),
            ise_auth_failures: CounterVec::new(
                "mtd_ise_auth_failures_total",
                "Cisco ISE requests refused: missing, unknown or wrong credentials.",
                &[],
            ),
        }
    }

    /// The whole exposition: every family, then `mtd_devices` from
    /// `devices` (tenant, live devices; `None` when the store could not be
    /// read, which leaves the family without samples) and `mtd_build_info`.
    pub fn render(
        &self,
        devices: Option<&[(String, u64)]>,
        risk: Option<&[(String, &'static str, u64)]>,
        mdms: Option<&[MdmFigures]>,
    ) -> String {
        let mut out = String::with_capacity(4096);
        self.events_received.render(&mut out);
        self.events_accepted.render(&mut out);
        self.events_duplicate.render(&mut out);
        self.requests_refused.render(&mut out);
        self.actions.render(&mut out);
        self.action_delivery.render(&mut out);
        self.mdm_requests.render(&mut out);
        self.mdm_request_seconds.render(&mut out);
        self.sync_runs.render(&mut out);
        self.sync_run_seconds.render(&mut out);
        self.ise_requests.render(&mut out);
        self.ise_request_seconds.render(&mut out);
        self.ise_auth_failures.render(&mut out);
        header(
            &mut out,
            "mtd_devices",
            "Live devices in the store, per tenant.",
            "gauge",
        );
        for (tenant, n) in devices.unwrap_or_default() {
            sample(&mut out, "mtd_devices", &[("tenant", tenant)], *n as f64);
        }
        header(
            &mut out,
            "mtd_devices_by_risk",
            "Live devices in the store at each risk level, per tenant.",
            "gauge",
        );
        for (tenant, level, n) in risk.unwrap_or_default() {
            sample(
                &mut out,
                "mtd_devices_by_risk",
                &[("tenant", tenant), ("level", level)],
                *n as f64,
            );
        }
        render_mdms(&mut out, mdms.unwrap_or_default());
        header(
            &mut out,
            "mtd_build_info",
            "The running build; always 1.",
            "gauge",
        );
        sample(
            &mut out,
            "mtd_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        );
        out
    }
}

/// The per-MDM gauges read from the store.
fn render_mdms(out: &mut String, mdms: &[MdmFigures]) {
    const LAST: &str = "mtd_mdm_last_successful_sync_timestamp_seconds";
    header(
        out,
        LAST,
        "When the MDM's last successful full sync ended (Unix time; 0: never).",
        "gauge",
    );
    for m in mdms {
        let labels = [("tenant", m.tenant.as_str()), ("mdm", m.mdm.as_str())];
        sample(out, LAST, &labels, m.last_success.unwrap_or(0.0));
    }
    header(
        out,
        "mtd_mdm_devices",
        "Live devices in the store, per MDM.",
        "gauge",
    );
    for m in mdms {
        let labels = [("tenant", m.tenant.as_str()), ("mdm", m.mdm.as_str())];
        sample(out, "mtd_mdm_devices", &labels, m.devices as f64);
    }
    header(
        out,
        "mtd_mdm_devices_by_risk",
        "Live devices in the store at each risk level, per MDM.",
        "gauge",
    );
    for m in mdms {
        for (level, n) in &m.by_risk {
            let labels = [
                ("tenant", m.tenant.as_str()),
                ("mdm", m.mdm.as_str()),
                ("level", level),
            ];
            sample(out, "mtd_mdm_devices_by_risk", &labels, *n as f64);
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

/// Locks a family. A panic while holding the lock cannot leave a half-made
/// value (each update is one arithmetic step), so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A counter family: one monotonic value per label set.
#[derive(Debug)]
pub struct CounterVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// Label values in the order of `labels`.
    series: Mutex<BTreeMap<Vec<String>, u64>>,
}

impl CounterVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
    ) -> Self {
        CounterVec {
            name,
            help,
            labels,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    /// Adds `n` to the series of `values` (given in the family's label order).
    pub fn inc_by(&self, values: &[&str], n: u64) {
        debug_assert_eq!(values.len(), self.labels.len(), "labels of {}", self.name);
        let key = values.iter().map(|v| v.to_string()).collect();
        *lock(&self.series).entry(key).or_insert(0) += n;
    }

    pub fn inc(&self, values: &[&str]) {
        self.inc_by(values, 1);
    }

    /// The current value of one series (0 if it was never touched).
    pub fn get(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        lock(&self.series).get(&key).copied().unwrap_or(0)
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "counter");
        for (values, n) in lock(&self.series).iter() {
            sample(out, self.name, &pairs(self.labels, values), *n as f64);
        }
    }
}

/// A histogram family with fixed bucket bounds.
#[derive(Debug)]
pub struct HistogramVec {
    name: &'static str,
    help: &'static str,
    labels: &'static [&'static str],
    /// Upper bounds, ascending; `+Inf` is implied.
    buckets: &'static [f64],
    series: Mutex<BTreeMap<Vec<String>, Histogram>>,
}

#[derive(Debug, Default, Clone)]
struct Histogram {
    /// Observations per bucket, not cumulative (the rendering adds them up);
    /// one more slot than bounds, for those over the last bound.
    counts: Vec<u64>,
    sum: f64,
}

impl HistogramVec {
    pub const fn new(
        name: &'static str,
        help: &'static str,
        labels: &'static [&'static str],
        buckets: &'static [f64],
    ) -> Self {
        HistogramVec {
            name,
            help,
            labels,
            buckets,
            series: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn observe(&self, values: &[&str], seconds: f64) {
        debug_assert_eq!(values.len(), self.labels.len(), "labels of {}", self.name);
        let key = values.iter().map(|v| v.to_string()).collect();
        let slot = self.buckets.partition_point(|bound| *bound < seconds);
        let mut series = lock(&self.series);
        let h = series.entry(key).or_insert_with(|| Histogram {
            counts: vec![0; self.buckets.len() + 1],
            sum: 0.0,
        });
        h.counts[slot] += 1;
        h.sum += seconds;
    }

    /// Observations of one series so far.
    pub fn count(&self, values: &[&str]) -> u64 {
        let key: Vec<String> = values.iter().map(|v| v.to_string()).collect();
        lock(&self.series)
            .get(&key)
            .map_or(0, |h| h.counts.iter().sum())
    }

    fn render(&self, out: &mut String) {
        header(out, self.name, self.help, "histogram");
        let bucket = format!("{}_bucket", self.name);
        for (values, h) in lock(&self.series).iter() {
            let labels = pairs(self.labels, values);
            let with_le = |le: &str, n: u64, out: &mut String| {
                let mut l = labels.clone();
                l.push(("le", le));
                sample(out, &bucket, &l, n as f64);
            };
            let mut cumulative = 0;
            for (i, bound) in self.buckets.iter().enumerate() {
                cumulative += h.counts[i];
                with_le(&bound.to_string(), cumulative, out);
            }
            cumulative += h.counts[self.buckets.len()];
            with_le("+Inf", cumulative, out);
            sample(out, &format!("{}_sum", self.name), &labels, h.sum);
            sample(
                out,
                &format!("{}_count", self.name),
                &labels,
                cumulative as f64,
            );
        }
    }
}

fn pairs<'a>(names: &'a [&'static str], values: &'a [String]) -> Vec<(&'a str, &'a str)> {
    names
        .iter()
        .zip(values)
        .map(|(n, v)| (*n, v.as_str()))
        .collect()
}

fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One sample line. A label with an empty value is left out, which
/// Prometheus treats the same as the empty value.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    let mut first = true;
    for (label, v) in labels.iter().filter(|(_, v)| !v.is_empty()) {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(label);
        out.push_str("=\"");
        escape_label_value(out, v);
        out.push('"');
    }
    if !first {
        out.push('}');
    }
    // Rust prints floats without an exponent and integers without ".0",
    // both valid in the format; NaN and infinities are never recorded.
    let _ = writeln!(out, " {value}");
}

/// Backslash, double quote and line feed are escaped in label values.
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

// ---- Recording, one function per kind of fact -------------------------------

/// An agent request answered with an error; `tenant` only when its
/// signature was verified. `reason` is the error code of the body
/// (`unauthorized`, `payload_too_large`, `invalid_json`, `invalid_field`,
/// `too_many_events`, `unavailable`, `mdm_unavailable`, `internal`); a
/// device no MDM knows (404) is an answer, not a refusal, and is not counted.
pub fn agent_refused(tenant: Option<&str>, reason: &'static str) {
    REGISTRY
        .requests_refused
        .inc(&[tenant.unwrap_or(""), reason]);
}

/// Events in a verified, well-formed post.
pub fn agent_events_received(tenant: &str, events: usize) {
    REGISTRY.events_received.inc_by(&[tenant], events as u64);
}

/// What the store made of a post's events: new ones and repeats.
pub fn agent_events_stored(tenant: &str, accepted: usize, duplicates: usize) {
    REGISTRY.events_accepted.inc_by(&[tenant], accepted as u64);
    REGISTRY
        .events_duplicate
        .inc_by(&[tenant], duplicates as u64);
}

/// An action row of `kind` entered `state` (call once the change is committed).
pub fn action_entered(kind: &'static str, state: &'static str) {
    REGISTRY.actions.inc(&[kind, state]);
}

/// An action a threat caused was sent, `seconds` after its row was created.
pub fn action_delivered(kind: &'static str, seconds: f64) {
    REGISTRY.action_delivery.observe(&[kind], seconds);
}

/// A full sync of an MDM of `kind` ended with `outcome` (`succeeded`, `failed`).
pub fn sync_run(kind: &'static str, outcome: &'static str, took: Duration) {
    REGISTRY.sync_runs.inc(&[kind, outcome]);
    REGISTRY
        .sync_run_seconds
        .observe(&[kind], took.as_secs_f64());
}

/// An authenticated ISE request of `operation` was answered in `took`.
pub fn ise_request(tenant: &str, operation: &'static str, took: Duration) {
    REGISTRY.ise_requests.inc(&[tenant, operation]);
    REGISTRY
        .ise_request_seconds
        .observe(&[operation], took.as_secs_f64());
}

/// An ISE request was refused for its credentials.
pub fn ise_auth_failed() {
    REGISTRY.ise_auth_failures.inc(&[]);
}

/// One call to an MDM (`operation`: `health_check`, `lookup_device`,
/// `execute`, or a page of `list_devices`, …) ended with `class` (`ok` or
/// the adapter error's class).
pub fn mdm_call(kind: &'static str, operation: &str, class: &str, took: Duration) {
    REGISTRY.mdm_requests.inc(&[kind, operation, class]);
    REGISTRY
        .mdm_request_seconds
        .observe(&[kind, operation], took.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_help_type_and_one_line_per_label_set() {
        let r = Registry::new();
        r.events_accepted.inc_by(&["acme"], 2);
        r.events_accepted.inc(&["beta"]);
        let text = r.render(Some(&[]), None, None);
        assert!(text.contains(
            "# HELP mtd_agent_events_accepted_total Events stored as new.\n# TYPE mtd_agent_events_accepted_total counter\n"
        ));
        assert!(text.contains("mtd_agent_events_accepted_total{tenant=\"acme\"} 2\n"));
        assert!(text.contains("mtd_agent_events_accepted_total{tenant=\"beta\"} 1\n"));
        assert!(text.contains("mtd_build_info{version=\""));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn label_values_are_escaped_and_empty_ones_left_out() {
        let r = Registry::new();
        r.requests_refused.inc(&["a\"b\\c\nd", "invalid_json"]);
        r.requests_refused.inc(&["", "unauthorized"]);
        let text = r.render(None, None, None);
        assert!(
            text.contains(
                "mtd_agent_requests_refused_total{tenant=\"a\\\"b\\\\c\\nd\",reason=\"invalid_json\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("mtd_agent_requests_refused_total{reason=\"unauthorized\"} 1\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_with_inf_sum_and_count() {
        let r = Registry::new();
        for s in [0.005, 0.01, 0.2, 7.0, 100.0] {
            r.mdm_request_seconds.observe(&["soti", "execute"], s);
        }
        let text = r.render(None, None, None);
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mtd_mdm_request_seconds"))
            .collect();
        let expect = |le: &str, n: u64| {
            format!("mtd_mdm_request_seconds_bucket{{kind=\"soti\",operation=\"execute\",le=\"{le}\"}} {n}")
        };
        // A value equal to a bound falls in that bucket (le is "less or equal").
        assert_eq!(lines[0], expect("0.01", 2));
        assert_eq!(lines[1], expect("0.025", 2));
        assert_eq!(lines[4], expect("0.25", 3));
        assert_eq!(lines[9], expect("10", 4));
        assert_eq!(lines[10], expect("30", 4));
        assert_eq!(lines[11], expect("+Inf", 5));
        assert_eq!(
            lines[12],
            "mtd_mdm_request_seconds_sum{kind=\"soti\",operation=\"execute\"} 107.215"
        );
        assert_eq!(
            lines[13],
            "mtd_mdm_request_seconds_count{kind=\"soti\",operation=\"execute\"} 5"
        );
        assert_eq!(lines.len(), MDM_BUCKETS.len() + 3);
        assert_eq!(r.mdm_request_seconds.count(&["soti", "execute"]), 5);
    }

    #[test]
    fn every_family_has_help_and_type_even_without_samples() {
        let text = Registry::new().render(None, None, None);
        for (name, kind) in [
            ("mtd_agent_events_received_total", "counter"),
            ("mtd_agent_requests_refused_total", "counter"),
            ("mtd_actions_total", "counter"),
            ("mtd_action_delivery_seconds", "histogram"),
            ("mtd_mdm_requests_total", "counter"),
            ("mtd_sync_run_seconds", "histogram"),
            ("mtd_ise_requests_total", "counter"),
            ("mtd_ise_request_seconds", "histogram"),
            ("mtd_ise_auth_failures_total", "counter"),
            ("mtd_devices", "gauge"),
            ("mtd_devices_by_risk", "gauge"),
            ("mtd_mdm_last_successful_sync_timestamp_seconds", "gauge"),
            ("mtd_mdm_devices", "gauge"),
            ("mtd_mdm_devices_by_risk", "gauge"),
            ("mtd_build_info", "gauge"),
        ] {
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} {kind}\n")), "{name}");
        }
    }

    #[test]
    fn devices_are_rendered_per_tenant() {
        let text = Registry::new().render(
            Some(&[("acme".into(), 12), ("beta".into(), 0)]),
            Some(&[("acme".into(), "secured", 10), ("acme".into(), "high", 2)]),
            None,
        );
        assert!(text.contains("mtd_devices{tenant=\"acme\"} 12\n"));
        assert!(text.contains("mtd_devices{tenant=\"beta\"} 0\n"));
        assert!(text.contains("mtd_devices_by_risk{tenant=\"acme\",level=\"high\"} 2\n"));
    }

    #[test]
    fn mdm_figures_are_rendered_with_tenant_mdm_and_level_labels() {
        let text = Registry::new().render(
            None,
            None,
            Some(&[
                MdmFigures {
                    tenant: "acme".into(),
                    mdm: "Acme \"SOTI\"".into(),
                    last_success: Some(1_764_780_000.5),
                    devices: 12,
                    by_risk: vec![("secured", 10), ("high", 2)],
                },
                MdmFigures {
                    tenant: "beta".into(),
                    mdm: "Beta BCDM".into(),
                    last_success: None,
                    devices: 0,
                    by_risk: vec![("secured", 0)],
                },
            ]),
        );
        for line in [
            "mtd_mdm_last_successful_sync_timestamp_seconds{tenant=\"acme\",mdm=\"Acme \\\"SOTI\\\"\"} 1764780000.5\n",
            "mtd_mdm_last_successful_sync_timestamp_seconds{tenant=\"beta\",mdm=\"Beta BCDM\"} 0\n",
            "mtd_mdm_devices{tenant=\"acme\",mdm=\"Acme \\\"SOTI\\\"\"} 12\n",
            "mtd_mdm_devices_by_risk{tenant=\"acme\",mdm=\"Acme \\\"SOTI\\\"\",level=\"high\"} 2\n",
            "mtd_mdm_devices_by_risk{tenant=\"beta\",mdm=\"Beta BCDM\",level=\"secured\"} 0\n",
        ] {
            assert!(text.contains(line), "`{line}` missing:\n{text}");
        }
    }
}
