//! Collision flags: a live device that shares a udid, serial, imei or mac
//! with another live device of its tenant is flagged. Both records are
//! kept; a lookup by that identifier takes the most recently checked-in one
//! and admins see the flag. A batch only sets flags
//! ([`mark_collisions_bulk`]); [`Store::refresh_collisions`] (also run by
//! every removal) recomputes them all, clearing stale ones.

use super::json_rows;
use crate::store::{Store, StoreError};
use sqlx::SqliteConnection;
use std::collections::HashMap;

// The bulk statements of collision flags: one bound JSON array each (see
// [`json_rows`]), every one checked for its query plan by a test.
pub(super) const COLLISION_PAIRS: &str = "WITH p (id, udid, serial, imei, mac) AS MATERIALIZED (
     SELECT j.value ->> 0, j.value ->> 1, j.value ->> 2, j.value ->> 3, j.value ->> 4
     FROM json_each(?2) AS j)
     SELECT p.id, o.id FROM p CROSS JOIN devices AS o
     ON o.tenant_id = ?1 AND o.udid = p.udid
     WHERE o.id <> p.id AND +o.removed_at IS NULL
     UNION SELECT p.id, o.id FROM p CROSS JOIN devices AS o
     ON o.tenant_id = ?1 AND o.serial = p.serial
     WHERE o.id <> p.id AND +o.removed_at IS NULL
     UNION SELECT p.id, o.id FROM p CROSS JOIN devices AS o
     ON o.tenant_id = ?1 AND o.imei = p.imei
     WHERE o.id <> p.id AND +o.removed_at IS NULL
     UNION SELECT p.id, o.id FROM p CROSS JOIN devices AS o
     ON o.tenant_id = ?1 AND o.mac = p.mac
     WHERE o.id <> p.id AND +o.removed_at IS NULL";

pub(super) const COLLISIONS_FLAG: &str = "UPDATE devices SET collision = 1
     WHERE collision = 0 AND id IN (SELECT value FROM json_each(?1))";

/// A device of a batch as the collision check sees it.
pub(super) struct Candidate<'a> {
    pub(super) id: i64,
    /// udid, serial, imei and mac, normalised.
    pub(super) identifiers: [&'a Option<String>; 4],
    /// Live (stored and not removed) before the batch.
    pub(super) live_before: bool,
    /// Flagged as a collision before the batch.
    pub(super) collision_before: bool,
    /// Position of its first listing in the batch.
    pub(super) pos: usize,
}

/// Flags every device of the batch that shares a udid, serial, imei or mac
/// with another live device of the tenant, and those devices too, in two
/// statements. Returns how many devices of the batch the one-at-a-time
/// writes would have counted as newly flagged (see [`newly_flagged`]).
/// Flags are only set here; [`Store::refresh_collisions`] clears stale ones.
pub(super) async fn mark_collisions_bulk(
    conn: &mut SqliteConnection,
    tenant_id: &str,
    batch: &[Candidate<'_>],
) -> Result<u64, StoreError> {
    let rows: Vec<_> = batch
        .iter()
        .filter(|c| c.identifiers.iter().any(|v| v.is_some()))
        .map(|c| {
            let [udid, serial, imei, mac] = c.identifiers;
            (c.id, udid, serial, imei, mac)
        })
        .collect();
    if rows.is_empty() {
        return Ok(0);
    }
    // `col = NULL` is never true, so an absent identifier matches nothing.
    // One indexed probe per identifier and device (an OR across the columns
    // would make SQLite scan the tenant's devices); `+removed_at` keeps the
    // planner off the (tenant_id, removed_at) index.
    let pairs: Vec<(i64, i64)> = sqlx::query_as(COLLISION_PAIRS)
        .bind(tenant_id)
        .bind(json_rows(&rows))
        .fetch_all(&mut *conn)
        .await?;
    if pairs.is_empty() {
        return Ok(0);
    }
    let mut flagged: Vec<i64> = pairs.iter().flat_map(|(x, o)| [*x, *o]).collect();
    flagged.sort_unstable();
    flagged.dedup();
    sqlx::query(COLLISIONS_FLAG)
        .bind(json_rows(&flagged))
        .execute(&mut *conn)
        .await?;
    Ok(newly_flagged(batch, &pairs))
}

/// How many devices of the batch the one-at-a-time writes would have
/// counted as newly flagged, given the `(device of the batch, live peer)`
/// pairs: a device counts when, at its turn in the batch, it had a live
/// peer (devices later in the batch that were not live yet did not exist
/// then) and no earlier device of the batch had flagged it already.
fn newly_flagged(batch: &[Candidate<'_>], pairs: &[(i64, i64)]) -> u64 {
    let by_id: HashMap<i64, &Candidate> = batch.iter().map(|c| (c.id, c)).collect();
    let mut peers: HashMap<i64, Vec<i64>> = HashMap::new();
    for (x, o) in pairs {
        peers.entry(*x).or_default().push(*o);
    }
    let existed_at = |o: &i64, pos: usize| match by_id.get(o) {
        None => true,
        Some(other) => other.live_before || other.pos < pos,
    };
    let had_peer = |x: &i64| {
        let pos = by_id[x].pos;
        peers
            .get(x)
            .is_some_and(|ps| ps.iter().any(|o| existed_at(o, pos)))
    };
    let mut counted = 0;
    for (x, ps) in &peers {
        let device = by_id[x];
        if device.collision_before || !had_peer(x) {
            continue;
        }
        let flagged_earlier = device.live_before
            && ps
                .iter()
                .any(|y| by_id.get(y).is_some_and(|o| o.pos < device.pos) && had_peer(y));
        if !flagged_earlier {
            counted += 1;
        }
    }
    counted
}

pub(super) async fn refresh_collisions(
    conn: &mut SqliteConnection,
    tenant_id: &str,
) -> Result<u64, StoreError> {
    sqlx::query(
        // Four EXISTS, each on its identifier's index: an OR inside one
        // subquery would scan the tenant's devices once per device.
        "UPDATE devices SET collision = (+removed_at IS NULL AND (
             EXISTS (SELECT 1 FROM devices o WHERE o.tenant_id = devices.tenant_id
                     AND o.udid = devices.udid AND o.id <> devices.id AND +o.removed_at IS NULL)
             OR EXISTS (SELECT 1 FROM devices o WHERE o.tenant_id = devices.tenant_id
                     AND o.serial = devices.serial AND o.id <> devices.id
                     AND +o.removed_at IS NULL)
             OR EXISTS (SELECT 1 FROM devices o WHERE o.tenant_id = devices.tenant_id
                     AND o.imei = devices.imei AND o.id <> devices.id AND +o.removed_at IS NULL)
             OR EXISTS (SELECT 1 FROM devices o WHERE o.tenant_id = devices.tenant_id
                     AND o.mac = devices.mac AND o.id <> devices.id AND +o.removed_at IS NULL)))
         WHERE tenant_id = ?",
    )
    .bind(tenant_id)
    .execute(&mut *conn)
    .await?;
    let (n,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM devices WHERE tenant_id = ? AND collision = 1")
            .bind(tenant_id)
            .fetch_one(&mut *conn)
            .await?;
    Ok(n.try_into().unwrap_or(0))
}

impl Store {
    /// Recomputes every collision flag of a tenant (sets and clears); returns
    /// how many live devices are flagged.
    pub async fn refresh_collisions(&self, tenant_id: &str) -> Result<u64, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = refresh_collisions(&mut tx, tenant_id).await?;
        tx.commit().await?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sync_runs::testutil::run;
    use crate::store::testutil::*;
    use crate::store::Pii;
    use chrono::{TimeZone, Utc};
    use mtd_adapter::{Device, DeviceIdentifier};

    static NONE: Option<String> = None;

    fn candidate(
        id: i64,
        pos: usize,
        live_before: bool,
        collision_before: bool,
    ) -> Candidate<'static> {
        Candidate {
            id,
            identifiers: [&NONE; 4],
            live_before,
            collision_before,
            pos,
        }
    }

    /// Every ordered pair of distinct ids, as `COLLISION_PAIRS` returns
    /// them for devices that all share one identifier.
    fn all_pairs(ids: &[i64]) -> Vec<(i64, i64)> {
        ids.iter()
            .flat_map(|x| ids.iter().filter(move |o| *o != x).map(move |o| (*x, *o)))
            .collect()
    }

    #[test]
    fn new_devices_sharing_an_identifier_count_from_the_second_one_on() {
        let batch = [
            candidate(1, 0, false, false),
            candidate(2, 1, false, false),
            candidate(3, 2, false, false),
        ];
        assert_eq!(newly_flagged(&batch, &all_pairs(&[1, 2, 3])), 2);
        assert_eq!(newly_flagged(&batch[..1], &[]), 0);
    }

    #[test]
    fn a_device_counts_once_at_its_turn_and_not_when_already_flagged() {
        let batch = [
            // New, finds the stored 10: counts, and 10 is flagged by it.
            candidate(11, 0, false, false),
            candidate(10, 1, true, false),
            // New, finds a device outside the batch: counts.
            candidate(12, 2, false, false),
            // Flagged before the batch: does not count again.
            candidate(13, 3, true, true),
            // Stored, its only peer is listed after it and new: it had no
            // peer at its turn; 15 finds it and counts.
            candidate(14, 4, true, false),
            candidate(15, 5, false, false),
        ];
        let mut pairs = all_pairs(&[10, 11]);
        pairs.extend([(12, 99), (13, 98)]);
        pairs.extend(all_pairs(&[14, 15]));
        assert_eq!(newly_flagged(&batch, &pairs), 3, "11, 12 and 15");
    }

    #[tokio::test]
    async fn three_devices_sharing_a_serial_in_one_batch_count_as_two_new_collisions() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let batch: Vec<Device> = ["a", "b", "c"]
            .into_iter()
            .map(|id| {
                let mut d = device(id);
                d.identifiers.serial = Some("SHARED".into());
                d
            })
            .collect();
        let r = run(&store, mdm).await;
        let c = store
            .upsert_devices(r, mdm, &batch, Pii::Clear)
            .await
            .unwrap();
        assert_eq!(
            c.collisions, 2,
            "as one at a time: b finds a, c finds a and b"
        );
        let found = store
            .find_devices("acme", &DeviceIdentifier::Serial("shared".into()))
            .await
            .unwrap();
        assert_eq!(found.len(), 3);
        assert!(found.iter().all(|d| d.collision));
        let again = store
            .upsert_devices(run(&store, mdm).await, mdm, &batch, Pii::Clear)
            .await
            .unwrap();
        assert_eq!(again.collisions, 0, "already flagged");
    }

    #[tokio::test]
    async fn a_new_device_sharing_an_unchanged_devices_serial_flags_both_in_either_order() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let with_serial = |id: &str, serial: &str| {
            let mut d = device(id);
            d.identifiers.serial = Some(serial.into());
            d
        };
        let (a, b) = (with_serial("a", "S-1"), with_serial("b", "S-2"));
        let first = store
            .upsert_devices(
                run(&store, mdm).await,
                mdm,
                &[a.clone(), b.clone()],
                Pii::Clear,
            )
            .await
            .unwrap();
        assert_eq!(first.collisions, 0);

        // a stays as it was and a new device after it takes its serial; a
        // new device before b takes b's.
        let batch = [
            a.clone(),
            with_serial("a2", "s-1"),
            with_serial("b2", "s-2"),
            b.clone(),
        ];
        let second = store
            .upsert_devices(run(&store, mdm).await, mdm, &batch, Pii::Clear)
            .await
            .unwrap();
        assert_eq!((second.added, second.updated), (2, 0));
        assert_eq!(second.collisions, 2, "a2 finds a, b2 finds b");
        for serial in ["S-1", "S-2"] {
            let found = store
                .find_devices("acme", &DeviceIdentifier::Serial(serial.into()))
                .await
                .unwrap();
            assert_eq!(found.len(), 2, "{serial}");
            assert!(found.iter().all(|d| d.collision), "{serial}: {found:?}");
        }

        // A third sync of the same batch flags nothing new.
        let third = store
            .upsert_devices(run(&store, mdm).await, mdm, &batch, Pii::Clear)
            .await
            .unwrap();
        assert_eq!(third.collisions, 0, "already flagged");
    }

    #[tokio::test]
    async fn devices_sharing_a_serial_are_both_kept_flagged_and_found_latest_check_in_first() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut old = device("1");
        old.identifiers.serial = Some("SAME".into());
        old.last_checkin_at = Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
        let mut new = device("2");
        new.identifiers.serial = Some("same".into());
        new.last_checkin_at = Some(Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap());
        let r = run(&store, mdm).await;
        let c = store
            .upsert_devices(r, mdm, &[old.clone(), new.clone(), device("3")], Pii::Clear)
            .await
            .unwrap();
        assert_eq!(c.collisions, 1, "the second one found the first");
        let found = store
            .find_devices("acme", &DeviceIdentifier::Serial("same".into()))
            .await
            .unwrap();
        assert_eq!(
            found
                .iter()
                .map(|d| d.mdm_device_id.as_str())
                .collect::<Vec<_>>(),
            vec!["2", "1"]
        );
        assert!(found.iter().all(|d| d.collision));
        assert!(!store.get_device(3).await.unwrap().unwrap().collision);

        // Once one of them is gone, the other is no longer a collision.
        let r2 = run(&store, mdm).await;
        store
            .upsert_devices(r2, mdm, &[new, device("3")], Pii::Clear)
            .await
            .unwrap();
        store.remove_unseen(mdm, r2).await.unwrap();
        let left = store
            .find_devices("acme", &DeviceIdentifier::Serial("SAME".into()))
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
        assert!(!left[0].collision);
        assert_eq!(store.refresh_collisions("acme").await.unwrap(), 0);
    }
}
