//! The adapter decorator: every call to an MDM is measured
//! (`mtd_mdm_requests_total`, `mtd_mdm_request_seconds`) and a rate-limit
//! answer is noted in the integration's health (the status API's back-off).
//! Applied once, in [`super::build_observed`], so every caller (sync,
//! lookups, dispatcher, `test-connection`) is observed the same way.

use async_trait::async_trait;
use futures::StreamExt;
use mtd_adapter::{
    AdapterError, Capabilities, Device, DeviceIdentifier, Group, HealthReport, MdmAdapter,
    MdmCommand, MdmKind, PageStream, Receipt, User,
};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn observe<T>(
    kind: MdmKind,
    health: Option<&super::IntegrationHealth>,
    operation: &str,
    result: &Result<T, AdapterError>,
    took: Duration,
) {
    crate::metrics::mdm_call(kind.as_str(), operation, class_of(result), took);
    if let (Some(health), Err(e)) = (health, result) {
        if matches!(e, AdapterError::RateLimited { .. }) {
            health.rate_limited(e.retry_after());
        }
    }
}

fn class_of<T>(result: &Result<T, AdapterError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.class(),
    }
}

/// Wraps a vendor adapter and records every call to its MDM in
/// `mtd_mdm_requests_total` and `mtd_mdm_request_seconds`. Applied once, in
/// `adapters::build`, so every caller (sync, lookups, dispatcher,
/// `test-connection`) is measured the same way.
#[derive(Debug)]
pub struct InstrumentedAdapter {
    inner: Arc<dyn MdmAdapter>,
    kind: MdmKind,
    /// Where a rate-limit answer is noted for the status API.
    health: Option<Arc<super::IntegrationHealth>>,
}

impl InstrumentedAdapter {
    pub fn wrap(inner: Arc<dyn MdmAdapter>) -> Arc<dyn MdmAdapter> {
        Self::wrap_observed(inner, None)
    }

    pub fn wrap_observed(
        inner: Arc<dyn MdmAdapter>,
        health: Option<Arc<super::IntegrationHealth>>,
    ) -> Arc<dyn MdmAdapter> {
        let kind = inner.kind();
        Arc::new(InstrumentedAdapter {
            inner,
            kind,
            health,
        })
    }

    /// Records one call: metrics, and a rate-limit answer in the integration's health.
    fn observe<T>(&self, operation: &str, result: &Result<T, AdapterError>, took: Duration) {
        observe(self.kind, self.health.as_deref(), operation, result, took)
    }

    /// Times each page: from the poll that asks for it to its arrival. The
    /// end of the listing (no page) is not a call of its own.
    fn pages<'a, T: Send + 'a>(
        &self,
        operation: &'static str,
        stream: PageStream<'a, T>,
    ) -> PageStream<'a, T> {
        let kind = self.kind;
        let health = self.health.clone();
        futures::stream::unfold(stream, move |mut stream| {
            let health = health.clone();
            async move {
                let started = Instant::now();
                let page = stream.next().await?;
                observe(kind, health.as_deref(), operation, &page, started.elapsed());
                Some((page, stream))
            }
        })
        .boxed()
    }
}

#[async_trait]
impl MdmAdapter for InstrumentedAdapter {
    fn kind(&self) -> MdmKind {
        self.kind
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn removes_wifi_profile_itself(&self) -> bool {
        self.inner.removes_wifi_profile_itself()
    }

    async fn health_check(&self) -> Result<HealthReport, AdapterError> {
        let started = Instant::now();
        let result = self.inner.health_check().await;
        self.observe("health_check", &result, started.elapsed());
        result
    }

    fn devices(&self) -> PageStream<'_, Device> {
        self.pages("list_devices", self.inner.devices())
    }

    fn users(&self) -> PageStream<'_, User> {
        self.pages("list_users", self.inner.users())
    }

    fn groups(&self) -> PageStream<'_, Group> {
        self.pages("list_groups", self.inner.groups())
    }

    async fn lookup_device(&self, id: &DeviceIdentifier) -> Result<Option<Device>, AdapterError> {
        let started = Instant::now();
        let result = self.inner.lookup_device(id).await;
        self.observe("lookup_device", &result, started.elapsed());
        result
    }

    async fn execute(&self, command: MdmCommand, device: &Device) -> Result<Receipt, AdapterError> {
        let started = Instant::now();
        let result = self.inner.execute(command, device).await;
        self.observe("execute", &result, started.elapsed());
        result
    }

    async fn signal_risk(
        &self,
        device: &Device,
        level: mtd_adapter::SignalLevel,
        name: &str,
    ) -> Result<Receipt, AdapterError> {
        let started = Instant::now();
        let result = self.inner.signal_risk(device, level, name).await;
        self.observe("signal_risk", &result, started.elapsed());
        result
    }

    fn risk_read_back(&self) -> Option<mtd_adapter::RiskReadBack> {
        self.inner.risk_read_back()
    }

    async fn read_risk(
        &self,
        devices: &[Device],
        name: &str,
    ) -> Result<Vec<Option<mtd_adapter::SignalLevel>>, AdapterError> {
        let started = Instant::now();
        let result = self.inner.read_risk(devices, name).await;
        self.observe("read_risk", &result, started.elapsed());
        result
    }

    async fn missing_risk_signal(&self, name: &str) -> Result<Vec<String>, AdapterError> {
        let started = Instant::now();
        let result = self.inner.missing_risk_signal(name).await;
        self.observe("missing_risk_signal", &result, started.elapsed());
        result
    }
}
