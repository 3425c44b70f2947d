//! `spawn_app`: simulators on port 0, a config written to a temp dir that
//! points at them, the daemon built on port 0 and served until dropped.

use mtd_connector::app::App;
use mtd_connector::store::{NewEvent, Store, SyncRun};
use mtd_connector::sync::SyncEngine;
use mtd_sim::{SimKind, SimOptions, Simulator};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

pub const AGENT_SECRET: &str = "test-agent-secret-0123456789";
pub const ADMIN_TOKEN: &str = "test-admin-token-abcdef";

/// How one tenant's MDM is written into its tenant file.
#[derive(Clone, Debug)]
pub struct MdmSpec {
    pub kind: SimKind,
    pub name: String,
    pub background_sync: bool,
    pub mask_pii: bool,
    /// Extra TOML lines inside the `[[mdm]]` table.
    pub extra: String,
}

impl MdmSpec {
    pub fn new(kind: SimKind) -> Self {
        MdmSpec {
            kind,
            name: format!("Test {}", kind.as_str().to_uppercase()),
            background_sync: true,
            mask_pii: false,
            extra: String::new(),
        }
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub sim: Simulator,
    /// `[sync] initial_sync`; `None`: false when an MDM has
    /// `background_sync = false` (the harness's "no automatic sync at all",
    /// so that the store fills through lookups), else the default.
    pub initial_sync: Option<bool>,
}

impl Env {
    pub async fn new(kinds: &[SimKind], devices: usize) -> Env {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = Simulator::start(
            listener,
            SimOptions {
                kinds: kinds.to_vec(),
                devices,
                seed: 7,
                ..Default::default()
            },
        )
        .expect("the simulators start");
        Env {
            dir: tempfile::tempdir().unwrap(),
            sim,
            initial_sync: None,
        }
    }

    /// Writes `connector.toml` and one tenant file; returns the main file's path.
    pub fn write_config(
        &self,
        tenant: &str,
        mdms: &[MdmSpec],
        sync_every: &str,
        policy: &str,
    ) -> PathBuf {
        let root = self.dir.path();
        std::fs::create_dir_all(root.join("tenants.d")).unwrap();
        let main = root.join("connector.toml");
        std::fs::write(
            &main,
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\n[store]\npath = \"data/connector.db\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n[tenants]\ndir = \"tenants.d\"\n[sync]\nfull_sync_every = \"{sync_every}\"\ninitial_sync = {}\n",
                self.initial_sync
                    .unwrap_or(mdms.iter().all(|m| m.background_sync))
            ),
        )
        .unwrap();
        let mut t = format!("id = \"{tenant}\"\ndisplay_name = \"Tenant {tenant}\"\nagent_secret = \"{AGENT_SECRET}\"\n");
        for m in mdms {
            t.push_str(&format!(
                "\n[[mdm]]\nname = \"{}\"\nkind = \"{}\"\nurl = \"{}\"\nbackground_sync = {}\nmask_pii = {}\n{}\n",
                m.name,
                m.kind.as_str(),
                self.sim.base_url(m.kind),
                m.background_sync,
                m.mask_pii,
                m.extra
            ));
            t.push_str(&credentials(m.kind));
        }
        t.push('\n');
        t.push_str(policy);
        std::fs::write(root.join(format!("tenants.d/{tenant}.toml")), t).unwrap();
        main
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/connector.db")
    }
}

/// The simulator's default credentials for a kind, as a `[mdm.credentials]` table.
pub fn credentials(kind: SimKind) -> String {
    kind.credentials_toml()
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// What the handlers share (reload takes it).
    pub state: mtd_connector::context::Services,
    pub store: Store,
    pub sync: SyncEngine,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The dispatcher's delays shortened so retry tests take seconds, not minutes.
pub fn fast_dispatch() -> mtd_connector::dispatch::DispatchSettings {
    mtd_connector::dispatch::DispatchSettings {
        retry_base: Duration::from_millis(50),
        retry_cap: Duration::from_secs(2),
        poll: Duration::from_millis(50),
        deferred_every: Duration::from_millis(200),
        ..Default::default()
    }
}

pub async fn spawn_app(config: &Path) -> TestApp {
    crate::logs::capture();
    let config =
        mtd_connector::config::load(config).unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = App::build_with_listener(config, Some(listener))
        .await
        .expect("the app builds")
        .with_dispatch_settings(fast_dispatch());
    let (addr, store, sync) = (app.local_addr(), app.store().clone(), app.sync().clone());
    let state = app.state().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let served = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        state,
        store,
        sync,
        stop: Some(stop),
        served: Some(served),
    }
}

impl TestApp {
    /// Stops the app the way SIGTERM does and waits for it to drain.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served
                .await
                .expect("the app task does not panic")
                .expect("the app stops cleanly");
        }
    }

    pub async fn mdm_id(&self, tenant: &str, name: &str) -> i64 {
        self.store
            .integrations(tenant)
            .await
            .unwrap()
            .into_iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no integration {name}"))
            .id
    }

    /// Waits until `n` runs of the MDM have finished (the condition, not a fixed sleep).
    pub async fn finished_runs(&self, mdm_id: i64, n: usize, limit: Duration) -> Vec<SyncRun> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let runs: Vec<SyncRun> = self
                .store
                .sync_runs(mdm_id, 100)
                .await
                .unwrap()
                .into_iter()
                .filter(|r| r.finished_at.is_some())
                .collect();
            if runs.len() >= n {
                return runs;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} runs finished in {limit:?}",
                runs.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Records one new event the way the ingest writer does (a group of one,
/// in one transaction); returns its id.
pub async fn record_event(store: &Store, event: &NewEvent) -> i64 {
    let mut tx = store.begin().await.unwrap();
    let id = tx.insert_events(&[event]).await.unwrap().rows[0].expect("a new event");
    tx.commit().await.unwrap();
    id
}

/// Counts rows in the test's store through a separate read-only connection
/// (what a test asserts must be committed, not merely visible to the app).
pub async fn count(env: &Env, sql: &str) -> i64 {
    let url = format!("sqlite://{}?mode=ro", env.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&pool).await.unwrap();
    pool.close().await;
    n
}

/// The answer to an agent API request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    /// The body as sent, to compare refusals byte for byte.
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }
}

/// The three signature headers for `body`, signed with the tests' agent secret now.
pub fn agent_headers(tenant: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    let now = chrono::Utc::now().timestamp();
    signed_headers(tenant, AGENT_SECRET.as_bytes(), now, body)
}

/// The three signature headers for `body`, with any key and timestamp.
pub fn signed_headers(
    tenant: &str,
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    vec![
        ("X-Mtd-Tenant", tenant.to_string()),
        ("X-Mtd-Timestamp", timestamp.to_string()),
        (
            "X-Mtd-Signature",
            mtd_connector::http::sign_agent_request(secret, timestamp, body),
        ),
    ]
}

/// POSTs `body` with exactly the given headers.
pub async fn post_agent(
    app: &TestApp,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> Reply {
    let mut request = reqwest::Client::new()
        .post(format!("http://{}{path}", app.addr))
        .header("Content-Type", "application/json")
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.expect("the app answers");
    Reply {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        text: response.text().await.unwrap(),
    }
}

/// POSTs `body` signed as an agent of `tenant` would.
pub async fn post_signed(app: &TestApp, path: &str, tenant: &str, body: &[u8]) -> Reply {
    post_agent(app, path, &agent_headers(tenant, body), body.to_vec()).await
}

/// One action row as a test reads it back.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: i64,
    pub kind: String,
    pub state: String,
    pub reason: Option<String>,
}

pub async fn actions(env: &Env) -> Vec<Row> {
    let url = format!("sqlite://{}?mode=ro", env.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let rows: Vec<(i64, String, String, Option<String>)> =
        sqlx::query_as("SELECT id, kind, state, reason FROM actions ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    pool.close().await;
    rows.into_iter()
        .map(|(id, kind, state, reason)| Row {
            id,
            kind,
            state,
            reason,
        })
        .collect()
}

/// "Nothing more happens": sends every action due now in this task (the
/// dispatcher's own step), then waits until the background dispatcher holds
/// no claimed row. Afterwards anything unsent waits for a later due time or
/// a new event, so a test checks the MDM's calls at once instead of sleeping.
pub async fn settle(app: &TestApp, env: &Env) {
    use mtd_connector::dispatch::Dispatched;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        while app
            .state
            .dispatch
            .try_dispatch_next(&fast_dispatch())
            .await
            .unwrap()
            == Dispatched::One
        {}
        let claimed = count(
            env,
            "SELECT COUNT(*) FROM actions WHERE claimed_at IS NOT NULL AND state IN ('pending', 'failed')",
        )
        .await;
        if claimed == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{claimed} actions still claimed after 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `pred` holds for the action rows (a condition, not a fixed sleep).
pub async fn wait_actions(env: &Env, limit: Duration, pred: impl Fn(&[Row]) -> bool) -> Vec<Row> {
    let deadline = Instant::now() + limit;
    loop {
        let rows = actions(env).await;
        if pred(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached in {limit:?}; actions: {rows:#?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
