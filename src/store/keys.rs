//! The per-tenant key of masked PII (`tenant_keys`): the sync engine's
//! masker (`sync::pii`) hashes a masked user's clear values with it
//! (HMAC-SHA256), so the same person matches across syncs without the clear
//! value being stored. Created on first use and kept: with a new key every
//! masked user of the tenant would look like a new user.

use super::{Store, StoreError};

impl Store {
    /// The tenant's key for hashing masked PII; created (32 random bytes) on first use.
    pub async fn pii_key(&self, tenant_id: &str) -> Result<Vec<u8>, StoreError> {
        use rand::RngCore;
        let mut fresh = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut fresh);
        // INSERT OR IGNORE then read: two concurrent first uses agree on one key.
        sqlx::query("INSERT OR IGNORE INTO tenant_keys (tenant_id, pii_key, created_at) VALUES (?1, ?2, ?3)")
            .bind(tenant_id)
            .bind(&fresh)
            .bind(chrono::Utc::now())
            .execute(&self.pool)
            .await?;
        let key: Vec<u8> =
            sqlx::query_scalar("SELECT pii_key FROM tenant_keys WHERE tenant_id = ?1")
                .bind(tenant_id)
                .fetch_one(&self.pool)
                .await?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::store_with_mdm;
    use super::super::Store;

    #[tokio::test]
    async fn the_pii_key_is_created_once_and_kept() {
        let (dir, store, _) = store_with_mdm().await;
        let tenant = store.list_tenants().await.unwrap()[0].id.clone();
        let a = store.pii_key(&tenant).await.unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(store.pii_key(&tenant).await.unwrap(), a);
        store.close().await;
        let reopened = Store::open(&dir.path().join("data/test.db")).await.unwrap();
        assert_eq!(reopened.pii_key(&tenant).await.unwrap(), a);
    }
}
