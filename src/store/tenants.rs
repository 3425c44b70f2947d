//! Tenants and their MDM integrations, written from the configuration at start.
//!
//! The store does not know the config module: the daemon converts its tenant
//! files into the plain records here. An MDM integration is keyed by its name
//! in the tenant file; a tenant or MDM that disappears from the config is
//! marked retired, never deleted, because its events and actions are records.

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use mtd_adapter::MdmKind;
use sqlx::FromRow;

/// One tenant as the configuration declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantRecord {
    pub id: String,
    pub display_name: String,
    pub mdms: Vec<MdmRecord>,
}

/// One `[[mdm]]` of a tenant file, as far as the store needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmRecord {
    pub name: String,
    pub kind: MdmKind,
    pub url: String,
}

/// An MDM integration as [`Store::sync_tenants`] wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrationRef {
    /// The store's id for the integration (`mdm_id` everywhere else).
    pub id: i64,
    pub tenant_id: String,
    pub name: String,
    pub kind: MdmKind,
    /// True when this start recorded the integration for the first time
    /// (the sync engine runs its initial full sync then).
    pub first_seen: bool,
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StoredTenant {
    pub id: String,
    pub display_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// An MDM integration as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredIntegration {
    pub id: i64,
    pub tenant_id: String,
    pub name: String,
    pub kind: MdmKind,
    pub url: String,
    pub first_seen_at: DateTime<Utc>,
    /// End of the last successful full sync.
    pub last_synced_at: Option<DateTime<Utc>>,
}

#[derive(FromRow)]
struct IntegrationRow {
    id: i64,
    tenant_id: String,
    name: String,
    kind: String,
    url: String,
    first_seen_at: DateTime<Utc>,
    last_synced_at: Option<DateTime<Utc>>,
}

impl TryFrom<IntegrationRow> for StoredIntegration {
    type Error = StoreError;
    fn try_from(r: IntegrationRow) -> Result<Self, StoreError> {
        Ok(StoredIntegration {
            kind: r.kind.parse().map_err(StoreError::Corrupt)?,
            id: r.id,
            tenant_id: r.tenant_id,
            name: r.name,
            url: r.url,
            first_seen_at: r.first_seen_at,
            last_synced_at: r.last_synced_at,
        })
    }
}

impl Store {
    /// Writes the configured tenants and their MDM integrations in one
    /// transaction: new ones are inserted, changed ones updated, and those no
    /// longer configured marked retired. Returns every configured integration.
    pub async fn sync_tenants(
        &self,
        tenants: &[TenantRecord],
    ) -> Result<Vec<IntegrationRef>, StoreError> {
        let now = Utc::now();
        let mut tx = self.begin_write().await?;
        let mut refs = Vec::new();
        // Everything not touched below is retired; touched rows clear it again.
        sqlx::query("UPDATE tenants SET retired_at = ? WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE mdm_integrations SET retired_at = ? WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        for t in tenants {
            sqlx::query(
                "INSERT INTO tenants (id, display_name, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT (id) DO UPDATE SET
                   updated_at = CASE WHEN display_name IS excluded.display_name
                                     THEN updated_at ELSE excluded.updated_at END,
                   display_name = excluded.display_name,
                   retired_at = NULL",
            )
            .bind(&t.id)
            .bind(&t.display_name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            for m in &t.mdms {
                let existing: Option<(i64,)> = sqlx::query_as(
                    "SELECT id FROM mdm_integrations WHERE tenant_id = ? AND name = ?",
                )
                .bind(&t.id)
                .bind(&m.name)
                .fetch_optional(&mut *tx)
                .await?;
                let (id, first_seen) = match existing {
                    Some((id,)) => {
                        sqlx::query(
                            "UPDATE mdm_integrations SET
                               updated_at = CASE WHEN kind IS ?2 AND url IS ?3
                                                 THEN updated_at ELSE ?4 END,
                               kind = ?2, url = ?3, retired_at = NULL
                             WHERE id = ?1",
                        )
                        .bind(id)
                        .bind(m.kind.as_str())
                        .bind(&m.url)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        (id, false)
                    }
                    None => {
                        let (id,): (i64,) = sqlx::query_as(
                            "INSERT INTO mdm_integrations
                               (tenant_id, name, kind, url, first_seen_at, updated_at)
                             VALUES (?1, ?2, ?3, ?4, ?5, ?5) RETURNING id",
                        )
                        .bind(&t.id)
                        .bind(&m.name)
                        .bind(m.kind.as_str())
                        .bind(&m.url)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                        (id, true)
                    }
                };
                refs.push(IntegrationRef {
                    id,
                    tenant_id: t.id.clone(),
                    name: m.name.clone(),
                    kind: m.kind,
                    first_seen,
                });
            }
        }
        tx.commit().await?;
        Ok(refs)
    }

    /// The configured (not retired) tenants, by id.
    pub async fn list_tenants(&self) -> Result<Vec<StoredTenant>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, display_name, created_at, updated_at FROM tenants
             WHERE retired_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The configured (not retired) MDM integrations of a tenant, by name.
    pub async fn integrations(
        &self,
        tenant_id: &str,
    ) -> Result<Vec<StoredIntegration>, StoreError> {
        let rows: Vec<IntegrationRow> = sqlx::query_as(
            "SELECT id, tenant_id, name, kind, url, first_seen_at, last_synced_at
             FROM mdm_integrations WHERE tenant_id = ? AND retired_at IS NULL ORDER BY name",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(StoredIntegration::try_from).collect()
    }

    /// One MDM integration by id, retired or not.
    pub async fn integration(&self, mdm_id: i64) -> Result<StoredIntegration, StoreError> {
        let row: Option<IntegrationRow> = sqlx::query_as(
            "SELECT id, tenant_id, name, kind, url, first_seen_at, last_synced_at
             FROM mdm_integrations WHERE id = ?",
        )
        .bind(mdm_id)
        .fetch_optional(&self.pool)
        .await?;
        row.ok_or_else(|| StoreError::NotFound {
            what: "MDM integration",
            id: mdm_id.to_string(),
        })?
        .try_into()
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;

    fn acme(mdms: &[(&str, MdmKind)]) -> TenantRecord {
        TenantRecord {
            id: "acme".into(),
            display_name: "Acme Corp".into(),
            mdms: mdms
                .iter()
                .map(|(name, kind)| MdmRecord {
                    name: (*name).into(),
                    kind: *kind,
                    url: format!("https://{}.example/", kind),
                })
                .collect(),
        }
    }

    #[tokio::test]
    async fn sync_tenants_records_new_integrations_as_first_seen_once() {
        let (_dir, store) = temp_store().await;
        let config = [acme(&[
            ("Acme SOTI", MdmKind::Soti),
            ("Acme AirWatch", MdmKind::Airwatch),
        ])];
        let first = store.sync_tenants(&config).await.unwrap();
        assert_eq!(first.len(), 2);
        assert!(first.iter().all(|i| i.first_seen && i.tenant_id == "acme"));
        let second = store.sync_tenants(&config).await.unwrap();
        assert!(second.iter().all(|i| !i.first_seen));
        assert_eq!(
            first.iter().map(|i| i.id).collect::<Vec<_>>(),
            second.iter().map(|i| i.id).collect::<Vec<_>>(),
            "ids are stable across starts"
        );
        let stored = store.integrations("acme").await.unwrap();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[0].name, "Acme AirWatch");
        assert_eq!(stored[0].kind, MdmKind::Airwatch);
        assert_eq!(stored[0].url, "https://airwatch.example/");
        assert_eq!(
            store.integration(first[0].id).await.unwrap().name,
            "Acme SOTI"
        );
    }

    #[tokio::test]
    async fn sync_tenants_updates_changed_values_and_retires_what_left_the_config() {
        let (_dir, store) = temp_store().await;
        let beta = TenantRecord {
            id: "beta".into(),
            display_name: "Beta".into(),
            mdms: vec![],
        };
        store
            .sync_tenants(&[acme(&[("Acme SOTI", MdmKind::Soti)]), beta.clone()])
            .await
            .unwrap();
        assert_eq!(store.list_tenants().await.unwrap().len(), 2);

        let mut renamed = acme(&[("Acme BCDM", MdmKind::Bcdm)]);
        renamed.display_name = "Acme Corporation".into();
        let refs = store.sync_tenants(&[renamed]).await.unwrap();
        assert!(refs[0].first_seen);
        let tenants = store.list_tenants().await.unwrap();
        assert_eq!(tenants.len(), 1, "beta is retired");
        assert_eq!(tenants[0].display_name, "Acme Corporation");
        let mdms = store.integrations("acme").await.unwrap();
        assert_eq!(mdms.len(), 1, "the SOTI integration is retired");
        assert_eq!(mdms[0].name, "Acme BCDM");

        // Back in the config: the old row (and id) comes back.
        let back = store.sync_tenants(&[beta]).await.unwrap();
        assert!(back.is_empty());
        assert_eq!(store.list_tenants().await.unwrap()[0].id, "beta");
    }

    #[tokio::test]
    async fn integration_by_unknown_id_is_not_found() {
        let (_dir, store) = temp_store().await;
        let err = store.integration(42).await.unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err:?}");
        assert!(!err.is_unavailable());
    }
}
