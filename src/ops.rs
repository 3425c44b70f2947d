//! The one-shot operator commands: `test-connection` and `sync`.
//!
//! Both work on the same config as the daemon and print plain words an admin
//! can act on; neither binds the API port, so they run beside a daemon.

use crate::config::{Config, MdmConfig, TenantConfig};
use crate::shutdown::CancellationToken;
use crate::store::{Store, SyncOutcome, SyncTrigger};
use crate::sync::{RunReport, SyncEngine};
use mtd_adapter::{AdapterError, MdmKind};
use std::io::IsTerminal;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("tenant `{0}` is not in the configuration")]
    UnknownTenant(String),
    #[error("tenant `{tenant}` has no MDM named `{mdm}` (it has: {known})")]
    UnknownMdm {
        tenant: String,
        mdm: String,
        known: String,
    },
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Integration(#[from] crate::sync::BuildIntegrationError),
    #[error(transparent)]
    Sync(#[from] crate::sync::SyncError),
}

fn tenant<'a>(config: &'a Config, id: &str) -> Result<&'a TenantConfig, OpsError> {
    config
        .tenants
        .iter()
        .find(|t| t.id == id)
        .ok_or_else(|| OpsError::UnknownTenant(id.to_string()))
}

fn mdms<'a>(tenant: &'a TenantConfig, only: Option<&str>) -> Result<Vec<&'a MdmConfig>, OpsError> {
    match only {
        None => Ok(tenant.mdms.iter().collect()),
        Some(name) => match tenant.mdms.iter().find(|m| m.name == name) {
            Some(m) => Ok(vec![m]),
            None => Err(OpsError::UnknownMdm {
                tenant: tenant.id.clone(),
                mdm: name.to_string(),
                known: tenant
                    .mdms
                    .iter()
                    .map(|m| format!("`{}`", m.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        },
    }
}

/// One line of `test-connection`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub mdm: String,
    pub ok: bool,
    pub line: String,
}

/// Logs in to each MDM of the tenant (or one) and reads one page of devices.
pub async fn test_connection(
    config: &Config,
    tenant_id: &str,
    only: Option<&str>,
) -> Result<Vec<Diagnostic>, OpsError> {
    let tenant = tenant(config, tenant_id)?;
    let mut out = Vec::new();
    for mdm in mdms(tenant, only)? {
        let (adapter, result) = match crate::adapters::build(tenant, mdm) {
            Ok(adapter) => {
                let result = adapter
                    .health_check()
                    .await
                    .map(|r| r.devices_on_first_page);
                (Some(adapter), result)
            }
            Err(e) => (None, Err(e)),
        };
        let mut d = diagnose(mdm, result);
        // With `[mdm.risk_signal]`: the attribute or tags it writes must exist.
        if let (true, Some(adapter), Some(signal)) = (d.ok, &adapter, &mdm.risk_signal) {
            match adapter.missing_risk_signal(&signal.name).await {
                Ok(missing) if missing.is_empty() => {}
                Ok(missing) => {
                    d.ok = false;
                    d.line = d.line.replacen("OK  ", "FAIL", 1);
                    d.line.push_str(&format!(
                        "; risk signal: create {} in the MDM console (missing: {})",
                        match mdm.kind {
                            MdmKind::Airwatch => "the tags",
                            _ => "the device custom attribute",
                        },
                        missing.join(", ")
                    ));
                }
                Err(e) => {
                    d.ok = false;
                    d.line = d.line.replacen("OK  ", "FAIL", 1);
                    d.line.push_str(&format!(
                        "; risk signal: cannot check the attribute or tags ({e})"
                    ));
                }
            }
        }
        out.push(d);
    }
    Ok(out)
}

/// Plain words for each outcome, with what to check next.
pub fn diagnose(mdm: &MdmConfig, result: Result<usize, AdapterError>) -> Diagnostic {
    let who = format!("{} ({}, {})", mdm.name, mdm.kind, mdm.url);
    let credentials = match mdm.kind {
        MdmKind::Soti => "client id, client secret, user name or password",
        MdmKind::Maas360 => {
            "billing id, app id, app version, platform id, app access key, user name or password"
        }
        MdmKind::Airwatch => "user name, password or API key (aw-tenant-code)",
        MdmKind::Bcdm => "access key or secret key",
    };
    let (ok, text) = match result {
        Ok(n) => (true, format!("success: logged in and read the first page of devices ({n} devices)")),
        Err(e) => (
            false,
            match &e {
                AdapterError::Connect(m) => format!(
                    "cannot connect: check DNS, routing and the firewall between this host and the MDM ({m})"
                ),
                AdapterError::Timeout(m) => format!("no answer in time: check routing and the firewall, and that the MDM is up ({m})"),
                AdapterError::Tls(m) => format!(
                    "TLS trust failure: the MDM's certificate is not trusted or has expired; set `ca_cert` to the CA certificate that signed it ({m})"
                ),
                AdapterError::NotFound(_) => match mdm.kind {
                    MdmKind::Soti => "404: wrong URL or instance; `url` must end in /MobiControl".to_string(),
                    _ => "404: wrong URL or instance; check `url`".to_string(),
                },
                // MaaS360 refuses a login with HTTP 200 and an error code.
                AdapterError::Unauthorized(m) if mdm.kind == MdmKind::Maas360 => {
                    format!("wrong credentials: the login was refused ({m}); check the {credentials}")
                }
                AdapterError::Unauthorized(_) => format!("401: wrong {credentials}"),
                AdapterError::Forbidden(m) => match mdm.kind {
                    MdmKind::Bcdm => format!("403: the DM code does not match the access key, or the key lacks API access ({m})"),
                    _ => format!("403: the account lacks the API role; give it REST API access in the MDM console ({m})"),
                },
                AdapterError::RateLimited { retry_after, .. } => format!(
                    "rate limited by the MDM: try again{}",
                    retry_after.map(|d| format!(" in {} s", d.as_secs())).unwrap_or_default()
                ),
                other => format!("failed: {other}"),
            },
        ),
    };
    Diagnostic {
        mdm: mdm.name.clone(),
        ok,
        line: format!("{} {who}: {text}", if ok { "OK  " } else { "FAIL" }),
    }
}

/// A full sync now, for one tenant (or one MDM), with progress on stderr.
pub async fn sync_now(
    config: Config,
    tenant_id: &str,
    only: Option<&str>,
) -> Result<Vec<RunReport>, OpsError> {
    let tenant = tenant(&config, tenant_id)?;
    let selected = mdms(tenant, only)?;
    let store = Store::open(&config.store.path).await?;
    let records = crate::context::tenant_records(&config);
    let refs = store.sync_tenants(&records).await?;
    let integrations = crate::sync::integrations_from(&config, &store, &refs).await?;
    let engine = SyncEngine::new(
        store.clone(),
        crate::sync::settings_from(&config.sync),
        integrations,
    );
    let cancel = CancellationToken::new();
    let tasks = crate::shutdown::Tasks::new();
    engine.start_workers(cancel.clone(), &tasks).await;

    let terminal = std::io::stderr().is_terminal();
    let mut reports = Vec::new();
    for mdm in selected {
        let bar = if terminal {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!("{}: starting", mdm.name));
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            Some(bar)
        } else {
            eprintln!("{}: full sync started", mdm.name);
            None
        };
        let name = mdm.name.clone();
        let progress_bar = bar.clone();
        let progress: crate::sync::ProgressFn =
            Arc::new(move |what: &'static str, n: u64| match &progress_bar {
                Some(b) => b.set_message(format!("{name}: {n} {what}")),
                None => eprintln!("{name}: {n} {what}"),
            });
        let mut r = engine
            .full_sync_now(tenant_id, Some(&mdm.name), SyncTrigger::Cli, Some(progress))
            .await?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        reports.append(&mut r);
    }
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    store.close().await;
    Ok(reports)
}

/// One line per report, for the `sync` command.
pub fn report_line(r: &RunReport) -> String {
    let c = &r.counts;
    match r.outcome {
        SyncOutcome::Succeeded => format!(
            "{}: succeeded in {:.1} s: devices {} added, {} updated, {} removed, {} skipped{}",
            r.mdm,
            r.duration.as_secs_f64(),
            c.added,
            c.updated,
            c.removed,
            c.skipped,
            match &r.held_reason {
                Some(reason) => format!("; {} removals held: {reason}", c.held_removals),
                None => String::new(),
            }
        ),
        _ => format!(
            "{}: failed: {}; nothing was removed",
            r.mdm,
            r.error.as_deref().unwrap_or("unknown error")
        ),
    }
}
