//! The dispatcher's one writer: a task that owns one SQLite connection and
//! commits the claims and state changes of many actions per transaction.
//!
//! Why: with a write transaction per action, at 1,000 actions/s every
//! action's transition took `BEGIN IMMEDIATE` on a pooled connection of its
//! own and slept in SQLite's busy handler while the ingest writer and the
//! other actions held the lock (BENCHMARKS.md, "Event → action"). Here the
//! dispatcher's writes ([`DispatchOp`]) queue in a channel instead, and the
//! writer takes everything waiting (up to [`MAX_GROUP_OPS`]) into one
//! transaction on its own connection (its statements stay prepared), as the
//! ingest writer does for events.
//!
//! What does not change: each caller waits for the `COMMIT` that holds its
//! op, so whatever it does next (the MDM call after a committed "sending"
//! audit row, ending the claim) happens exactly when it did with its own
//! transaction; ops apply in queue order, and each action's row and audit
//! trail are what the same ops would write one after another. When a group fails: if the store cannot take
//! writes, every op of the group gets that error and nothing of the group
//! is stored (the dispatcher retries, see `stored`); any other failure rolls
//! the group back and applies its ops one per transaction, so one bad op
//! cannot fail the others. Before the writer starts and after it stops,
//! ops apply one per transaction on the store's pool, as they always did.

use crate::shutdown::{CancellationToken, Tasks};
use crate::store::{
    DispatchDone, DispatchOp, NewAction, SendGate, Store, StoreError, StoredAction, Transition,
    WriterConn,
};
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The most ops one transaction takes: bounds the time the write lock is
/// held (a claim is one op of up to `batch` rows).
pub const MAX_GROUP_OPS: usize = 512;

/// Ops that may wait for the writer. The dispatcher bounds its rows in
/// flight (each with at most one op waiting), so this is never the limit in
/// practice; a full queue makes the caller wait.
const QUEUE_CAPACITY: usize = 1024;

/// An op and where its answer goes.
#[derive(Debug)]
struct Job {
    op: DispatchOp,
    reply: oneshot::Sender<Result<DispatchDone, StoreError>>,
}

/// The way into the writer: cheap to clone, one per dispatcher.
#[derive(Debug, Clone)]
pub struct DispatchWriter {
    /// The daemon's store: the writer's connection comes from it, and ops
    /// apply on its pool while no writer runs.
    store: Store,
    /// The running writer's queue; `None` before [`start`] and after stop.
    sender: Arc<Mutex<Option<mpsc::Sender<Job>>>>,
}

impl DispatchWriter {
    /// A writer for `store`; ops apply one per transaction until `start`.
    pub fn new(store: Store) -> Self {
        DispatchWriter {
            store,
            sender: Arc::default(),
        }
    }

    fn queue(&self) -> Option<mpsc::Sender<Job>> {
        // Poisoning needs a panic while the lock is held; nothing here panics.
        self.sender
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Applies `op` and waits for the commit that holds it.
    pub async fn apply(&self, op: DispatchOp) -> Result<DispatchDone, StoreError> {
        let op = match self.queue() {
            Some(queue) => {
                let (reply, answer) = oneshot::channel();
                match queue.send(Job { op, reply }).await {
                    // The writer answers every job it takes; a dropped reply
                    // means it died (a panic, fatal to the daemon): unavailable.
                    Ok(()) => {
                        return answer
                            .await
                            .unwrap_or(Err(sqlx::Error::WorkerCrashed.into()))
                    }
                    // Stopped meanwhile: the op was not taken.
                    Err(mpsc::error::SendError(job)) => job.op,
                }
            }
            None => op,
        };
        self.store.apply_dispatch_alone(&op).await
    }

    /// [`Store::claim_due_actions`] through the writer.
    pub async fn claim(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<StoredAction>, StoreError> {
        match self.apply(DispatchOp::Claim { now, limit }).await? {
            DispatchDone::Claimed(rows) => Ok(rows),
            other => Err(unexpected(other)),
        }
    }

    /// [`Store::transition_action_with`] through the writer, with the row
    /// `follow_up` recorded in the same transaction when it applies.
    pub async fn transition(
        &self,
        id: i64,
        t: Transition,
        follow_up: Option<NewAction>,
    ) -> Result<StoredAction, StoreError> {
        match self
            .apply(DispatchOp::Transition { id, t, follow_up })
            .await?
        {
            DispatchDone::Moved(moved) => moved,
            other => Err(unexpected(other)),
        }
    }

    /// [`Store::begin_sending`] through the writer.
    pub async fn begin_sending(
        &self,
        row: &StoredAction,
        hourly_cap: Option<u32>,
        audit_send: bool,
    ) -> Result<SendGate, StoreError> {
        let op = DispatchOp::BeginSending {
            row: Box::new(row.clone()),
            hourly_cap,
            audit_send,
        };
        match self.apply(op).await? {
            DispatchDone::Gate(gate) => Ok(gate),
            other => Err(unexpected(other)),
        }
    }

    /// [`Store::note_not_sent`] through the writer.
    pub async fn note_not_sent(&self, id: i64, note: &str) -> Result<(), StoreError> {
        let note = note.to_string();
        self.apply(DispatchOp::NoteNotSent { id, note })
            .await
            .map(drop)
    }

    /// [`Store::release_claim`] through the writer.
    pub async fn release_claim(&self, id: i64, note: &str) -> Result<(), StoreError> {
        let note = note.to_string();
        self.apply(DispatchOp::ReleaseClaim { id, note })
            .await
            .map(drop)
    }

    /// [`Store::reschedule_action`] through the writer.
    pub async fn reschedule(
        &self,
        id: i64,
        at: DateTime<Utc>,
        note: &str,
    ) -> Result<bool, StoreError> {
        let note = note.to_string();
        match self.apply(DispatchOp::Reschedule { id, at, note }).await? {
            DispatchDone::Rescheduled(done) => Ok(done),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(done: DispatchDone) -> StoreError {
    StoreError::Corrupt(format!("the dispatch writer answered {done:?}"))
}

/// Starts the writer on `tasks`. Once `stop` is cancelled it takes no new
/// ops (they apply on the pool), writes what is queued, and exits: cancel it
/// only after the daemon's shutdown token (the task is critical).
pub fn start(writer: &DispatchWriter, stop: CancellationToken, tasks: &Tasks) {
    let (sender, receiver) = mpsc::channel(QUEUE_CAPACITY);
    let replaced = writer
        .sender
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(sender);
    if replaced.is_some() {
        tracing::error!("The dispatch writer was started twice; the first one stops");
    }
    tasks.spawn_critical("the dispatch writer", run(receiver, writer.clone(), stop));
}

async fn run(mut receiver: mpsc::Receiver<Job>, writer: DispatchWriter, stop: CancellationToken) {
    let mut conn: Option<WriterConn> = None;
    let mut stopping = false;
    loop {
        let first = if stopping {
            match receiver.recv().await {
                Some(job) => job,
                None => break,
            }
        } else {
            tokio::select! {
                job = receiver.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                () = stop.cancelled() => {
                    // No new ops; the ones already queued are still written.
                    writer.sender.lock().unwrap_or_else(|e| e.into_inner()).take();
                    receiver.close();
                    stopping = true;
                    continue;
                }
            }
        };
        let mut group = vec![first];
        while group.len() < MAX_GROUP_OPS {
            match receiver.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        write(&writer.store, &mut conn, group).await;
    }
    if let Some(conn) = conn.take() {
        conn.close().await;
    }
}

/// Writes a group and answers each of its ops.
async fn write(store: &Store, conn: &mut Option<WriterConn>, group: Vec<Job>) {
    let (ops, replies): (Vec<DispatchOp>, Vec<_>) =
        group.into_iter().map(|j| (j.op, j.reply)).unzip();
    let writer = match opened(store, conn).await {
        Ok(writer) => writer,
        Err(e) => return answer_all_failed(replies, e),
    };
    match write_group(writer, &ops).await {
        Ok(done) => {
            for (reply, done) in replies.into_iter().zip(done) {
                let _ = reply.send(Ok(done));
            }
        }
        Err(e) if e.is_unavailable() || ops.len() == 1 => {
            WriterConn::forget_if_broken(conn, &e).await;
            answer_all_failed(replies, e);
        }
        Err(e) => {
            tracing::warn!(ops = ops.len(), error = %e, "A group of dispatcher writes failed; writing its ops one by one");
            for (op, reply) in ops.iter().zip(replies) {
                let done = match opened(store, conn).await {
                    Ok(writer) => writer.apply_dispatch_alone(op).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = &done {
                    WriterConn::forget_if_broken(conn, e).await;
                }
                let _ = reply.send(done);
            }
        }
    }
}

/// The writer's connection, opened if it has none.
async fn opened<'c>(
    store: &Store,
    conn: &'c mut Option<WriterConn>,
) -> Result<&'c mut WriterConn, StoreError> {
    WriterConn::in_slot(conn, store).await.inspect_err(|e| {
        tracing::warn!(error = %e, "The dispatch writer cannot open its connection");
    })
}

/// One transaction for the ops, in order; nothing of it stays if any step
/// fails (the transaction rolls back when dropped).
async fn write_group(
    conn: &mut WriterConn,
    ops: &[DispatchOp],
) -> Result<Vec<DispatchDone>, StoreError> {
    let mut tx = conn.begin().await?;
    let done = tx.apply_dispatch(ops).await?;
    tx.commit().await?;
    Ok(done)
}

/// The store could not take the group: each op gets the error (the first
/// the original, the others a copy that is just as unavailable), and its
/// caller retries it.
fn answer_all_failed(
    replies: Vec<oneshot::Sender<Result<DispatchDone, StoreError>>>,
    e: StoreError,
) {
    let copy = |e: &StoreError| -> StoreError {
        let text = format!("the group of dispatcher writes failed: {e}");
        if e.is_unavailable() {
            sqlx::Error::Io(std::io::Error::other(text)).into()
        } else {
            StoreError::Corrupt(text)
        }
    };
    let mut replies = replies.into_iter();
    let first = replies.next();
    for reply in replies {
        let _ = reply.send(Err(copy(&e)));
    }
    if let Some(reply) = first {
        let _ = reply.send(Err(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testutil::store_with_mdm;
    use crate::store::{ActionRecordKind, ActionState};
    use sqlx::Connection;

    fn pending_lock(mdm: i64, device_id: Option<i64>) -> NewAction {
        NewAction {
            signal_level: None,
            tenant_id: "acme".into(),
            event_id: None,
            device_id,
            mdm_id: Some(mdm),
            kind: ActionRecordKind::Lock,
            parent_action_id: None,
            state: ActionState::Pending,
            reason: None,
            next_attempt_at: None,
        }
    }

    fn sent(id: i64, follow_up: Option<NewAction>) -> DispatchOp {
        DispatchOp::Transition {
            id,
            t: Transition::new(ActionState::Pending, ActionState::Sent, "sent"),
            follow_up,
        }
    }

    /// Jobs for `ops` and the receivers of their answers.
    #[allow(clippy::type_complexity)]
    fn jobs(
        ops: Vec<DispatchOp>,
    ) -> (
        Vec<Job>,
        Vec<oneshot::Receiver<Result<DispatchDone, StoreError>>>,
    ) {
        ops.into_iter()
            .map(|op| {
                let (reply, answer) = oneshot::channel();
                (Job { op, reply }, answer)
            })
            .unzip()
    }

    #[tokio::test]
    async fn a_group_with_one_bad_op_is_written_op_by_op_and_only_the_bad_one_fails() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(store.insert_action(&pending_lock(mdm, None)).await.unwrap());
        }
        store.claim_due_actions(Utc::now(), 10).await.unwrap();
        // The middle op's follow-up names a device that does not exist.
        let (group, answers) = jobs(vec![
            sent(ids[0], None),
            sent(ids[1], Some(pending_lock(mdm, Some(999)))),
            sent(ids[2], None),
        ]);
        let mut conn = None;
        write(&store, &mut conn, group).await;
        let mut outcomes = Vec::new();
        for answer in answers {
            outcomes.push(match answer.await.unwrap() {
                Ok(DispatchDone::Moved(Ok(row))) => row.state.to_string(),
                Ok(other) => format!("{other:?}"),
                Err(e) => format!("error: constraint {}", e.is_constraint_violation()),
            });
        }
        assert_eq!(outcomes, ["sent", "error: constraint true", "sent"]);
        // The failed op's row is still claimed: the next start recovers it.
        let left = store.unfinished_claims().await.unwrap();
        assert_eq!(left.iter().map(|a| a.id).collect::<Vec<_>>(), [ids[1]]);
        if let Some(conn) = conn {
            conn.close().await;
        }
    }

    #[tokio::test]
    async fn a_group_the_store_cannot_take_stores_nothing_answers_unavailable_and_goes_through_later(
    ) {
        let (dir, store, mdm) = store_with_mdm().await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            ids.push(store.insert_action(&pending_lock(mdm, None)).await.unwrap());
        }
        store.claim_due_actions(Utc::now(), 10).await.unwrap();
        // Another connection holds the write lock past the busy timeout.
        let url = format!("sqlite://{}", dir.path().join("data/test.db").display());
        let mut other = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let mut blocker = other.begin_with("BEGIN IMMEDIATE").await.unwrap();
        sqlx::query("UPDATE store_heartbeat SET at = 'held' WHERE id = 1")
            .execute(&mut *blocker)
            .await
            .unwrap();
        let ops = || vec![sent(ids[0], None), sent(ids[1], None)];
        let (group, answers) = jobs(ops());
        let mut conn = None;
        write(&store, &mut conn, group).await;
        for answer in answers {
            let e = answer.await.unwrap().unwrap_err();
            assert!(e.is_unavailable(), "{e:?}");
        }
        blocker.rollback().await.unwrap();
        other.close().await.unwrap();
        assert_eq!(
            store.unfinished_claims().await.unwrap().len(),
            2,
            "nothing of the group was stored: both rows stay claimed"
        );

        // The callers try again (`stored`): now the store takes the group.
        let (group, answers) = jobs(ops());
        write(&store, &mut conn, group).await;
        for answer in answers {
            assert!(matches!(
                answer.await.unwrap(),
                Ok(DispatchDone::Moved(Ok(_)))
            ));
        }
        assert!(store.unfinished_claims().await.unwrap().is_empty());
        for id in ids {
            let audit = store.action_audit(id).await.unwrap();
            assert_eq!(
                audit.len(),
                3,
                "created, claimed, sent: no trace of the failed group"
            );
        }
        if let Some(conn) = conn {
            conn.close().await;
        }
    }

    #[tokio::test]
    async fn without_a_running_writer_ops_apply_on_the_pool_and_a_stopped_writer_hands_back() {
        let (_dir, store, mdm) = store_with_mdm().await;
        let id = store.insert_action(&pending_lock(mdm, None)).await.unwrap();
        let writer = DispatchWriter::new(store.clone());
        // Not started: applied at once.
        let claimed = writer.claim(Utc::now(), 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        // Started, then stopped: the stopped writer's queue is gone.
        let tasks = Tasks::new();
        let stop = CancellationToken::new();
        start(&writer, stop.clone(), &tasks);
        writer
            .note_not_sent(id, "through the writer")
            .await
            .unwrap();
        tasks.cancel_token().cancel();
        stop.cancel();
        tasks.close();
        tasks.wait().await;
        let moved = writer
            .transition(
                id,
                Transition::new(ActionState::Pending, ActionState::Sent, "after stop"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(moved.state, ActionState::Sent);
        let notes: Vec<_> = store
            .action_audit(id)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|a| a.note)
            .collect();
        assert_eq!(
            notes,
            ["claimed for attempt 1", "through the writer", "after stop"]
        );
    }
}
