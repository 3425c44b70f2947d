//! The console's pages as maud templates: every interpolated value is
//! HTML-escaped by maud, values put into URLs are percent-encoded here first.
//!
//! Nothing here reads a secret: the pages get store rows and config fields
//! that the admin API shows too (names, ids, states), never credentials.

use super::DeviceQuery;
use crate::config::TenantConfig;
use crate::http::admin::{DeviceDetail, TenantStatus};
use crate::store::{
    ActionAudit, ActionState, AdminAction, AdminDevice, Paged, RiskLevel, StoredThreat,
};
use crate::sync::Requested;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};

/// A query-string value, percent-encoded.
fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fn when(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn when_opt(t: Option<&DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".to_string(), when)
}

fn opt(s: Option<&str>) -> &str {
    s.unwrap_or("—")
}

fn yes_no(b: Option<bool>) -> &'static str {
    match b {
        Some(true) => "yes",
        Some(false) => "no",
        None => "—",
    }
}

fn tenant_url(t: &TenantConfig) -> String {
    format!("/console/tenants/{}", t.id)
}

/// The page around every body; `csrf`: the session's token, for Log out.
fn layout(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · MTD connector" }
                link rel="stylesheet" href="/console/style.css";
            }
            body {
                header {
                    a.brand href="/console/" { "MTD connector" }
                    @if let Some(csrf) = csrf {
                        form.inline method="post" action="/console/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

/// A form that POSTs `fields` with the anti-forgery token.
fn post_button(
    csrf: &str,
    action: &str,
    fields: &[(&str, &str)],
    label: &str,
    class: &str,
) -> Markup {
    html! {
        form.inline method="post" action=(action) {
            input type="hidden" name="csrf" value=(csrf);
            @for (name, value) in fields {
                input type="hidden" name=(name) value=(value);
            }
            button type="submit" class=(class) { (label) }
        }
    }
}

pub fn login(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if let Some(e) = error {
                p.error role="alert" { (e) }
            }
            form.login method="post" action="/console/login" {
                label for="token" { "Admin token (" code { "[admin] token" } " of the main config file)" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
        },
    )
}

pub fn error(status: StatusCode, message: &str) -> Markup {
    layout(
        status.canonical_reason().unwrap_or("Error"),
        None,
        html! {
            h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("")) }
            p.error { (message) }
            p { a href="/console/" { "Back to the console" } }
        },
    )
}

fn risk_counts(t: &TenantConfig, status: &TenantStatus) -> Markup {
    html! {
        ul.risk {
            @for level in RiskLevel::ALL {
                @let n = status.devices_by_risk.iter().find(|(l, _)| *l == level).map_or(0, |(_, n)| *n);
                li class=(format!("level-{}", level.as_str())) {
                    a href=(format!("{}/devices?risk={}", tenant_url(t), level.as_str())) {
                        span.n { (n) } " " (level.as_str())
                    }
                }
            }
        }
    }
}

pub fn overview(csrf: &str, tenants: &[(&TenantConfig, TenantStatus)]) -> Markup {
    layout(
        "Tenants",
        Some(csrf),
        html! {
            h1 { "Tenants" }
            @if tenants.is_empty() {
                p { "No tenant is configured: add a file to the tenants directory and reload." }
            }
            @for (t, status) in tenants {
                section.tenant {
                    h2 { (t.display_name) " " small { "(" (t.id) ")" } }
                    nav.links {
                        a href=(format!("{}/devices", tenant_url(t))) { "Devices" }
                        a href=(format!("{}/actions", tenant_url(t))) { "Actions" }
                        a href=(format!("{}/actions?state=held", tenant_url(t))) {
                            "Held actions (" (status.mdms.iter().map(|m| m.health.held).sum::<u64>()) ")"
                        }
                        a.danger href=(format!("{}/cancel-wipes", tenant_url(t))) { "Cancel every pending wipe" }
                    }
                    h3 { "Devices by risk level" }
                    (risk_counts(t, status))
                    h3 { "MDMs" }
                    div.scroll {
                        table {
                            thead { tr {
                                th { "MDM" } th { "Enabled" } th { "Devices" } th { "Last sync" }
                                th { "Last success" } th { "Errors (24 h)" } th { "Back-off" }
                                th { "Actions waiting" } th {}
                            } }
                            tbody {
                                @for m in &status.mdms {
                                    tr {
                                        td { (m.integration.name) br; small { (m.integration.kind.as_str()) } }
                                        td { @if m.enabled { "yes" } @else { span.warn { "no" } } }
                                        td { (m.health.devices) br; small { (m.health.activated_devices) " activated" } }
                                        td {
                                            @if let Some(r) = &m.health.last_sync {
                                                (when(&r.started_at)) br;
                                                small {
                                                    (format!("{:?}", r.outcome).to_lowercase())
                                                    ": " (r.added) " added, " (r.updated) " updated, " (r.removed) " removed"
                                                    @if r.held_removals > 0 { " · " (r.held_removals) " removals held" }
                                                }
                                                @if let Some(e) = &r.error { br; span.error { (e) } }
                                            } @else { "never" }
                                        }
                                        td { (when_opt(m.integration.last_synced_at.as_ref())) }
                                        td {
                                            (m.health.failed_syncs) " failed syncs"
                                            @if let Some(e) = &m.health.last_sync_error {
                                                br; span.error { (e) }
                                                br; small { (when_opt(m.health.last_sync_error_at.as_ref())) }
                                            }
                                            @if m.health.dead_recent > 0 { br; span.warn { (m.health.dead_recent) " actions dead" } }
                                        }
                                        td {
                                            @match &m.backoff {
                                                None => "none",
                                                Some(b) => {
                                                    @if let (Some(n), Some(at)) = (b.sync_failures, b.sync_retry_at.as_ref()) {
                                                        (n) " failed syncs, retry " (when(at)) br;
                                                    }
                                                    @if let Some(until) = &b.rate_limited_until {
                                                        "rate limited until " (when(until))
                                                    }
                                                }
                                            }
                                        }
                                        td {
                                            (m.health.pending) " pending, " (m.health.held) " held, "
                                            (m.health.failed) " failed, " (m.health.dead) " dead"
                                            @if m.health.pending_wifi_removals > 0 {
                                                br; small { (m.health.pending_wifi_removals) " Wi-Fi removals due" }
                                            }
                                        }
                                        td {
                                            @if m.enabled {
                                                (post_button(csrf, &format!("{}/sync", tenant_url(t)), &[("mdm", &m.integration.name)], "Sync now", ""))
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn device_link(t: &TenantConfig, id: i64) -> String {
    format!("{}/devices/{id}", tenant_url(t))
}

fn action_link(t: &TenantConfig, id: i64) -> String {
    format!("{}/actions/{id}", tenant_url(t))
}

fn device_name(d: &AdminDevice) -> String {
    d.device
        .name
        .clone()
        .unwrap_or_else(|| d.device.mdm_device_id.clone())
}

pub fn devices(
    csrf: &str,
    t: &TenantConfig,
    q: &DeviceQuery,
    listed: &Paged<AdminDevice>,
) -> Markup {
    let selected = |current: &Option<String>, v: &str| current.as_deref() == Some(v);
    let mut next = Vec::new();
    for (k, v) in [
        ("identifier", &q.identifier),
        ("risk", &q.risk),
        ("activated", &q.activated),
        ("mdm", &q.mdm),
    ] {
        if let Some(v) = v {
            next.push(format!("{k}={}", enc(v)));
        }
    }
    let next_url = listed.next_after.map(|after| {
        next.push(format!("after={after}"));
        format!("{}/devices?{}", tenant_url(t), next.join("&"))
    });
    layout(
        "Devices",
        Some(csrf),
        html! {
            h1 { "Devices of " (t.display_name) }
            form.filters method="get" action=(format!("{}/devices", tenant_url(t))) {
                label { "Identifier "
                    input type="search" name="identifier" value=(q.identifier.as_deref().unwrap_or(""))
                        placeholder="UDID, serial, IMEI, MAC or MDM id";
                }
                label { "Risk "
                    select name="risk" {
                        option value="" { "any" }
                        @for level in RiskLevel::ALL {
                            option value=(level.as_str()) selected[selected(&q.risk, level.as_str())] { (level.as_str()) }
                        }
                    }
                }
                label { "Activation "
                    select name="activated" {
                        option value="" { "any" }
                        option value="true" selected[selected(&q.activated, "true")] { "activated" }
                        option value="false" selected[selected(&q.activated, "false")] { "never activated" }
                    }
                }
                label { "MDM "
                    select name="mdm" {
                        option value="" { "any" }
                        @for m in &t.mdms {
                            option value=(m.name) selected[selected(&q.mdm, &m.name)] { (m.name) }
                        }
                    }
                }
                button type="submit" { "Search" }
            }
            @if listed.items.is_empty() {
                p { "No device matches." }
            } @else {
                div.scroll { table {
                    thead { tr {
                        th { "Device" } th { "MDM" } th { "Platform" } th { "Model" } th { "User" }
                        th { "Risk" } th { "Activated" } th { "Last check-in" }
                    } }
                    tbody {
                        @for d in &listed.items {
                            tr {
                                td { a href=(device_link(t, d.device.id)) { (device_name(d)) } }
                                td { (d.mdm) }
                                td { (d.device.platform.as_str()) }
                                td { (opt(d.device.model.as_deref())) }
                                td { (opt(d.user_display_name.as_deref())) }
                                td class=(format!("level-{}", d.device.risk_level.as_str())) { (d.device.risk_level.as_str()) }
                                td { (yes_no(Some(d.device.activation.is_some()))) }
                                td { (when_opt(d.device.last_checkin_at.as_ref())) }
                            }
                        }
                    }
                } }
            }
            @if let Some(url) = &next_url {
                p { a href=(url) { "Next page →" } }
            }
        },
    )
}

fn threats_table(threats: &[StoredThreat], closed: bool) -> Markup {
    html! {
        div.scroll { table {
            thead { tr {
                th { "Type" } th { "Key" } th { "Severity" } th { "First detected" } th { "Last detected" }
                @if closed { th { "Closed" } th { "By" } }
            } }
            tbody {
                @for th in threats {
                    tr {
                        td { (th.threat_type) @if let Some(n) = &th.name { br; small { (n) } } }
                        td { (opt(th.key.0.as_deref())) }
                        td class=(format!("level-{}", th.severity)) { (th.severity) }
                        td { (when(&th.first_detected_at)) }
                        td { (when(&th.last_detected_at)) }
                        @if closed {
                            td { (when_opt(th.closed_at.as_ref())) }
                            td { (opt(th.closed_by.as_deref())) }
                        }
                    }
                }
            }
        } }
    }
}

fn actions_table(t: &TenantConfig, actions: &[AdminAction]) -> Markup {
    html! {
        div.scroll { table {
            thead { tr {
                th { "Action" } th { "Kind" } th { "State" } th { "Device" } th { "MDM" } th { "Reason" } th { "Created" }
            } }
            tbody {
                @for a in actions {
                    tr {
                        td { a href=(action_link(t, a.action.id)) { "#" (a.action.id) } }
                        td { (a.action.kind.as_str()) }
                        td class=(format!("state-{}", a.action.state.as_str())) { (a.action.state.as_str()) }
                        td {
                            @if let Some(d) = a.action.device_id {
                                a href=(device_link(t, d)) { "device " (d) }
                            } @else { "—" }
                        }
                        td { (opt(a.mdm.as_deref())) }
                        td { (opt(a.action.reason.as_deref())) }
                        td { (when(&a.action.created_at)) }
                    }
                }
            }
        } }
    }
}

pub fn device(csrf: &str, t: &TenantConfig, d: &DeviceDetail) -> Markup {
    let dev = &d.device.device;
    let p = &dev.posture;
    layout(
        "Device",
        Some(csrf),
        html! {
            p.crumbs { a href=(format!("{}/devices", tenant_url(t))) { "← Devices of " (t.display_name) } }
            h1 { (device_name(&d.device)) }
            @if let Some(removed) = &dev.removed_at {
                p.warn { "Removed at its MDM on " (when(removed)) "." }
            }
            div.cards {
                section {
                    h2 { "Identifiers" }
                    dl {
                        dt { "MDM" } dd { (d.device.mdm) }
                        dt { "MDM device id" } dd { (dev.mdm_device_id) }
                        dt { "UDID" } dd { (opt(dev.identifiers.udid.as_deref())) }
                        dt { "Serial" } dd { (opt(dev.identifiers.serial.as_deref())) }
                        dt { "IMEI" } dd { (opt(dev.identifiers.imei.as_deref())) }
                        dt { "MAC" } dd { (opt(dev.identifiers.mac.as_deref())) }
                        dt { "Platform" } dd { (dev.platform.as_str()) }
                        dt { "Ownership" } dd { (dev.ownership.to_string()) }
                        dt { "User" } dd { (opt(d.user.as_ref().map(|u| u.display_name.as_str()))) }
                        dt { "Groups" } dd { @if d.device.groups.is_empty() { "—" } @else { (d.device.groups.join(", ")) } }
                    }
                }
                section {
                    h2 { "Posture" }
                    dl {
                        dt { "Compliant" } dd { (yes_no(p.compliant)) }
                        dt { "Enrolled" } dd { (yes_no(p.enrolled)) }
                        dt { "Encrypted" } dd { (yes_no(p.encrypted)) }
                        dt { "Passcode" } dd { (yes_no(p.passcode)) }
                        dt { "Compromised" } dd { (yes_no(p.compromised)) }
                        dt { "Manufacturer" } dd { (opt(p.manufacturer.as_deref())) }
                        dt { "Model" } dd { (opt(dev.model.as_deref())) }
                        dt { "OS version" } dd { (opt(dev.os_version.as_deref())) }
                        dt { "Phone number" } dd { (opt(p.phone_number.as_deref())) }
                        dt { "Last check-in" } dd { (when_opt(dev.last_checkin_at.as_ref())) }
                    }
                }
                section {
                    h2 { "Agent" }
                    @if let Some(a) = &dev.activation {
                        dl {
                            dt { "First activation" } dd { (when(&a.first_activated_at)) }
                            dt { "Last activation" } dd { (when(&a.last_activated_at)) }
                            dt { "Platform" } dd { (opt(a.platform.as_deref())) }
                            dt { "Agent version" } dd { (opt(a.agent_version.as_deref())) }
                        }
                    } @else {
                        p { "Not activated." }
                    }
                }
            }
            h2 { "Risk: " span class=(format!("level-{}", dev.risk_level.as_str())) { (dev.risk_level.as_str()) } }
            @if d.open_threats.is_empty() {
                p { "No open threat." }
            } @else {
                (threats_table(&d.open_threats, false))
            }
            @if !d.resolved_threats.is_empty() {
                h2 { "Closed threats" }
                (threats_table(&d.resolved_threats, true))
            }
            h2 { "Recent actions" }
            @if d.recent_actions.is_empty() { p { "None." } } @else { (actions_table(t, &d.recent_actions)) }
        },
    )
}

pub fn actions(
    csrf: &str,
    t: &TenantConfig,
    state: Option<ActionState>,
    listed: &Paged<AdminAction>,
) -> Markup {
    let base = format!("{}/actions", tenant_url(t));
    let states = [
        ActionState::Held,
        ActionState::Pending,
        ActionState::Sent,
        ActionState::Failed,
        ActionState::Dead,
        ActionState::Cancelled,
        ActionState::Skipped,
    ];
    layout(
        "Actions",
        Some(csrf),
        html! {
            h1 { "Actions of " (t.display_name) }
            nav.links {
                @if state.is_none() { strong { "all" } } @else { a href=(base) { "all" } }
                @for s in states {
                    @if state == Some(s) { strong { (s.as_str()) } }
                    @else { a href=(format!("{base}?state={}", s.as_str())) { (s.as_str()) } }
                }
            }
            @if listed.items.is_empty() { p { "No action." } } @else { (actions_table(t, &listed.items)) }
            @if let Some(after) = listed.next_after {
                @let q = state.map(|s| format!("state={}&", s.as_str())).unwrap_or_default();
                p { a href=(format!("{base}?{q}after={after}")) { "Next page →" } }
            }
        },
    )
}

fn cancellable(s: ActionState) -> bool {
    matches!(
        s,
        ActionState::Held | ActionState::Pending | ActionState::Failed
    )
}

pub fn action(csrf: &str, t: &TenantConfig, a: &AdminAction, audit: &[ActionAudit]) -> Markup {
    let x = &a.action;
    let url = action_link(t, x.id);
    layout(
        "Action",
        Some(csrf),
        html! {
            p.crumbs { a href=(format!("{}/actions", tenant_url(t))) { "← Actions of " (t.display_name) } }
            h1 { "Action #" (x.id) ": " (x.kind.as_str()) " " span class=(format!("state-{}", x.state.as_str())) { (x.state.as_str()) } }
            dl {
                dt { "Device" } dd {
                    @if let Some(d) = x.device_id { a href=(device_link(t, d)) { "device " (d) } } @else { "—" }
                }
                dt { "MDM" } dd { (opt(a.mdm.as_deref())) }
                dt { "Reason" } dd { (opt(x.reason.as_deref())) }
                dt { "Attempts" } dd { (x.attempts) }
                dt { "Next attempt" } dd { (when_opt(x.next_attempt_at.as_ref())) }
                dt { "Last error" } dd { (opt(x.last_error.as_deref())) }
                dt { "Created" } dd { (when(&x.created_at)) }
                dt { "Sent" } dd { (when_opt(x.sent_at.as_ref())) }
            }
            div.buttons {
                @if x.state == ActionState::Held {
                    (post_button(csrf, &format!("{url}/approve"), &[], "Approve", "primary"))
                }
                @if cancellable(x.state) {
                    (post_button(csrf, &format!("{url}/cancel"), &[], "Cancel", "danger"))
                }
            }
            h2 { "Audit trail" }
            div.scroll { table {
                thead { tr { th { "At" } th { "From" } th { "To" } th { "Note" } } }
                tbody {
                    @for row in audit {
                        tr {
                            td { (when(&row.at)) }
                            td { (row.from_state.map_or("—", |s| s.as_str())) }
                            td { (row.to_state.as_str()) }
                            td { (opt(row.note.as_deref())) }
                        }
                    }
                }
            } }
        },
    )
}

pub fn confirm_approve(csrf: &str, t: &TenantConfig, a: &AdminAction) -> Markup {
    let x = &a.action;
    let url = action_link(t, x.id);
    let what = if x.kind == crate::store::ActionRecordKind::Wipe {
        "a full factory wipe: every data on the device is erased"
    } else {
        "an enterprise wipe: corporate data and management are removed from the device"
    };
    layout(
        "Confirm approval",
        Some(csrf),
        html! {
            h1 { "Approve " (x.kind.as_str()) " #" (x.id) "?" }
            p.warn { "This sends " (what) ". It cannot be undone." }
            dl {
                dt { "Device" } dd {
                    @if let Some(d) = x.device_id { a href=(device_link(t, d)) { "device " (d) } } @else { "—" }
                }
                dt { "MDM" } dd { (opt(a.mdm.as_deref())) }
                dt { "Reason" } dd { (opt(x.reason.as_deref())) }
            }
            div.buttons {
                (post_button(csrf, &format!("{url}/approve"), &[("confirm", "yes")], "Yes, approve the wipe", "danger"))
                a.button href=(url) { "No, go back" }
            }
        },
    )
}

pub fn confirm_cancel_wipes(csrf: &str, t: &TenantConfig, waiting: usize) -> Markup {
    layout(
        "Cancel every pending wipe",
        Some(csrf),
        html! {
            h1 { "Cancel every pending wipe of " (t.display_name) "?" }
            p { "Every enterprise wipe and wipe of this tenant that has not been handed to its MDM "
                "(held, pending, or failed and waiting to retry) is cancelled; none of them reaches the MDM afterwards." }
            p { "Waiting now: " strong { (waiting) } }
            div.buttons {
                (post_button(csrf, &format!("{}/cancel-wipes", tenant_url(t)), &[("confirm", "yes")], "Yes, cancel them all", "danger"))
                a.button href="/console/" { "No, go back" }
            }
        },
    )
}

pub fn wipes_cancelled(csrf: &str, t: &TenantConfig, ids: &[i64]) -> Markup {
    layout(
        "Wipes cancelled",
        Some(csrf),
        html! {
            h1 { (ids.len()) " wipes cancelled" }
            @if !ids.is_empty() {
                ul { @for id in ids { li { a href=(action_link(t, *id)) { "Action #" (id) } } } }
            }
            p { a href="/console/" { "Back to the tenants" } }
        },
    )
}

pub fn sync_requested(csrf: &str, t: &TenantConfig, requested: &[(String, Requested)]) -> Markup {
    layout(
        "Sync requested",
        Some(csrf),
        html! {
            h1 { "Full sync requested" }
            ul {
                @for (name, r) in requested {
                    li { (name) ": " (match r {
                        Requested::Queued => "queued",
                        Requested::Coalesced => "coalesced with the sync already waiting",
                    }) }
                }
            }
            p { a href="/console/" { "Back to the tenants" } " · " a href=(format!("{}/actions", tenant_url(t))) { "Actions" } }
        },
    )
}
