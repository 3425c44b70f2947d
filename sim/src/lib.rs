//! The built-in MDM simulators: fake vendor servers that tests, the demo and
//! the benchmarks run against, written from `MDM-APIS.md` (and for SOTI from
//! SOTI's Swagger spec), never from the adapters' wire structs, so a field
//! name misread in an adapter cannot pass on both sides.
//!
//! One listener serves every started kind, each under its own base path
//! ([`SimKind::base_path`]), plus a control API of the simulator's own under
//! `/_sim/{kind}/…` (see [`self::core`] for the routes every kind shares and each
//! vendor module for its own). Everything the control API does is also
//! available in-process through [`Simulator::state`].
//!
//! Adding a vendor: a module beside [`soti`] that builds its state (owning a
//! [`SimCore`]) and its router, one arm in `build`, one variant in
//! [`SimState`]. Kinds without a module make [`Simulator::start`] fail with
//! [`SimError::NotImplemented`].
//!
//! Build binds, run serves: the caller binds the listener (tests bind port 0)
//! and hands it to [`Simulator::start`] or [`serve_until`].

pub mod airwatch;
pub mod bcdm;
mod conn;
pub mod core;
pub mod maas360;
mod seed;
pub mod soti;
mod util;

use std::{fmt, future::Future, net::SocketAddr, str::FromStr, sync::Arc, time::Duration};

use axum::{http::StatusCode, response::IntoResponse, Router};
use serde::{Deserialize, Serialize};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

pub use self::airwatch::{AirwatchOptions, AirwatchState};
pub use self::bcdm::{BcdmOptions, BcdmState};
pub use self::core::{ActiveFault, ControlError, Fault, RecordedAction, RecordedRequest, SimCore};
pub use self::maas360::{Maas360Options, Maas360State};
pub use self::soti::{SotiOptions, SotiState};

/// The vendors a simulator can play.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SimKind {
    /// SOTI MobiControl.
    Soti,
    /// VMware AirWatch / Workspace ONE UEM (the AirWatch REST API).
    Airwatch,
    /// SoftBank Business Concierge Device Management.
    Bcdm,
    /// IBM MaaS360 (Cisco MCMS), the MaaS360 Web Services API; `mcms` parses
    /// as this kind.
    Maas360,
}

impl SimKind {
    /// Every kind, in a stable order.
    pub const ALL: [SimKind; 4] = [
        SimKind::Soti,
        SimKind::Airwatch,
        SimKind::Bcdm,
        SimKind::Maas360,
    ];

    /// The credentials this kind's simulator accepts by default, as the
    /// `[mdm.credentials]` keys of a connector tenant file: (key, value,
    /// whether it grants access and belongs in a secret file). One table for
    /// the demo, the tests and the benchmarks.
    pub fn default_credentials(self) -> Vec<(&'static str, &'static str, bool)> {
        match self {
            SimKind::Soti => vec![
                ("client_id", soti::DEFAULT_CLIENT_ID, false),
                ("client_secret", soti::DEFAULT_CLIENT_SECRET, true),
                ("username", soti::DEFAULT_USERNAME, false),
                ("password", soti::DEFAULT_PASSWORD, true),
            ],
            SimKind::Airwatch => vec![
                ("username", airwatch::DEFAULT_USERNAME, false),
                ("password", airwatch::DEFAULT_PASSWORD, true),
                ("api_key", airwatch::DEFAULT_API_KEY, true),
            ],
            SimKind::Bcdm => vec![
                ("access_key", bcdm::DEFAULT_ACCESS_KEY, false),
                ("secret_key", bcdm::DEFAULT_SECRET_KEY, true),
                ("dm_code", bcdm::DEFAULT_DM_CODE, false),
            ],
            SimKind::Maas360 => vec![
                ("billing_id", maas360::DEFAULT_BILLING_ID, false),
                ("app_id", maas360::DEFAULT_APP_ID, false),
                ("app_version", maas360::DEFAULT_APP_VERSION, false),
                ("platform_id", maas360::DEFAULT_PLATFORM_ID, false),
                ("app_access_key", maas360::DEFAULT_APP_ACCESS_KEY, true),
                ("username", maas360::DEFAULT_USERNAME, false),
                ("password", maas360::DEFAULT_PASSWORD, true),
            ],
        }
    }

    /// [`SimKind::default_credentials`] as a `[mdm.credentials]` table with
    /// literal values (tests and benchmarks; the demo writes secret files).
    pub fn credentials_toml(self) -> String {
        let mut t = String::from("[mdm.credentials]\n");
        for (key, value, _) in self.default_credentials() {
            t.push_str(&format!("{key} = \"{value}\"\n"));
        }
        t
    }

    /// The name used in configuration, the CLI and the control paths.
    pub fn as_str(self) -> &'static str {
        match self {
            SimKind::Soti => "soti",
            SimKind::Airwatch => "airwatch",
            SimKind::Bcdm => "bcdm",
            SimKind::Maas360 => "maas360",
        }
    }

    /// Where the vendor API lives on the simulator: the `url` an adapter is
    /// configured with is `http://ADDR` + this.
    pub fn base_path(self) -> &'static str {
        match self {
            SimKind::Soti => "/MobiControl",
            SimKind::Airwatch => "/airwatch",
            SimKind::Bcdm => "/bcdm",
            SimKind::Maas360 => "/maas360",
        }
    }

    /// Where the simulator's own control API for this kind lives.
    pub fn control_path(self) -> String {
        format!("/_sim/{}", self.as_str())
    }
}

impl fmt::Display for SimKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SimKind {
    type Err = SimError;

    /// A kind's name in any case; `mcms` (Cisco MCMS, which is MaaS360) is
    /// an alias of `maas360`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        if name.eq_ignore_ascii_case("mcms") {
            return Ok(SimKind::Maas360);
        }
        SimKind::ALL
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| SimError::UnknownKind(s.to_owned()))
    }
}

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// The vendors to serve (duplicates are ignored).
    pub kinds: Vec<SimKind>,
    /// Devices seeded per vendor.
    pub devices: usize,
    /// The same seed gives the same data set.
    pub seed: u64,
    /// SOTI credentials and token lifetime.
    pub soti: SotiOptions,
    /// BCDM credentials, action permits, rate limit and clock skew.
    pub bcdm: BcdmOptions,
    /// AirWatch credentials and rate limit.
    pub airwatch: AirwatchOptions,
    /// MaaS360 credentials, token lifetime and rate limit.
    pub maas360: Maas360Options,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            kinds: vec![SimKind::Soti],
            devices: 100,
            seed: 1,
            soti: SotiOptions::default(),
            bcdm: BcdmOptions::default(),
            airwatch: AirwatchOptions::default(),
            maas360: Maas360Options::default(),
        }
    }
}

impl SimOptions {
    /// Options for `kinds` with `devices` devices each and `seed`, default
    /// credentials.
    pub fn new(kinds: Vec<SimKind>, devices: usize, seed: u64) -> Self {
        Self {
            kinds,
            devices,
            seed,
            ..Self::default()
        }
    }
}

/// Why a simulator could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the {0} simulator is not implemented yet")]
    NotImplemented(SimKind),
    #[error("unknown simulator kind `{0}` (expected soti, airwatch, bcdm or maas360)")]
    UnknownKind(String),
    #[error("no simulator kind selected")]
    NoKinds,
    #[error("simulator I/O error: {0}")]
    Io(#[from] std::io::Error),
}

/// The in-process handle on one vendor's simulated state.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SimState {
    Soti(Arc<SotiState>),
    Bcdm(Arc<BcdmState>),
    Airwatch(Arc<AirwatchState>),
    Maas360(Arc<Maas360State>),
}

impl SimState {
    pub fn kind(&self) -> SimKind {
        match self {
            SimState::Soti(_) => SimKind::Soti,
            SimState::Bcdm(_) => SimKind::Bcdm,
            SimState::Airwatch(_) => SimKind::Airwatch,
            SimState::Maas360(_) => SimKind::Maas360,
        }
    }

    /// The recorder and fault plan every vendor has.
    pub fn core(&self) -> &SimCore {
        match self {
            SimState::Soti(s) => s.core(),
            SimState::Bcdm(s) => s.core(),
            SimState::Airwatch(s) => s.core(),
            SimState::Maas360(s) => s.core(),
        }
    }

    pub fn as_bcdm(&self) -> Option<&Arc<BcdmState>> {
        match self {
            SimState::Bcdm(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_soti(&self) -> Option<&Arc<SotiState>> {
        match self {
            SimState::Soti(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_airwatch(&self) -> Option<&Arc<AirwatchState>> {
        match self {
            SimState::Airwatch(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_maas360(&self) -> Option<&Arc<Maas360State>> {
        match self {
            SimState::Maas360(s) => Some(s),
            _ => None,
        }
    }

    /// Lines telling a human how to point an adapter at this simulator.
    fn banner(&self, addr: SocketAddr) -> String {
        match self {
            SimState::Soti(s) => s.banner(
                &base_url(addr, SimKind::Soti),
                &control_url(addr, SimKind::Soti),
            ),
            SimState::Bcdm(s) => s.banner(
                &base_url(addr, SimKind::Bcdm),
                &control_url(addr, SimKind::Bcdm),
            ),
            SimState::Airwatch(s) => s.banner(
                &base_url(addr, SimKind::Airwatch),
                &control_url(addr, SimKind::Airwatch),
            ),
            SimState::Maas360(s) => s.banner(
                &base_url(addr, SimKind::Maas360),
                &control_url(addr, SimKind::Maas360),
            ),
        }
    }
}

fn base_url(addr: SocketAddr, kind: SimKind) -> String {
    format!("http://{addr}{}", kind.base_path())
}

fn control_url(addr: SocketAddr, kind: SimKind) -> String {
    format!("http://{addr}{}", kind.control_path())
}

/// The registry: one arm per vendor.
fn build(options: &SimOptions) -> Result<(Router, Vec<SimState>), SimError> {
    let kinds = &options.kinds;
    if kinds.is_empty() {
        return Err(SimError::NoKinds);
    }
    let mut router = Router::new();
    let mut states = Vec::new();
    for (i, kind) in kinds.iter().enumerate() {
        if kinds[..i].contains(kind) {
            continue;
        }
        match kind {
            SimKind::Soti => {
                let state = Arc::new(SotiState::new(
                    options.seed,
                    options.devices,
                    options.soti.clone(),
                ));
                router = router.merge(soti::router(state.clone()));
                states.push(SimState::Soti(state));
            }
            SimKind::Airwatch => {
                let state = Arc::new(AirwatchState::new(
                    options.seed,
                    options.devices,
                    options.airwatch.clone(),
                ));
                router = router.merge(airwatch::router(state.clone()));
                states.push(SimState::Airwatch(state));
            }
            SimKind::Bcdm => {
                let state = Arc::new(BcdmState::new(
                    options.seed,
                    options.devices,
                    options.bcdm.clone(),
                ));
                router = router.merge(bcdm::router(state.clone()));
                states.push(SimState::Bcdm(state));
            }
            SimKind::Maas360 => {
                let state = Arc::new(Maas360State::new(
                    options.seed,
                    options.devices,
                    options.maas360.clone(),
                ));
                router = router.merge(maas360::router(state.clone()));
                states.push(SimState::Maas360(state));
            }
        }
    }
    let router = router.fallback(|| async {
        (StatusCode::NOT_FOUND, "no simulator serves this path\n").into_response()
    });
    Ok((router, states))
}

async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        conn::SimListener::new(listener),
        router.into_make_service_with_connect_info::<conn::ConnHandle>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// A running simulator (see the module docs).
#[derive(Debug)]
pub struct Simulator {
    addr: SocketAddr,
    states: Vec<SimState>,
    /// Dropping or firing it starts the graceful shutdown of the server task.
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// How long [`Simulator::shutdown`] waits for open connections (e.g. a
/// request held by a latency fault) before it aborts the server task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Simulator {
    /// Seeds the data and starts serving `listener` on a background task.
    /// Must be called within a Tokio runtime.
    pub fn start(listener: TcpListener, options: SimOptions) -> Result<Simulator, SimError> {
        let addr = listener.local_addr()?;
        let (router, states) = build(&options)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            // An error from the sender side (dropped handle) also means stop.
            let shutdown = async move {
                let _ = stopped.await;
            };
            if let Err(error) = serve(listener, router, shutdown).await {
                tracing::error!(%error, "Simulator stopped serving.");
            }
        });
        Ok(Simulator {
            addr,
            states,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The vendor `url` to give an adapter, e.g. `http://127.0.0.1:PORT/MobiControl`.
    pub fn base_url(&self, kind: SimKind) -> String {
        base_url(self.addr, kind)
    }

    /// The root of this kind's control API, e.g. `http://127.0.0.1:PORT/_sim/soti`.
    pub fn control_url(&self, kind: SimKind) -> String {
        control_url(self.addr, kind)
    }

    /// The state of a started kind; `None` if that kind was not started.
    pub fn state(&self, kind: SimKind) -> Option<SimState> {
        self.states.iter().find(|s| s.kind() == kind).cloned()
    }

    /// Shortcut for the BCDM state.
    pub fn bcdm(&self) -> Option<Arc<BcdmState>> {
        self.state(SimKind::Bcdm).and_then(|s| s.as_bcdm().cloned())
    }

    /// Shortcut for the SOTI state.
    pub fn soti(&self) -> Option<Arc<SotiState>> {
        self.state(SimKind::Soti).and_then(|s| s.as_soti().cloned())
    }

    /// Shortcut for the AirWatch state.
    pub fn airwatch(&self) -> Option<Arc<AirwatchState>> {
        self.state(SimKind::Airwatch)
            .and_then(|s| s.as_airwatch().cloned())
    }

    /// Shortcut for the MaaS360 state.
    pub fn maas360(&self) -> Option<Arc<Maas360State>> {
        self.state(SimKind::Maas360)
            .and_then(|s| s.as_maas360().cloned())
    }

    /// Base URLs, control URLs and credentials of every started kind.
    pub fn banner(&self) -> String {
        banner(self.addr, &self.states)
    }

    /// Stops accepting, lets open requests finish (bounded by a grace
    /// period), and waits for the server task.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                tracing::warn!(
                    "Simulator connections still open after the grace period; aborting."
                );
                task.abort();
            }
        }
    }
}

impl Drop for Simulator {
    fn drop(&mut self) {
        // A simulator dropped without `shutdown` stops serving in the
        // background instead of leaking its task.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn banner(addr: SocketAddr, states: &[SimState]) -> String {
    states
        .iter()
        .map(|s| s.banner(addr))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Serves the simulators until `shutdown` completes: the `sim` CLI command.
/// Prints the base URLs, control URLs and credentials to stdout (they are
/// what the person running it needs) and logs them.
pub async fn serve_until(
    listener: TcpListener,
    options: SimOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), SimError> {
    let addr = listener.local_addr()?;
    let (router, states) = build(&options)?;
    let banner = banner(addr, &states);
    for state in &states {
        tracing::info!(
            kind = %state.kind(),
            base_url = %base_url(addr, state.kind()),
            devices = options.devices,
            seed = options.seed,
            "Simulator serving."
        );
    }
    println!("{banner}");
    serve(listener, router, shutdown).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_from_their_names_in_any_case() {
        assert_eq!("soti".parse::<SimKind>().unwrap(), SimKind::Soti);
        assert_eq!("AirWatch".parse::<SimKind>().unwrap(), SimKind::Airwatch);
        assert_eq!(" bcdm ".parse::<SimKind>().unwrap(), SimKind::Bcdm);
        assert_eq!("maas360".parse::<SimKind>().unwrap(), SimKind::Maas360);
        assert_eq!("MaaS360".parse::<SimKind>().unwrap(), SimKind::Maas360);
        // Cisco MCMS is MaaS360.
        assert_eq!("MCMS".parse::<SimKind>().unwrap(), SimKind::Maas360);
        assert!("workspaceone".parse::<SimKind>().is_err());
        for kind in SimKind::ALL {
            assert_eq!(kind.as_str().parse::<SimKind>().unwrap(), kind);
        }
        assert_eq!(SimKind::Maas360.base_path(), "/maas360");
        assert_eq!(SimKind::Maas360.control_path(), "/_sim/maas360");
    }

    #[tokio::test]
    async fn starting_without_a_kind_fails_instead_of_pretending() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        assert!(matches!(
            Simulator::start(listener, SimOptions::new(vec![], 1, 1)),
            Err(SimError::NoKinds)
        ));
    }
}
