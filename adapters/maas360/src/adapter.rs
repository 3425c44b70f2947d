//! SCAFFOLD, replaced by the real adapter.
use crate::config::Maas360Config;
use mtd_adapter::AdapterError;

#[derive(Debug)]
pub struct Maas360Adapter {
    #[allow(dead_code)]
    config: Maas360Config,
}

impl Maas360Adapter {
    pub fn new(config: Maas360Config) -> Result<Self, AdapterError> {
        config.validate()?;
        Ok(Maas360Adapter { config })
    }
}

// SCAFFOLD: every call fails until the real adapter lands.
#[async_trait::async_trait]
impl mtd_adapter::MdmAdapter for Maas360Adapter {
    fn kind(&self) -> mtd_adapter::MdmKind {
        mtd_adapter::MdmKind::Maas360
    }
    fn capabilities(&self) -> mtd_adapter::Capabilities {
        mtd_adapter::Capabilities {
            commands: Default::default(),
            removes_wifi_profile_itself: false,
            groups: false,
            user_listing: true,
        }
    }
    async fn health_check(&self) -> Result<mtd_adapter::HealthReport, AdapterError> {
        Err(AdapterError::Config("scaffold".into()))
    }
    fn devices(&self) -> mtd_adapter::PageStream<'_, mtd_adapter::Device> {
        Box::pin(futures::stream::empty())
    }
    fn users(&self) -> mtd_adapter::PageStream<'_, mtd_adapter::User> {
        Box::pin(futures::stream::empty())
    }
    fn groups(&self) -> mtd_adapter::PageStream<'_, mtd_adapter::Group> {
        Box::pin(futures::stream::empty())
    }
    async fn lookup_device(
        &self,
        _id: &mtd_adapter::DeviceIdentifier,
    ) -> Result<Option<mtd_adapter::Device>, AdapterError> {
        Ok(None)
    }
    async fn execute(
        &self,
        _command: mtd_adapter::MdmCommand,
        _device: &mtd_adapter::Device,
    ) -> Result<mtd_adapter::Receipt, AdapterError> {
        Err(AdapterError::Config("scaffold".into()))
    }
}
