//! `GET /metrics`: the Prometheus text exposition of [`crate::metrics`], no token.
//!
//! `mtd_devices` (and the per-MDM figures: last successful sync, devices,
//! devices per risk level) are read from the store at scrape time rather than kept as
//! a gauge: the store is the truth, and syncs, lookups and removals would
//! otherwise all have to keep a copy in step.

use super::AppState;
use crate::metrics::{MdmFigures, CONTENT_TYPE, REGISTRY};
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub fn routes() -> Router<AppState> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let devices = match live_devices(&state).await {
        Ok(d) => Some(d),
        Err(e) => {
            // A scrape still answers: the counters are in memory.
            tracing::warn!(error = %e, "Cannot count devices for /metrics");
            None
        }
    };
    let risk = match risk_levels(&state).await {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot count devices per risk level for /metrics");
            None
        }
    };
    let mdms = match mdm_figures(&state).await {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "Cannot read the MDMs' figures for /metrics");
            None
        }
    };
    (
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        REGISTRY.render(devices.as_deref(), risk.as_deref(), mdms.as_deref()),
    )
}

/// Per MDM of a configured tenant: last successful sync, devices, devices per risk level.
async fn mdm_figures(state: &AppState) -> Result<Vec<MdmFigures>, crate::store::StoreError> {
    let config = state.config.load();
    Ok(state
        .store
        .mdm_metrics()
        .await?
        .into_iter()
        .filter(|m| config.tenants.iter().any(|t| t.id == m.tenant_id))
        .map(|m| MdmFigures {
            last_success: m
                .last_synced_at
                .map(|t| t.timestamp_millis() as f64 / 1000.0),
            by_risk: m.by_risk.iter().map(|(l, n)| (l.as_str(), *n)).collect(),
            tenant: m.tenant_id,
            mdm: m.mdm,
            devices: m.devices,
        })
        .collect())
}

/// Live devices per configured tenant (0 for a tenant without any), in one query.
async fn live_devices(state: &AppState) -> Result<Vec<(String, u64)>, crate::store::StoreError> {
    let counted: std::collections::HashMap<String, u64> = state
        .store
        .live_devices_by_tenant()
        .await?
        .into_iter()
        .collect();
    Ok(state
        .config
        .load()
        .tenants
        .iter()
        .map(|t| (t.id.clone(), counted.get(&t.id).copied().unwrap_or(0)))
        .collect())
}

/// Live devices at each risk level per configured tenant (every level listed).
async fn risk_levels(
    state: &AppState,
) -> Result<Vec<(String, &'static str, u64)>, crate::store::StoreError> {
    let counted: std::collections::HashMap<String, Vec<(crate::store::RiskLevel, u64)>> = state
        .store
        .risk_counts_by_tenant()
        .await?
        .into_iter()
        .collect();
    let mut out = Vec::new();
    for t in &state.config.load().tenants {
        for level in crate::store::RiskLevel::ALL {
            let n = counted
                .get(&t.id)
                .and_then(|c| c.iter().find(|(l, _)| *l == level))
                .map_or(0, |(_, n)| *n);
            out.push((t.id.clone(), level.as_str(), n));
        }
    }
    Ok(out)
}
