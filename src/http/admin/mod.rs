//! The admin and operations API (CONTRACT §5): `/v1/admin/*`, JSON, behind
//! the admin bearer token ([`AdminAuth`], always the first extractor, so an
//! unauthenticated request learns nothing, not even whether a tenant exists).
//!
//! Lists answer `{"items": […], "next_cursor": "…" | null}` and take
//! `?cursor=&limit=` (default 50, at most 500); the cursor is opaque (the
//! last row's key, hex-encoded) and pages are keyset-paginated by the store.
//! Inventory comes by ascending id; events, actions and sync runs newest
//! first. What the lists show is what the store holds: masked where the MDM
//! has `mask_pii`. Handlers are thin: check the tenant, parse the query, call
//! one store or engine function, shape the answer.

mod auth;
mod error;
mod query;

pub(in crate::http) use auth::tokens_match;
pub use auth::AdminAuth;
pub use error::AdminError;

use super::AppState;
use crate::actions::ActionsError;
use crate::adapters::Backoff;
use crate::config::TenantConfig;
use crate::store::{
    ActionFilter, ActionRecordKind, ActionState, AdminAction, AdminDevice, DeviceFilter,
    EventFilter, MdmHealth, Paged, RiskLevel, StoredIntegration, StoredThreat, StoredUser,
    SyncTrigger, UserFilter,
};
use crate::sync::{Requested, SyncError};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use mtd_adapter::Platform;
use query::{cursor, Params};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

/// The routes, merged into the daemon's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/tenants", get(list_tenants))
        .route("/v1/admin/tenants/{tenant}/devices", get(list_devices))
        .route(
            "/v1/admin/tenants/{tenant}/devices/{device_id}",
            get(device_detail),
        )
        .route(
            "/v1/admin/tenants/{tenant}/devices/{device_id}/threats/resolve",
            post(resolve_threat).layer(DefaultBodyLimit::max(MAX_ADMIN_BODY_BYTES)),
        )
        .route("/v1/admin/tenants/{tenant}/users", get(list_users))
        .route("/v1/admin/tenants/{tenant}/events", get(list_events))
        .route("/v1/admin/tenants/{tenant}/actions", get(list_actions))
        .route("/v1/admin/tenants/{tenant}/sync-runs", get(list_sync_runs))
        .route("/v1/admin/tenants/{tenant}/status", get(status))
        .route("/v1/admin/tenants/{tenant}/sync", post(sync))
        .route(
            "/v1/admin/tenants/{tenant}/actions/cancel-destructive",
            post(cancel_destructive),
        )
        .route(
            "/v1/admin/tenants/{tenant}/actions/{action_id}/approve",
            post(approve),
        )
        .route(
            "/v1/admin/tenants/{tenant}/actions/{action_id}/cancel",
            post(cancel),
        )
}

type Reply = Result<Json<Value>, AdminError>;

/// The largest admin request body (a threat to resolve is a few hundred bytes).
pub const MAX_ADMIN_BODY_BYTES: usize = 64 * 1024;

pub(in crate::http) const ACTION_STATES: &[(&str, ActionState)] = &[
    ("skipped", ActionState::Skipped),
    ("held", ActionState::Held),
    ("pending", ActionState::Pending),
    ("sent", ActionState::Sent),
    ("failed", ActionState::Failed),
    ("dead", ActionState::Dead),
    ("cancelled", ActionState::Cancelled),
];

const ACTION_KINDS: &[(&str, ActionRecordKind)] = &[
    ("none", ActionRecordKind::None),
    ("lock", ActionRecordKind::Lock),
    ("disconnect_wifi", ActionRecordKind::DisconnectWifi),
    ("enterprise_wipe", ActionRecordKind::EnterpriseWipe),
    ("wipe", ActionRecordKind::Wipe),
    ("remove_wifi_profile", ActionRecordKind::RemoveWifiProfile),
    ("signal_risk", ActionRecordKind::SignalRisk),
];

pub(in crate::http) const RISK_LEVELS: &[(&str, RiskLevel)] = &[
    ("secured", RiskLevel::Secured),
    ("low", RiskLevel::Low),
    ("medium", RiskLevel::Medium),
    ("high", RiskLevel::High),
    ("critical", RiskLevel::Critical),
];

const PLATFORMS: &[(&str, Platform)] = &[
    ("ios", Platform::Ios),
    ("android", Platform::Android),
    ("windows", Platform::Windows),
    ("macos", Platform::Macos),
    ("other", Platform::Other),
];

/// axum's `Path`, with its rejection (a segment that is not UTF-8, say
/// `%FF`) answered as our JSON 400 naming `path`, like every other bad input.
struct Path<T>(T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AdminError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Path(p.0))
            .map_err(|e| AdminError::param("path", e.body_text()))
    }
}

/// The configured tenant, or 404.
pub(in crate::http) fn tenant(state: &AppState, id: &str) -> Result<TenantConfig, AdminError> {
    state
        .config
        .load()
        .tenants
        .iter()
        .find(|t| t.id == id)
        .cloned()
        .ok_or(AdminError::TenantNotFound)
}

/// The store's id of the tenant's MDM named by `?mdm=`, or 400 naming `mdm`.
fn mdm_param(state: &AppState, tenant: &str, params: &Params) -> Result<Option<i64>, AdminError> {
    let Some(name) = params.get("mdm") else {
        return Ok(None);
    };
    state
        .sync
        .integrations()
        .into_iter()
        .find(|i| i.tenant_id == tenant && i.name == name)
        .map(|i| Some(i.mdm_id))
        .ok_or_else(|| AdminError::param("mdm", "the tenant has no MDM of that name"))
}

/// `{"items": […], "next_cursor": …}` for a page keyed by row id.
fn page<T: Serialize>(paged: Paged<T>) -> Reply {
    Ok(Json(json!({
        "items": paged.items,
        "next_cursor": paged.next_after.map(|id| cursor(&id.to_string())),
    })))
}

async fn list_tenants(_: AdminAuth, State(state): State<AppState>, RawQuery(q): RawQuery) -> Reply {
    let params = Params::parse(q.as_deref(), &["cursor", "limit"])?;
    let (after, limit) = (params.tenant_cursor()?, params.limit()? as usize);
    // Few tenants: the store lists them all by id, the page is cut here.
    let mut rows: Vec<_> = state
        .store
        .list_tenants()
        .await?
        .into_iter()
        .filter(|t| after.as_deref().is_none_or(|a| t.id.as_str() > a))
        .take(limit + 1)
        .collect();
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|t| cursor(&t.id))
    } else {
        None
    };
    let config = state.config.load();
    let items: Vec<Value> = rows
        .into_iter()
        .map(|t| {
            let mdms: Vec<Value> = config
                .tenants
                .iter()
                .find(|c| c.id == t.id)
                .map(|c| {
                    c.mdms
                        .iter()
                        .map(|m| json!({"name": m.name, "kind": m.kind}))
                        .collect()
                })
                .unwrap_or_default();
            json!({
                "id": t.id,
                "display_name": t.display_name,
                "mdms": mdms,
                "created_at": t.created_at,
                "updated_at": t.updated_at,
            })
        })
        .collect();
    Ok(Json(json!({"items": items, "next_cursor": next_cursor})))
}

async fn list_devices(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Reply {
    tenant(&state, &tenant_id)?;
    let params = Params::parse(
        q.as_deref(),
        &[
            "cursor",
            "limit",
            "include_removed",
            "identifier",
            "platform",
            "group",
            "mdm",
            "risk",
            "activated",
        ],
    )?;
    let filter = DeviceFilter {
        include_removed: params.flag("include_removed")?,
        identifier: params.string("identifier"),
        platform: params.one_of("platform", PLATFORMS)?,
        group: params.string("group"),
        mdm_id: mdm_param(&state, &tenant_id, &params)?,
        risk: params.one_of("risk", RISK_LEVELS)?,
        activated: params.one_of("activated", &[("true", true), ("false", false)])?,
        device_id: None,
    };
    page(
        state
            .store
            .admin_devices(&tenant_id, &filter, params.page()?)
            .await?,
    )
}

/// The device id of the path; anything but a positive integer names no device.
fn device_id(raw: &str) -> Result<i64, AdminError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(AdminError::Action(ActionsError::DeviceNotFound))
}

/// How many of a device's latest actions and closed threats its detail shows.
const DETAIL_RECENT: u32 = 20;

/// One device with what its detail shows (the admin API's and the console's).
#[derive(Debug)]
pub(in crate::http) struct DeviceDetail {
    pub device: AdminDevice,
    pub user: Option<StoredUser>,
    pub open_threats: Vec<StoredThreat>,
    pub resolved_threats: Vec<StoredThreat>,
    pub recent_actions: Vec<AdminAction>,
}

/// Reads one device of the tenant (removed ones too) and its latest closed
/// threats and actions; `device_not_found` when the tenant has no such device.
pub(in crate::http) async fn read_device_detail(
    state: &AppState,
    tenant_id: &str,
    id: i64,
) -> Result<DeviceDetail, AdminError> {
    let filter = DeviceFilter {
        include_removed: true,
        device_id: Some(id),
        ..DeviceFilter::default()
    };
    let one = crate::store::Page {
        after: None,
        limit: 1,
    };
    let device = state
        .store
        .admin_devices(tenant_id, &filter, one)
        .await?
        .items
        .into_iter()
        .next()
        .ok_or(AdminError::Action(ActionsError::DeviceNotFound))?;
    let user = match device.device.user_id {
        Some(u) => state.store.get_user(u).await?,
        None => None,
    };
    let open_threats = state.store.open_threats(id).await?;
    let resolved_threats = state.store.threat_history(id, DETAIL_RECENT).await?;
    let recent_actions = state
        .store
        .admin_actions(
            tenant_id,
            &ActionFilter {
                device_id: Some(id),
                ..ActionFilter::default()
            },
            crate::store::Page {
                after: None,
                limit: DETAIL_RECENT,
            },
        )
        .await?
        .items;
    Ok(DeviceDetail {
        device,
        user,
        open_threats,
        resolved_threats,
        recent_actions,
    })
}

/// `GET …/devices/{device_id}`: one device (removed ones too) with its
/// identifiers, user, groups, ownership, posture, activation, risk level and
/// open threats, its latest closed threats and its latest actions.
async fn device_detail(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((tenant_id, raw_id)): Path<(String, String)>,
) -> Reply {
    tenant(&state, &tenant_id)?;
    let id = device_id(&raw_id)?;
    let detail = read_device_detail(&state, &tenant_id, id).await?;
    let mut body = serde_json::to_value(&detail.device).map_err(internal)?;
    if let Some(map) = body.as_object_mut() {
        let level = map.remove("risk_level").unwrap_or(Value::Null);
        map.insert(
            "risk".into(),
            json!({"level": level, "open_threats": detail.open_threats}),
        );
        map.insert("resolved_threats".into(), json!(detail.resolved_threats));
        // As the user list shows a user: with its MDM's name.
        let user = detail.user.map(|u| {
            let mut v = json!(u);
            v["mdm"] = map.get("mdm").cloned().unwrap_or(Value::Null);
            v
        });
        map.insert("user".into(), json!(user));
        map.insert("recent_actions".into(), json!(detail.recent_actions));
    }
    Ok(Json(body))
}

/// The body of `POST …/threats/resolve`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    #[serde(rename = "type")]
    threat_type: String,
    #[serde(default)]
    key: Option<String>,
}

/// `POST …/devices/{device_id}/threats/resolve`: an admin closes an open threat.
async fn resolve_threat(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((tenant_id, raw_id)): Path<(String, String)>,
    body: Result<axum::body::Bytes, BytesRejection>,
) -> Reply {
    let t = tenant(&state, &tenant_id)?;
    let id = device_id(&raw_id)?;
    // axum's own rejection is plain text; ours is the documented JSON.
    let body = body.map_err(|e| {
        AdminError::Api(if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            super::ApiError::PayloadTooLarge
        } else {
            super::ApiError::InvalidJson("the request body could not be read".into())
        })
    })?;
    let req: ResolveBody = serde_json::from_slice(&body).map_err(|e| {
        AdminError::Api(super::ApiError::InvalidField {
            field: "body".into(),
            message: format!("expected {{\"type\": \"…\", \"key\": \"…\" | null}}: {e}"),
        })
    })?;
    if req.threat_type.is_empty() {
        return Err(AdminError::param("type", "must not be empty"));
    }
    let resolved = state
        .actions
        .resolve_threat(
            &t,
            &state.sync.risk_signal_mdms(&t),
            id,
            &req.threat_type,
            req.key.as_deref().unwrap_or(""),
        )
        .await?;
    Ok(Json(serde_json::to_value(resolved).map_err(internal)?))
}

async fn list_users(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Reply {
    tenant(&state, &tenant_id)?;
    let params = Params::parse(q.as_deref(), &["cursor", "limit", "include_removed", "mdm"])?;
    let filter = UserFilter {
        include_removed: params.flag("include_removed")?,
        mdm_id: mdm_param(&state, &tenant_id, &params)?,
    };
    page(
        state
            .store
            .admin_users(&tenant_id, &filter, params.page()?)
            .await?,
    )
}

async fn list_events(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Reply {
    tenant(&state, &tenant_id)?;
    let params = Params::parse(
        q.as_deref(),
        &["cursor", "limit", "device_id", "type", "since", "until"],
    )?;
    let filter = EventFilter {
        device_id: params.id("device_id")?,
        threat_type: params.string("type"),
        since: params.time("since")?,
        until: params.time("until")?,
    };
    page(
        state
            .store
            .admin_events(&tenant_id, &filter, params.page()?)
            .await?,
    )
}

async fn list_actions(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Reply {
    tenant(&state, &tenant_id)?;
    let params = Params::parse(
        q.as_deref(),
        &["cursor", "limit", "state", "kind", "device_id"],
    )?;
    let filter = ActionFilter {
        state: params.one_of("state", ACTION_STATES)?,
        kind: params.one_of("kind", ACTION_KINDS)?,
        device_id: params.id("device_id")?,
    };
    page(
        state
            .store
            .admin_actions(&tenant_id, &filter, params.page()?)
            .await?,
    )
}

async fn list_sync_runs(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Reply {
    tenant(&state, &tenant_id)?;
    let params = Params::parse(q.as_deref(), &["cursor", "limit", "mdm"])?;
    let mdm_id = mdm_param(&state, &tenant_id, &params)?;
    page(
        state
            .store
            .admin_sync_runs(&tenant_id, mdm_id, params.page()?)
            .await?,
    )
}

/// `POST …/sync`: a full sync of every MDM of the tenant (or `?mdm=`), without
/// waiting. A request while a run is going is queued behind it or coalesced
/// into the follow-up run that is already queued.
async fn sync(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<(StatusCode, Json<Value>), AdminError> {
    let t = tenant(&state, &tenant_id)?;
    let params = Params::parse(q.as_deref(), &["mdm"])?;
    let mdm = params.get("mdm");
    mdm_param(&state, &tenant_id, &params)?;
    let requested = request_sync(&state, &t, mdm)?;
    let mdms: Vec<Value> = requested
        .into_iter()
        .map(|(name, r)| {
            let requested = match r {
                Requested::Queued => "queued",
                Requested::Coalesced => "coalesced",
            };
            json!({"name": name, "requested": requested})
        })
        .collect();
    tracing::info!(tenant = %tenant_id, mdms = mdms.len(), "Full sync requested through the admin API");
    Ok((StatusCode::ACCEPTED, Json(json!({"mdms": mdms}))))
}

/// Asks for a full sync of every MDM of the tenant, or of the one named
/// `mdm`, without waiting (the admin API's `POST …/sync` and the console's
/// "Sync now"); returns what became of each MDM's request.
pub(in crate::http) fn request_sync(
    state: &AppState,
    t: &TenantConfig,
    mdm: Option<&str>,
) -> Result<Vec<(String, Requested)>, AdminError> {
    if t.mdms.is_empty() {
        return Ok(Vec::new());
    }
    state
        .sync
        .request_full_sync(&t.id, mdm, SyncTrigger::Admin)
        .map_err(|e| match e {
            SyncError::UnknownTenant(_) => AdminError::TenantNotFound,
            SyncError::UnknownMdm { .. } => {
                AdminError::param("mdm", "the tenant has no MDM of that name")
            }
            SyncError::Disabled { mdm, .. } => AdminError::MdmDisabled(mdm),
            e @ SyncError::ShuttingDown => {
                AdminError::Api(super::ApiError::Unavailable(Box::new(e)))
            }
            SyncError::Store(e) => e.into(),
        })
}

/// The action id of the path; anything but a positive integer names no action.
fn action_id(raw: &str) -> Result<i64, AdminError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(AdminError::Action(ActionsError::NotFound))
}

/// `POST …/actions/{id}/approve`: held → pending, then wake the dispatcher.
async fn approve(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((tenant_id, raw_id)): Path<(String, String)>,
) -> Reply {
    tenant(&state, &tenant_id)?;
    let approved = state
        .actions
        .approve(&tenant_id, action_id(&raw_id)?)
        .await?;
    Ok(Json(serde_json::to_value(approved).map_err(internal)?))
}

/// `POST …/actions/{id}/cancel`: a pending, held or failed action that is not
/// being sent right now becomes `cancelled`.
async fn cancel(
    _: AdminAuth,
    State(state): State<AppState>,
    Path((tenant_id, raw_id)): Path<(String, String)>,
) -> Reply {
    tenant(&state, &tenant_id)?;
    let cancelled = state
        .actions
        .cancel(&tenant_id, action_id(&raw_id)?)
        .await?;
    Ok(Json(serde_json::to_value(cancelled).map_err(internal)?))
}

/// `POST …/actions/cancel-destructive`: every pending, held or failed
/// enterprise wipe and wipe of the tenant that is not being sent right now.
async fn cancel_destructive(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
) -> Reply {
    tenant(&state, &tenant_id)?;
    let ids = state.actions.cancel_destructive(&tenant_id).await?;
    Ok(Json(json!({"cancelled": ids.len(), "actions": ids})))
}

/// One MDM's health as the status answer and the console show it.
#[derive(Debug)]
pub(in crate::http) struct MdmStatus {
    pub integration: StoredIntegration,
    /// `enabled` in the tenant file.
    pub enabled: bool,
    /// Figures of the last 24 hours (failed syncs, dead actions) and now.
    pub health: MdmHealth,
    /// What the MDM's work waits for now; kept in memory only.
    pub backoff: Option<Backoff>,
}

/// A tenant's health: its MDMs and its devices per risk level.
#[derive(Debug)]
pub(in crate::http) struct TenantStatus {
    pub generated_at: chrono::DateTime<Utc>,
    pub devices_by_risk: Vec<(RiskLevel, u64)>,
    pub mdms: Vec<MdmStatus>,
}

/// Reads the health of the tenant's MDMs and its devices per risk level.
pub(in crate::http) async fn read_status(
    state: &AppState,
    config: &TenantConfig,
) -> Result<TenantStatus, AdminError> {
    let now = Utc::now();
    let since = now - chrono::Duration::hours(24);
    let mut mdms = Vec::new();
    for i in state.store.integrations(&config.id).await? {
        let health = state.store.mdm_health(i.id, since).await?;
        let enabled = config
            .mdms
            .iter()
            .find(|m| m.name == i.name)
            .is_some_and(|m| m.enabled);
        let backoff = state
            .sync
            .integration(&config.id, i.id)
            .and_then(|x| x.health.backoff());
        mdms.push(MdmStatus {
            integration: i,
            enabled,
            health,
            backoff,
        });
    }
    Ok(TenantStatus {
        generated_at: now,
        devices_by_risk: state.store.risk_counts(&config.id).await?,
        mdms,
    })
}

/// `GET …/status`: per MDM, the last sync, failures of the last 24 hours,
/// actions waiting or given up, pending Wi-Fi removals, identity collisions.
/// `backoff`: null, or what the MDM's work waits for now (the retry of failed
/// full syncs, a rate limit the MDM asked for); kept in memory only.
async fn status(
    _: AdminAuth,
    State(state): State<AppState>,
    Path(tenant_id): Path<String>,
) -> Reply {
    let config = tenant(&state, &tenant_id)?;
    let status = read_status(&state, &config).await?;
    let mdms: Vec<Value> = status
        .mdms
        .into_iter()
        .map(
            |MdmStatus {
                 integration: i,
                 enabled,
                 health: h,
                 backoff,
             }| {
                let last_sync = h.last_sync.map(|r| {
                    json!({
                        "id": r.id,
                        "trigger": r.trigger,
                        "started_at": r.started_at,
                        "finished_at": r.finished_at,
                        "outcome": r.outcome,
                        "counts": {
                            "added": r.added,
                            "updated": r.updated,
                            "removed": r.removed,
                            "skipped": r.skipped,
                        },
                        "held_removals": r.held_removals,
                        "error": r.error,
                    })
                });
                json!({
                    "name": i.name,
                    "kind": i.kind,
                    "enabled": enabled,
                    "devices": h.devices,
                    "activated_devices": h.activated_devices,
                    "last_successful_sync_at": i.last_synced_at,
                    "last_sync": last_sync,
                    "failed_syncs_24h": {
                        "count": h.failed_syncs,
                        "last_error": h.last_sync_error,
                        "last_error_at": h.last_sync_error_at,
                    },
                    "actions": {
                        "pending": h.pending,
                        "held": h.held,
                        "failed": h.failed,
                        "dead": h.dead,
                        "dead_24h": h.dead_recent,
                    },
                    "pending_wifi_removals": h.pending_wifi_removals,
                    "identity_collisions": h.collisions,
                    "backoff": backoff,
                })
            },
        )
        .collect();
    let risk: serde_json::Map<String, Value> = status
        .devices_by_risk
        .into_iter()
        .map(|(level, n)| (level.as_str().to_string(), json!(n)))
        .collect();
    Ok(Json(json!({
        "tenant": tenant_id,
        "generated_at": status.generated_at,
        "devices_by_risk": risk,
        "mdms": mdms,
    })))
}

fn internal(e: serde_json::Error) -> AdminError {
    AdminError::Api(super::ApiError::Internal(Box::new(e)))
}
