//! The store's side of the dispatch writer (`dispatch::writer`): everything
//! the dispatcher writes, as operations ([`DispatchOp`]) of which many share
//! one transaction ([`WriteTx::apply_dispatch`]).
//!
//! A claim audits all its rows with one statement, and a run of transitions
//! is applied with one `UPDATE … FROM json_each` and one audit `INSERT`,
//! whatever its length, so the SQL text never changes with the number of
//! rows and stays prepared on the writer's connection (as `store::ingest`
//! does for events). The rows and audit rows are exactly those the one-row
//! methods ([`Store::transition_action_with`], [`Store::claim_due_actions`])
//! write: those are this code with a group of one.

use super::actions::{audit_rows, insert_action, ACTION_COLUMNS};
use super::ingest::timestamp;
use super::{
    ActionState, NewAction, SendGate, Store, StoreError, StoredAction, Transition, WriteTx,
    WriterConn,
};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};

/// One write of the dispatcher. Applied in order within a group.
// Transitions, the largest variant, are nearly every op: boxing them would
// allocate once more per action for the sake of the rare small ones.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum DispatchOp {
    /// [`Store::claim_due_actions`].
    Claim { now: DateTime<Utc>, limit: u32 },
    /// [`Store::transition_action_with`]; when it applies, `follow_up` (the
    /// Wi-Fi profile removal of a sent disconnect) is recorded with it.
    Transition {
        id: i64,
        t: Transition,
        follow_up: Option<NewAction>,
    },
    /// [`Store::begin_sending`].
    BeginSending {
        row: Box<StoredAction>,
        hourly_cap: Option<u32>,
        audit_send: bool,
    },
    /// [`Store::note_not_sent`].
    NoteNotSent { id: i64, note: String },
    /// [`Store::release_claim`].
    ReleaseClaim { id: i64, note: String },
    /// [`Store::reschedule_action`].
    Reschedule {
        id: i64,
        at: DateTime<Utc>,
        note: String,
    },
}

/// What a [`DispatchOp`] did, once its group is committed.
// As for `DispatchOp`: the moved row is nearly every answer.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum DispatchDone {
    Claimed(Vec<StoredAction>),
    /// The row as it is now, or why the transition did not apply
    /// ([`StoreError::ActionStateChanged`], [`StoreError::NotFound`]); it
    /// changed nothing then, and the rest of the group is unaffected.
    Moved(Result<StoredAction, StoreError>),
    Gate(SendGate),
    Noted,
    Released,
    Rescheduled(bool),
}

impl WriteTx<'_> {
    /// Applies `ops` in order in this transaction, all at one `now`; one
    /// answer per op, in order. An `Err` is a failure of the store (the
    /// caller rolls the group back); an op's own refusal is its answer.
    pub async fn apply_dispatch(
        &mut self,
        ops: &[DispatchOp],
    ) -> Result<Vec<DispatchDone>, StoreError> {
        let now = Utc::now();
        let mut done = Vec::with_capacity(ops.len());
        // A run of transitions of distinct rows, applied together.
        let mut run: Vec<&DispatchOp> = Vec::new();
        let mut in_run: HashSet<i64> = HashSet::new();
        for op in ops {
            if let DispatchOp::Transition { id, .. } = op {
                if in_run.insert(*id) {
                    run.push(op);
                    continue;
                }
            }
            // Anything else, or a second transition of the same row, ends the run.
            if !run.is_empty() {
                done.extend(self.transition_run(&run, now).await?);
                run.clear();
                in_run.clear();
            }
            done.push(match op {
                DispatchOp::Transition { id, .. } => {
                    in_run.insert(*id);
                    run.push(op);
                    continue;
                }
                DispatchOp::Claim { now: at, limit } => {
                    DispatchDone::Claimed(self.claim_due_actions(*at, *limit).await?)
                }
                DispatchOp::BeginSending {
                    row,
                    hourly_cap,
                    audit_send,
                } => DispatchDone::Gate(
                    self.begin_sending(row, *hourly_cap, *audit_send, now)
                        .await?,
                ),
                DispatchOp::NoteNotSent { id, note } => {
                    self.note_not_sent(*id, note, now).await?;
                    DispatchDone::Noted
                }
                DispatchOp::ReleaseClaim { id, note } => {
                    self.release_claim(*id, note, now).await?;
                    DispatchDone::Released
                }
                DispatchOp::Reschedule { id, at, note } => {
                    DispatchDone::Rescheduled(self.reschedule_action(*id, *at, note, now).await?)
                }
            });
        }
        if !run.is_empty() {
            done.extend(self.transition_run(&run, now).await?);
        }
        Ok(done)
    }

    /// Transitions of distinct rows (each op a [`DispatchOp::Transition`]):
    /// one `UPDATE`, one audit `INSERT`, the follow-ups, and one read of the
    /// rows that had moved on, when any had.
    async fn transition_run(
        &mut self,
        run: &[&DispatchOp],
        now: DateTime<Utc>,
    ) -> Result<Vec<DispatchDone>, StoreError> {
        let moves: Vec<(i64, &Transition, Option<&NewAction>)> = run
            .iter()
            .filter_map(|op| match op {
                DispatchOp::Transition { id, t, follow_up } => Some((*id, t, follow_up.as_ref())),
                _ => None,
            })
            .collect();
        let rows: Vec<Value> = moves
            .iter()
            .map(|(id, t, _)| {
                json!([
                    id,
                    t.from.as_str(),
                    t.to.as_str(),
                    t.reason,
                    t.last_error,
                    t.next_attempt_at.as_ref().map(timestamp),
                    super::events::json_text(t.receipt.as_ref()),
                ])
            })
            .collect();
        // The one-row transition's statement with its parameters per row:
        // applies only from the state the caller saw, releases the claim.
        let updated: Vec<StoredAction> = sqlx::query_as(&format!(
            "UPDATE actions SET
                 state = j.value ->> 2,
                 reason = COALESCE(j.value ->> 3, reason),
                 last_error = COALESCE(j.value ->> 4, last_error),
                 next_attempt_at = CASE WHEN j.value ->> 2 IN ('pending', 'failed')
                                        THEN COALESCE(j.value ->> 5, next_attempt_at, ?2) ELSE NULL END,
                 receipt = COALESCE(j.value ->> 6, receipt),
                 sent_at = CASE WHEN j.value ->> 2 = 'sent' THEN ?2 ELSE sent_at END,
                 claimed_at = NULL,
                 sending_at = NULL,
                 updated_at = ?2
             FROM json_each(?1) AS j
             WHERE actions.id = j.value ->> 0 AND actions.state = j.value ->> 1
             RETURNING {ACTION_COLUMNS}"
        ))
        .bind(Value::Array(rows).to_string())
        .bind(now)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut updated: HashMap<i64, StoredAction> =
            updated.into_iter().map(|a| (a.id, a)).collect();
        let audits: Vec<Value> = moves
            .iter()
            .filter(|(id, ..)| updated.contains_key(id))
            .map(|(id, t, _)| json!([id, t.from.as_str(), t.to.as_str(), t.note]))
            .collect();
        audit_rows(&mut self.tx, audits, now).await?;
        for (id, _, follow_up) in &moves {
            if let (true, Some(action)) = (updated.contains_key(id), follow_up) {
                insert_action(&mut self.tx, action).await?;
            }
        }
        // Rows that had moved on (a cancel that won), or do not exist.
        let refused: Vec<i64> = moves
            .iter()
            .map(|m| m.0)
            .filter(|id| !updated.contains_key(id))
            .collect();
        let mut actual: HashMap<i64, ActionState> = HashMap::new();
        if !refused.is_empty() {
            let found: Vec<(i64, ActionState)> = sqlx::query_as(
                "SELECT id, state FROM actions WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .bind(json!(refused).to_string())
            .fetch_all(&mut *self.tx)
            .await?;
            actual.extend(found);
        }
        Ok(moves
            .iter()
            .map(|(id, t, _)| {
                DispatchDone::Moved(match (updated.remove(id), actual.get(id)) {
                    (Some(row), _) => Ok(row),
                    (None, Some(&actual)) => Err(StoreError::ActionStateChanged {
                        action_id: *id,
                        expected: t.from,
                        actual,
                    }),
                    (None, None) => Err(StoreError::NotFound {
                        what: "action",
                        id: id.to_string(),
                    }),
                })
            })
            .collect())
    }

    /// [`Store::transition_action_with`] inside this transaction.
    pub async fn transition_action_with(
        &mut self,
        id: i64,
        t: &Transition,
    ) -> Result<StoredAction, StoreError> {
        let op = DispatchOp::Transition {
            id,
            t: t.clone(),
            follow_up: None,
        };
        match self.transition_run(&[&op], Utc::now()).await?.pop() {
            Some(DispatchDone::Moved(moved)) => moved,
            other => Err(StoreError::Corrupt(format!(
                "a transition answered {other:?}"
            ))),
        }
    }

    /// [`Store::claim_due_actions`] inside this transaction: one `UPDATE …
    /// RETURNING` and one audit `INSERT` for all the rows it claims.
    pub async fn claim_due_actions(
        &mut self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StoredAction>, StoreError> {
        let mut claimed: Vec<StoredAction> = sqlx::query_as(&format!(
            "UPDATE actions SET claimed_at = ?1, attempts = attempts + 1, updated_at = ?1
             WHERE id IN (
                 SELECT id FROM actions
                 WHERE state IN ('pending', 'failed') AND next_attempt_at <= ?1
                   AND claimed_at IS NULL
                 ORDER BY next_attempt_at, id LIMIT ?2)
             RETURNING {ACTION_COLUMNS}"
        ))
        .bind(now)
        .bind(limit)
        .fetch_all(&mut *self.tx)
        .await?;
        // RETURNING does not keep the subquery's order.
        claimed.sort_by_key(|a| (a.next_attempt_at, a.id));
        let audits = claimed
            .iter()
            .map(|a| {
                let state = a.state.as_str();
                let note = format!("claimed for attempt {}", a.attempts);
                json!([a.id, state, state, note])
            })
            .collect();
        audit_rows(&mut self.tx, audits, now).await?;
        Ok(claimed)
    }
}

impl Store {
    /// Applies one op in a transaction of its own on this store's pool: the
    /// dispatcher's writes when its writer is not running (before start,
    /// after stop), and the writer's way to retry a failed group op by op.
    pub async fn apply_dispatch_alone(&self, op: &DispatchOp) -> Result<DispatchDone, StoreError> {
        apply_alone(self.begin().await?, op).await
    }
}

impl WriterConn {
    /// [`Store::apply_dispatch_alone`] on this connection.
    pub async fn apply_dispatch_alone(
        &mut self,
        op: &DispatchOp,
    ) -> Result<DispatchDone, StoreError> {
        apply_alone(self.begin().await?, op).await
    }
}

async fn apply_alone(mut tx: WriteTx<'_>, op: &DispatchOp) -> Result<DispatchDone, StoreError> {
    let done = tx.apply_dispatch(std::slice::from_ref(op)).await?;
    tx.commit().await?;
    done.into_iter()
        .next()
        .ok_or_else(|| StoreError::Corrupt("an op without an answer".into()))
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::*;
    use crate::store::ActionRecordKind;
    use chrono::Duration;

    fn lock(state: ActionState, mdm: i64) -> NewAction {
        NewAction {
            signal_level: None,
            tenant_id: "acme".into(),
            event_id: None,
            device_id: None,
            mdm_id: Some(mdm),
            kind: ActionRecordKind::Lock,
            parent_action_id: None,
            state,
            reason: None,
            next_attempt_at: None,
        }
    }

    /// Three pending rows and a held one; ids in insertion order.
    async fn rows(store: &Store, mdm: i64) -> Vec<i64> {
        let mut ids = Vec::new();
        for state in [
            ActionState::Pending,
            ActionState::Pending,
            ActionState::Pending,
            ActionState::Held,
        ] {
            ids.push(store.insert_action(&lock(state, mdm)).await.unwrap());
        }
        ids
    }

    /// What a group of ops does to three claimed rows and a held one: sent
    /// with a follow-up, failed with a due time, a refused move of the held
    /// row, a missing row, and a second move of the first row.
    fn ops(ids: &[i64], mdm: i64, retry_at: DateTime<Utc>) -> Vec<DispatchOp> {
        let removal = NewAction {
            kind: ActionRecordKind::RemoveWifiProfile,
            parent_action_id: Some(ids[0]),
            reason: Some("removes the profile".into()),
            ..lock(ActionState::Pending, mdm)
        };
        vec![
            DispatchOp::Transition {
                id: ids[0],
                t: Transition::new(ActionState::Pending, ActionState::Sent, "sent")
                    .receipt(serde_json::json!({"status": 200})),
                follow_up: Some(removal),
            },
            DispatchOp::Transition {
                id: ids[1],
                t: Transition::new(ActionState::Pending, ActionState::Failed, "503")
                    .last_error("unavailable")
                    .next_attempt_at(retry_at),
                follow_up: None,
            },
            DispatchOp::Transition {
                id: ids[3],
                t: Transition::new(ActionState::Pending, ActionState::Sent, "not from held"),
                follow_up: None,
            },
            DispatchOp::Transition {
                id: 999,
                t: Transition::new(ActionState::Pending, ActionState::Sent, "missing"),
                follow_up: None,
            },
            DispatchOp::Transition {
                id: ids[0],
                t: Transition::new(ActionState::Sent, ActionState::Dead, "again"),
                follow_up: None,
            },
            DispatchOp::NoteNotSent {
                id: ids[2],
                note: "a note".into(),
            },
        ]
    }

    /// id, state, reason, last_error, receipt, attempts, claimed, sent, parent.
    type ActionDump = (
        i64,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        i64,
        bool,
        bool,
        Option<i64>,
    );

    /// Every action and audit row, without their times.
    async fn dump(store: &Store) -> Vec<String> {
        let actions: Vec<ActionDump> = sqlx::query_as(
            "SELECT id, state, reason, last_error, receipt, attempts, claimed_at IS NOT NULL,
                        sent_at IS NOT NULL, parent_action_id FROM actions ORDER BY id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        let audit: Vec<(i64, Option<String>, String, Option<String>)> = sqlx::query_as(
            // Per action: a group writes each action's trail in order, but
            // interleaves the trails of a run of actions differently.
            "SELECT action_id, from_state, to_state, note FROM action_audit ORDER BY action_id, id",
        )
        .fetch_all(store.pool())
        .await
        .unwrap();
        actions
            .iter()
            .map(|a| format!("{a:?}"))
            .chain(audit.iter().map(|a| format!("{a:?}")))
            .collect()
    }

    #[tokio::test]
    async fn a_group_writes_exactly_the_rows_and_audit_rows_of_its_ops_applied_one_by_one() {
        let retry_at = Utc::now() + Duration::minutes(5);
        let (_g, grouped, mdm) = store_with_mdm().await;
        let (_a, alone, mdm_alone) = store_with_mdm().await;
        assert_eq!(mdm, mdm_alone);
        let ids = rows(&grouped, mdm).await;
        assert_eq!(rows(&alone, mdm).await, ids);

        // The claim and the moves, in one transaction …
        let mut all = vec![DispatchOp::Claim {
            now: Utc::now(),
            limit: 10,
        }];
        all.extend(ops(&ids, mdm, retry_at));
        let mut tx = grouped.begin().await.unwrap();
        let done = tx.apply_dispatch(&all).await.unwrap();
        tx.commit().await.unwrap();
        // … and one per transaction.
        let mut one_by_one = Vec::new();
        for op in &all {
            one_by_one.push(alone.apply_dispatch_alone(op).await.unwrap());
        }

        assert_eq!(dump(&grouped).await, dump(&alone).await);
        assert_eq!(done.len(), one_by_one.len());
        let DispatchDone::Claimed(claimed) = &done[0] else {
            panic!("{done:?}")
        };
        assert_eq!(claimed.iter().map(|a| a.id).collect::<Vec<_>>(), ids[..3]);
        let moved: Vec<String> = done[1..6]
            .iter()
            .map(|d| match d {
                DispatchDone::Moved(Ok(a)) => format!("{}", a.state),
                DispatchDone::Moved(Err(e)) => format!("{e}"),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            moved,
            [
                "sent".to_string(),
                "failed".into(),
                format!("action {} is held, not pending", ids[3]),
                "action 999 not found".into(),
                "dead".into(),
            ]
        );

        // The audit trail of each row, exactly.
        let notes = |id: i64| {
            let store = grouped.clone();
            async move {
                store
                    .action_audit(id)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|a| {
                        format!(
                            "{}→{} {}",
                            a.from_state.map_or("-", |s| s.as_str()),
                            a.to_state,
                            a.note.unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(
            notes(ids[0]).await,
            [
                "-→pending ",
                "pending→pending claimed for attempt 1",
                "pending→sent sent",
                "sent→dead again"
            ]
        );
        assert_eq!(
            notes(ids[1]).await,
            [
                "-→pending ",
                "pending→pending claimed for attempt 1",
                "pending→failed 503"
            ]
        );
        assert_eq!(
            notes(ids[2]).await,
            [
                "-→pending ",
                "pending→pending claimed for attempt 1",
                "pending→pending a note"
            ]
        );
        assert_eq!(
            notes(ids[3]).await,
            ["-→held "],
            "a refused move writes nothing"
        );
        let failed = grouped.get_action(ids[1]).await.unwrap().unwrap();
        assert_eq!(failed.next_attempt_at, Some(retry_at));
        assert_eq!(failed.claimed_at, None, "the outcome ends the claim");
        let still = grouped.get_action(ids[2]).await.unwrap().unwrap();
        assert!(still.claimed_at.is_some(), "a note leaves the claim");
        let removal = grouped.get_action(ids[3] + 1).await.unwrap().unwrap();
        assert_eq!(
            (removal.kind, removal.parent_action_id, removal.state),
            (
                ActionRecordKind::RemoveWifiProfile,
                Some(ids[0]),
                ActionState::Pending
            )
        );
    }

    #[tokio::test]
    async fn a_group_that_fails_midway_leaves_nothing_of_any_of_its_ops() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let ids = rows(&store, mdm).await;
        let claimed = store.claim_due_actions(Utc::now(), 10).await.unwrap();
        assert_eq!(claimed.len(), 3);
        let before = dump(&store).await;
        // The second op's follow-up names a device that does not exist.
        let bad = NewAction {
            device_id: Some(12345),
            ..lock(ActionState::Pending, mdm)
        };
        let group = [
            DispatchOp::Transition {
                id: ids[0],
                t: Transition::new(ActionState::Pending, ActionState::Sent, "sent"),
                follow_up: None,
            },
            DispatchOp::Transition {
                id: ids[1],
                t: Transition::new(ActionState::Pending, ActionState::Sent, "sent"),
                follow_up: Some(bad),
            },
        ];
        let mut tx = store.begin().await.unwrap();
        let err = tx.apply_dispatch(&group).await.unwrap_err();
        assert!(err.is_constraint_violation(), "{err:?}");
        drop(tx);
        assert_eq!(
            dump(&store).await,
            before,
            "rolled back whole: rows stay claimed"
        );
        assert_eq!(store.unfinished_claims().await.unwrap().len(), 3);
    }
}
