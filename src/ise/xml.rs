//! The Cisco ISE MDM API's XML (CONTRACT §7): the documents the daemon
//! answers ISE with and the request bodies ISE sends, as pure functions (no
//! HTTP, no store).
//!
//! What is written follows Cisco's two Swagger documents (copied to
//! `tests/fixtures/cisco-ise/`: v3, and v1/v2): per API version only the
//! element names that version's document defines, in its order, under the
//! root `<ise_api>`, after an `<?xml version="1.0" encoding="UTF-8"?>` prolog.
//! A device's `<attributes>` are the version's response definition widened by
//! the attributes its `filter` table lists, because ISE asks for those by
//! name and Cisco's own mock MDM sends them: v1/v2 add `model`, `meid`,
//! `udid`, `serial_number`, `phone_number` to the definition's eight, v3 adds
//! `imei` and `meid`. `guid`, `lastCheckinTimeStamp`, `macaddresses` and
//! `server_busy_wait_seconds` exist in v3 only. Documents are written with
//! serde and quick-xml, so every value is escaped by the crate; characters
//! that XML 1.0 cannot carry at all (most C0 controls) become U+FFFD.
//!
//! Reading is lenient where ISE's senders are known to differ (element names
//! in any case, namespace prefixes ignored, identifiers in any order and
//! number, a `multipart/form-data` body's first part: see [`request_xml`])
//! and strict about XML itself: a body that is not well-formed, has another
//! root than `<ise_api>`, declares a DOCTYPE or nests deeper than
//! [`MAX_DEPTH`] is an [`XmlError`]. The readers never panic; the body's size
//! is the caller's limit.

#![deny(missing_docs)]

use std::borrow::Cow;
use std::collections::HashSet;

use quick_xml::events::{BytesRef, BytesStart, Event};
use quick_xml::Reader;
use serde::Serialize;

/// The API versions we speak: 1, 2, 3.
pub const MAX_VERSION: u8 = 3;

/// The lowest API version; a `version` argument below it is written as it.
pub const MIN_VERSION: u8 = 1;

/// The `failure_reason` of [`MessageResult::not_supported`]: we advertise
/// `messaging_support=false`, but ISE may call `sendmessage` anyway.
pub const MESSAGING_NOT_SUPPORTED: &str = "messaging is not supported";

/// How deep a request's elements may nest (`<ise_api>` is level 1). ISE's
/// requests are three levels deep (`ise_api/identifier/guid`); the limit only
/// keeps a hostile body from growing the reader's element stack.
pub const MAX_DEPTH: usize = 32;

/// How many MAC addresses a v3 `<macaddresses>` carries: Cisco's filter table
/// says "comma separated max 5 MAC addresses".
pub const MAX_MACADDRESSES: usize = 5;

/// The root element of every document, both ways.
const ROOT: &str = "ise_api";

/// The first line of every document we write, as Cisco's mock MDM sends it.
const PROLOG: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

// ---------------------------------------------------------------------------
// What callers give and get
// ---------------------------------------------------------------------------

/// The server information ISE asks for first (`GET /ciscoise/mdminfo/`,
/// `name=mdminfo`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdmInfo {
    /// The version we answer with: the highest we speak that is not above
    /// ISE's `ise_api_version` (clamped to `MIN_VERSION..=MAX_VERSION`).
    pub api_version: u8,
    /// Where ISE sends its device queries, actions and messages, e.g.
    /// `/ciscoise/mdmapi/v3`.
    pub api_path: String,
    /// Where ISE sends users to enrol a device.
    pub redirect_url: String,
    /// The most devices one answer carries (the page size of a listing).
    pub query_max_size: u32,
    /// `vendor`: optional in v1/v2, mandatory from v3; written for every
    /// version (the v1/v2 document defines it too).
    pub vendor: String,
    /// `product_name`, written like `vendor`.
    pub product_name: String,
    /// `product_version`, written like `vendor`.
    pub product_version: String,
}

/// What keys a `<device>` in an answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceKey {
    /// `<macaddress>`: 12 upper-case hex digits (see [`normalise_mac`]),
    /// written as given. The key of v1/v2; in v3 the key of legacy MAC
    /// queries and of `deviceidentifier=macaddress` listings.
    MacAddress(String),
    /// `<guid>`: the v3 key. v1/v2 define no such element, so there a
    /// GUID-keyed device is written without a key (as Intune's v2 answers
    /// are), its attributes alone.
    Guid(String),
}

/// A device's `<compliance>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compliance {
    /// `<status>`: `true` when compliant.
    pub status: bool,
    /// `<failure_reason>`: why not; omitted when `None` or blank.
    pub failure_reason: Option<String>,
    /// `<remediation>`: what the user must do; omitted when `None` or blank.
    pub remediation: Option<String>,
}

/// One device of a `name=attributes` answer. Every `Option` that is `None`
/// (or a blank string) is omitted, and so is every field the version does not
/// define (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IseDevice {
    /// The `<device>`'s key.
    pub key: DeviceKey,
    /// `<register_status>`: known to (enrolled with) a managing MDM.
    pub register_status: bool,
    /// `<compliance>`.
    pub compliance: Compliance,
    /// `<disk_encryption_on>`.
    pub disk_encryption_on: Option<bool>,
    /// `<pin_lock_on>`.
    pub pin_lock_on: Option<bool>,
    /// `<jail_broken>`.
    pub jail_broken: Option<bool>,
    /// `<manufacturer>`.
    pub manufacturer: Option<String>,
    /// `<model>`.
    pub model: Option<String>,
    /// `<imei>`.
    pub imei: Option<String>,
    /// `<meid>`.
    pub meid: Option<String>,
    /// `<udid>`.
    pub udid: Option<String>,
    /// `<serial_number>`.
    pub serial_number: Option<String>,
    /// `<os_version>`.
    pub os_version: Option<String>,
    /// `<phone_number>`.
    pub phone_number: Option<String>,
    /// `<lastCheckinTimeStamp>` (v3): milliseconds since the Unix epoch.
    pub last_checkin_ms: Option<i64>,
    /// `<attributes><guid>` (v3), which Cisco wants even when the device is
    /// keyed by MAC.
    pub guid: Option<String>,
    /// `<macaddresses>` (v3): the first [`MAX_MACADDRESSES`], joined with
    /// commas; omitted when empty.
    pub macaddresses: Vec<String>,
}

impl IseDevice {
    /// A device with its key, registration and compliance, and nothing else
    /// known.
    #[must_use]
    pub fn new(key: DeviceKey, register_status: bool, compliance: Compliance) -> Self {
        Self {
            key,
            register_status,
            compliance,
            disk_encryption_on: None,
            pin_lock_on: None,
            jail_broken: None,
            manufacturer: None,
            model: None,
            imei: None,
            meid: None,
            udid: None,
            serial_number: None,
            os_version: None,
            phone_number: None,
            last_checkin_ms: None,
            guid: None,
            macaddresses: Vec::new(),
        }
    }
}

/// One device of a `name=action` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActionResult {
    /// The `<device>`'s key.
    pub key: DeviceKey,
    /// `<action_status>`: the action was accepted.
    pub action_status: bool,
    /// `<failure_reason>`; omitted when `None` or blank.
    pub failure_reason: Option<String>,
}

/// One device of a `name=sendmessage` answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageResult {
    /// The `<device>`'s key.
    pub key: DeviceKey,
    /// `<message_status>`: the message was sent.
    pub message_status: bool,
    /// `<failure_reason>`; omitted when `None` or blank.
    pub failure_reason: Option<String>,
}

impl MessageResult {
    /// The answer for every device while we do not support messaging:
    /// `message_status=false` with [`MESSAGING_NOT_SUPPORTED`].
    #[must_use]
    pub fn not_supported(key: DeviceKey) -> Self {
        Self {
            key,
            message_status: false,
            failure_reason: Some(MESSAGING_NOT_SUPPORTED.to_owned()),
        }
    }
}

/// A device identifier from a request's `<identifier>`: v3 sends `<guid>` (or
/// `<guidhn>`), v1/v2 `<macaddress>` (one or more); the rest are the other
/// query criteria of Cisco's documents, accepted in case ISE sends them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identifier {
    /// `<macaddress>`: normalised by [`normalise_mac`] when it is a MAC,
    /// otherwise the trimmed text as sent.
    MacAddress(String),
    /// `<guid>`, as sent (trimmed); compare without regard to case.
    Guid(String),
    /// `<guidhn>` (v3's "hostname" identifier) or `<hostname>`.
    Hostname(String),
    /// `<udid>`.
    Udid(String),
    /// `<imei>`.
    Imei(String),
    /// `<meid>`.
    Meid(String),
    /// `<serial_number>` or `<serialnumber>`.
    SerialNumber(String),
    /// `<username>`.
    Username(String),
}

impl Identifier {
    /// The identifier's value.
    #[must_use]
    pub fn value(&self) -> &str {
        match self {
            Self::MacAddress(v)
            | Self::Guid(v)
            | Self::Hostname(v)
            | Self::Udid(v)
            | Self::Imei(v)
            | Self::Meid(v)
            | Self::SerialNumber(v)
            | Self::Username(v) => v,
        }
    }

    /// The element name Cisco's documents give this kind of identifier (also
    /// the `querycriteria` name, but for `guidhn` and `serial_number`).
    #[must_use]
    pub fn element(&self) -> &'static str {
        match self {
            Self::MacAddress(_) => "macaddress",
            Self::Guid(_) => "guid",
            Self::Hostname(_) => "guidhn",
            Self::Udid(_) => "udid",
            Self::Imei(_) => "imei",
            Self::Meid(_) => "meid",
            Self::SerialNumber(_) => "serial_number",
            Self::Username(_) => "username",
        }
    }

    /// The key to answer this identifier's device with, when it is one an
    /// answer can carry (a MAC address or a GUID).
    #[must_use]
    pub fn device_key(&self) -> Option<DeviceKey> {
        match self {
            Self::MacAddress(v) => Some(DeviceKey::MacAddress(v.clone())),
            Self::Guid(v) => Some(DeviceKey::Guid(v.clone())),
            _ => None,
        }
    }
}

/// Why a request body was refused. The messages are for the log and for a
/// 400 answer; they quote at most a short piece of the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Nothing but whitespace, a prolog or comments.
    #[error("empty body: no XML element")]
    Empty,
    /// Not well-formed XML.
    #[error("not XML at line {line}:{column}: {reason}")]
    NotXml {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column (in characters) of the problem.
        column: usize,
        /// What is wrong there.
        reason: String,
    },
    /// Well-formed, but not an ISE document.
    #[error("root element is <{found}>, expected <ise_api>")]
    WrongRoot {
        /// The root element's name as sent (shortened).
        found: String,
    },
    /// Elements nested deeper than [`MAX_DEPTH`].
    #[error("elements nested deeper than {limit} levels")]
    TooDeep {
        /// The limit ([`MAX_DEPTH`]).
        limit: usize,
    },
    /// A `<!DOCTYPE …>`: ISE sends none, and a DTD is how XML bombs start.
    #[error("a DOCTYPE declaration is not accepted")]
    Doctype,
    /// An action or message request that names no device.
    #[error("no identifier: expected <identifier> holding <guid>, <macaddress> or another device identifier inside <ise_api>")]
    NoIdentifier,
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// The `name=mdminfo` document (API #1). `messaging_support` is always
/// `false`: we do not implement `sendmessage`.
#[must_use]
pub fn mdm_info(info: &MdmInfo) -> String {
    document(&MdmInfoDoc {
        name: "mdminfo",
        api_version: clamp_version(info.api_version),
        api_path: clean(&info.api_path),
        redirect_url: clean(&info.redirect_url),
        query_max_size: info.query_max_size,
        messaging_support: false,
        vendor: clean(&info.vendor),
        product_name: clean(&info.product_name),
        product_version: clean(&info.product_version),
    })
}

/// The `name=attributes` document (API #2: device queries, the compliance
/// listing, `batchdevices`). `paging_info` is the cursor ISE sends back as
/// `paging=` for the next page, 0 on the last; Java's ISE reads it as an
/// integer, so a page number or an offset, not a hash. An empty `devices` gives `<deviceList></deviceList>`, the
/// answer for an unknown device. v3 also carries
/// `<server_busy_wait_seconds>0</server_busy_wait_seconds>`.
#[must_use]
pub fn attributes(version: u8, paging_info: u64, devices: &[IseDevice]) -> String {
    let version = clamp_version(version);
    let v3 = version >= 3;
    document(&AttributesDoc {
        name: "attributes",
        api_version: version,
        paging_info,
        server_busy_wait_seconds: v3.then_some(0),
        device_list: DeviceList {
            device: devices
                .iter()
                .map(|d| {
                    let (macaddress, guid) = key_elements(version, &d.key);
                    AttributesDevice {
                        macaddress,
                        guid,
                        attributes: attributes_of(v3, d),
                    }
                })
                .collect(),
        },
    })
}

/// The `name=action` document (API #3), one `<device>` per result.
#[must_use]
pub fn action_response(version: u8, results: &[ActionResult]) -> String {
    let version = clamp_version(version);
    document(&ResultDoc {
        name: "action",
        api_version: version,
        device_list: DeviceList {
            device: results
                .iter()
                .map(|r| {
                    let (macaddress, guid) = key_elements(version, &r.key);
                    ResultDevice {
                        macaddress,
                        guid,
                        result: ActionResultXml {
                            action_status: r.action_status,
                            failure_reason: opt(r.failure_reason.as_deref()),
                        },
                    }
                })
                .collect(),
        },
    })
}

/// The `name=sendmessage` document (API #4), one `<device>` per result (see
/// [`MessageResult::not_supported`]). v1/v2 devices are keyed by
/// `<macaddress>` although the v1/v2 definition names no key: without one ISE
/// could not tell the results apart, and IBM's MaaS360 answers so.
#[must_use]
pub fn message_response(version: u8, results: &[MessageResult]) -> String {
    let version = clamp_version(version);
    document(&ResultDoc {
        name: "sendmessage",
        api_version: version,
        device_list: DeviceList {
            device: results
                .iter()
                .map(|r| {
                    let (macaddress, guid) = key_elements(version, &r.key);
                    ResultDevice {
                        macaddress,
                        guid,
                        result: MessageResultXml {
                            message_status: r.message_status,
                            failure_reason: opt(r.failure_reason.as_deref()),
                        },
                    }
                })
                .collect(),
        },
    })
}

fn clamp_version(version: u8) -> u8 {
    version.clamp(MIN_VERSION, MAX_VERSION)
}

/// `(<macaddress>, <guid>)` of a `<device>`; v1/v2 have no `<guid>`.
fn key_elements(version: u8, key: &DeviceKey) -> (Option<Cow<'_, str>>, Option<Cow<'_, str>>) {
    match key {
        DeviceKey::MacAddress(mac) => (Some(clean(mac)), None),
        DeviceKey::Guid(guid) if version >= 3 => (None, Some(clean(guid))),
        DeviceKey::Guid(_) => (None, None),
    }
}

fn attributes_of(v3: bool, d: &IseDevice) -> AttributesXml<'_> {
    let macaddresses = d
        .macaddresses
        .iter()
        .map(|m| m.trim())
        .filter(|m| !m.is_empty())
        .take(MAX_MACADDRESSES)
        .collect::<Vec<_>>()
        .join(",");
    AttributesXml {
        register_status: d.register_status,
        compliance: ComplianceXml {
            status: d.compliance.status,
            failure_reason: opt(d.compliance.failure_reason.as_deref()),
            remediation: opt(d.compliance.remediation.as_deref()),
        },
        disk_encryption_on: d.disk_encryption_on,
        pin_lock_on: d.pin_lock_on,
        jail_broken: d.jail_broken,
        manufacturer: opt(d.manufacturer.as_deref()),
        model: opt(d.model.as_deref()),
        imei: opt(d.imei.as_deref()),
        meid: opt(d.meid.as_deref()),
        udid: opt(d.udid.as_deref()),
        serial_number: opt(d.serial_number.as_deref()),
        os_version: opt(d.os_version.as_deref()),
        phone_number: opt(d.phone_number.as_deref()),
        last_checkin: if v3 { d.last_checkin_ms } else { None },
        guid: if v3 { opt(d.guid.as_deref()) } else { None },
        macaddresses: if v3 && !macaddresses.is_empty() {
            Some(clean(&macaddresses).into_owned().into())
        } else {
            None
        },
    }
}

/// A value worth writing: not `None`, not blank.
fn opt(value: Option<&str>) -> Option<Cow<'_, str>> {
    value.filter(|v| !v.trim().is_empty()).map(clean)
}

/// The value with every character XML 1.0 cannot carry, escaped or not
/// (C0 controls but tab, LF and CR; U+FFFE, U+FFFF), replaced by U+FFFD.
/// quick-xml escapes markup characters but does not check these, and one of
/// them would make the whole answer unreadable for ISE.
fn clean(value: &str) -> Cow<'_, str> {
    fn allowed(c: char) -> bool {
        matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
    }
    if value.chars().all(allowed) {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(
            value
                .chars()
                .map(|c| if allowed(c) { c } else { '\u{FFFD}' })
                .collect(),
        )
    }
}

/// The prolog, then `doc` as `<ise_api>`, indented by two spaces.
fn document<T: Serialize>(doc: &T) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str(PROLOG);
    out.push('\n');
    let mut ser = quick_xml::se::Serializer::with_root(&mut out, Some(ROOT))
        .expect("`ise_api` is a valid XML name");
    ser.indent(' ', 2);
    // The only element that can be empty is an empty <deviceList> (None and
    // blank values are skipped): written `<deviceList></deviceList>`, as in
    // Cisco's rule for an unknown device and PacketFence's fixture.
    ser.expand_empty_elements(true);
    doc.serialize(ser)
        .expect("the document types hold only strings, numbers and booleans, and a String cannot fail to be written to");
    out.push('\n');
    out
}

// The documents as serde writes them: one field per element, in the order
// of Cisco's definitions.

#[derive(Serialize)]
struct MdmInfoDoc<'a> {
    name: &'static str,
    api_version: u8,
    api_path: Cow<'a, str>,
    redirect_url: Cow<'a, str>,
    query_max_size: u32,
    messaging_support: bool,
    vendor: Cow<'a, str>,
    product_name: Cow<'a, str>,
    product_version: Cow<'a, str>,
}

#[derive(Serialize)]
struct AttributesDoc<'a> {
    name: &'static str,
    api_version: u8,
    paging_info: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_busy_wait_seconds: Option<u32>,
    #[serde(rename = "deviceList")]
    device_list: DeviceList<AttributesDevice<'a>>,
}

#[derive(Serialize)]
struct DeviceList<D> {
    device: Vec<D>,
}

#[derive(Serialize)]
struct AttributesDevice<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    macaddress: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guid: Option<Cow<'a, str>>,
    attributes: AttributesXml<'a>,
}

/// The union of the v1/v2 and v3 attributes, in the order of both
/// definitions and of the `filter` tables.
#[derive(Serialize)]
struct AttributesXml<'a> {
    register_status: bool,
    compliance: ComplianceXml<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_encryption_on: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pin_lock_on: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    jail_broken: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    manufacturer: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    imei: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    meid: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    udid: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    serial_number: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    os_version: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_number: Option<Cow<'a, str>>,
    #[serde(
        rename = "lastCheckinTimeStamp",
        skip_serializing_if = "Option::is_none"
    )]
    last_checkin: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guid: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    macaddresses: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct ComplianceXml<'a> {
    status: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remediation: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct ResultDoc<'a, R> {
    name: &'static str,
    api_version: u8,
    #[serde(rename = "deviceList")]
    device_list: DeviceList<ResultDevice<'a, R>>,
}

#[derive(Serialize)]
struct ResultDevice<'a, R> {
    #[serde(skip_serializing_if = "Option::is_none")]
    macaddress: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    guid: Option<Cow<'a, str>>,
    result: R,
}

#[derive(Serialize)]
struct ActionResultXml<'a> {
    action_status: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<Cow<'a, str>>,
}

#[derive(Serialize)]
struct MessageResultXml<'a> {
    message_status: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    failure_reason: Option<Cow<'a, str>>,
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------
//
// The readers walk quick-xml's events rather than deserialising with serde:
// the element names ISE's senders use differ in case and prefix, identifiers
// repeat and interleave, and only the walk gives an error its line and
// column, checks the root's name, bounds the depth and turns every oddity
// into an `XmlError` rather than a serde message.

/// The identifiers of an action request (`POST {api_path}/action/…`): every
/// device identifier inside an `<identifier>`, in order, without duplicates.
///
/// # Errors
/// The body is not an `<ise_api>` document ([`XmlError`]), or names no
/// device ([`XmlError::NoIdentifier`]).
pub fn parse_action_request(body: &[u8]) -> Result<Vec<Identifier>, XmlError> {
    parse_identifiers(body)
}

/// The identifiers of a message request (`PUT {api_path}/sendmessage`), read
/// like [`parse_action_request`]; the `<message>` itself is not needed while
/// we answer every message with [`MessageResult::not_supported`].
///
/// # Errors
/// As [`parse_action_request`].
pub fn parse_message_request(body: &[u8]) -> Result<Vec<Identifier>, XmlError> {
    parse_identifiers(body)
}

/// The values of a `batchdevices` request (v2): the text of every `<value>`,
/// and, defensively, of every `<macaddress>` and `<guid>`, anywhere in the
/// document, trimmed, in order, without duplicates or blanks. Cisco does not
/// show this body; the values are as sent, for the caller to read by the
/// query's `querycriteria` (and to join with its `value` parameter). A
/// document with none gives an empty list.
///
/// # Errors
/// The body is not an `<ise_api>` document ([`XmlError`]).
pub fn parse_batch_request(body: &[u8]) -> Result<Vec<String>, XmlError> {
    let mut seen = HashSet::new();
    let mut values = Vec::new();
    walk(body, |path, text| {
        if path.len() >= 2
            && !text.is_empty()
            && matches!(
                path[path.len() - 1].as_str(),
                "value" | "macaddress" | "guid"
            )
            && seen.insert(text.to_owned())
        {
            values.push(text.to_owned());
        }
    })?;
    Ok(values)
}

/// The XML of a request: the body itself, or, for a `multipart/form-data`
/// body (which MaaS360 documents ISE sending for actions and messages), the
/// content of its first part. A body that already starts with `<` is taken
/// as it is whatever its `Content-Type`, and so is a multipart body that
/// cannot be split (the XML reader then says what is wrong).
#[must_use]
pub fn request_xml<'a>(content_type: Option<&str>, body: &'a [u8]) -> &'a [u8] {
    let start = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    if start.trim_ascii_start().starts_with(b"<") {
        return body;
    }
    content_type
        .and_then(multipart_boundary)
        .and_then(|boundary| first_part(body, boundary.as_bytes()))
        .unwrap_or(body)
}

/// The `boundary` of a `multipart/*` content type (RFC 2046 §5.1.1).
fn multipart_boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';');
    let mime = params.next()?.trim();
    let (kind, _) = mime.split_once('/')?;
    if !kind.trim().eq_ignore_ascii_case("multipart") {
        return None;
    }
    params.find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        // RFC 2046: 1 to 70 characters.
        (1..=70).contains(&value.len()).then_some(value)
    })
}

/// The content of the first part of a multipart body: after the first
/// `--boundary` line and the part's headers, up to the next delimiter.
fn first_part<'a>(body: &'a [u8], boundary: &[u8]) -> Option<&'a [u8]> {
    let mut delimiter = Vec::with_capacity(boundary.len() + 2);
    delimiter.extend_from_slice(b"--");
    delimiter.extend_from_slice(boundary);

    let after_delimiter = find(body, &delimiter)? + delimiter.len();
    let rest = &body[after_delimiter..];
    if rest.starts_with(b"--") {
        return None; // the close delimiter: no part at all
    }
    // The rest of the delimiter line (transport padding), then the headers,
    // which end at the first empty line.
    let line_end = find(rest, b"\n")? + 1;
    let headers = &rest[line_end..];
    let content_start = if headers.starts_with(b"\r\n") {
        2
    } else if headers.starts_with(b"\n") {
        1
    } else {
        match (find(headers, b"\r\n\r\n"), find(headers, b"\n\n")) {
            (Some(crlf), Some(lf)) if lf < crlf => lf + 2,
            (Some(crlf), _) => crlf + 4,
            (None, Some(lf)) => lf + 2,
            (None, None) => return None,
        }
    };
    let content = &headers[content_start..];
    let end = find(content, &delimiter)?;
    let content = &content[..end];
    // The line break before the delimiter belongs to the delimiter.
    let content = content
        .strip_suffix(b"\r\n")
        .or_else(|| content.strip_suffix(b"\n"))
        .unwrap_or(content);
    Some(content)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The normalised form of a MAC address: 12 hex digits in any case, with any
/// of the separators `:`, `-`, `.` and whitespace anywhere, or none, become
/// 12 upper-case hex digits (`0026b4-24:fe.b4` → `0026B424FEB4`); anything
/// else is `None`.
#[must_use]
pub fn normalise_mac(s: &str) -> Option<String> {
    let mut mac = String::with_capacity(12);
    for c in s.chars() {
        if c.is_ascii_hexdigit() {
            if mac.len() == 12 {
                return None;
            }
            mac.push(c.to_ascii_uppercase());
        } else if !(matches!(c, ':' | '-' | '.') || c.is_whitespace()) {
            return None;
        }
    }
    (mac.len() == 12).then_some(mac)
}

fn parse_identifiers(body: &[u8]) -> Result<Vec<Identifier>, XmlError> {
    let mut seen = HashSet::new();
    let mut found = Vec::new();
    walk(body, |path, text| {
        if let [.., parent, name] = path {
            if parent == "identifier" && !text.is_empty() {
                if let Some(id) = identifier(name, text) {
                    if seen.insert(id.clone()) {
                        found.push(id);
                    }
                }
            }
        }
    })?;
    if found.is_empty() {
        Err(XmlError::NoIdentifier)
    } else {
        Ok(found)
    }
}

/// The identifier an element inside `<identifier>` holds (`name` is
/// lower-case, `text` trimmed and not empty).
fn identifier(name: &str, text: &str) -> Option<Identifier> {
    let value = text.to_owned();
    Some(match name {
        "macaddress" => Identifier::MacAddress(normalise_mac(text).unwrap_or(value)),
        "guid" => Identifier::Guid(value),
        "guidhn" | "hostname" => Identifier::Hostname(value),
        "udid" => Identifier::Udid(value),
        "imei" => Identifier::Imei(value),
        "meid" => Identifier::Meid(value),
        "serial_number" | "serialnumber" => Identifier::SerialNumber(value),
        "username" => Identifier::Username(value),
        _ => return None,
    })
}

/// Reads a whole `<ise_api>` document and calls `element(path, text)` as
/// each element closes: `path` is the lower-case local names from the root
/// to that element, `text` its own character data (entities resolved,
/// CDATA included), trimmed.
fn walk(body: &[u8], mut element: impl FnMut(&[String], &str)) -> Result<(), XmlError> {
    let mut reader = Reader::from_reader(body);
    let mut names: Vec<String> = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    let mut seen_root = false;

    loop {
        let event = match reader.read_event() {
            Ok(event) => event,
            Err(e) => return Err(not_xml(body, reader.error_position(), &e.to_string())),
        };
        let here = reader.buffer_position();
        match event {
            Event::Start(start) => {
                open(body, here, &start, &mut names, &mut seen_root)?;
                texts.push(String::new());
            }
            Event::Empty(start) => {
                open(body, here, &start, &mut names, &mut seen_root)?;
                element(&names, "");
                names.pop();
            }
            Event::End(_) => {
                // quick-xml has checked that the end tag matches its start.
                let text = texts.pop().unwrap_or_default();
                element(&names, text.trim());
                names.pop();
            }
            Event::Text(text) => {
                let text = text
                    .xml10_content()
                    .map_err(|e| not_xml(body, here, &e.to_string()))?;
                add_text(body, here, &mut texts, &text)?;
            }
            Event::CData(cdata) => {
                let text = cdata
                    .decode()
                    .map_err(|e| not_xml(body, here, &e.to_string()))?;
                if texts.is_empty() {
                    return Err(not_xml(body, here, "CDATA outside the root element"));
                }
                add_text(body, here, &mut texts, &text)?;
            }
            Event::GeneralRef(reference) => {
                let c = resolve(&reference).map_err(|reason| not_xml(body, here, &reason))?;
                if texts.is_empty() {
                    return Err(not_xml(body, here, "a reference outside the root element"));
                }
                add_text(body, here, &mut texts, c.encode_utf8(&mut [0; 4]))?;
            }
            Event::DocType(_) => return Err(XmlError::Doctype),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => {
                return match names.last() {
                    Some(open) => Err(not_xml(
                        body,
                        here,
                        &format!("the document ends inside <{}>", short(open)),
                    )),
                    None if seen_root => Ok(()),
                    None => Err(XmlError::Empty),
                };
            }
        }
    }
}

/// An element starts: the root must be `<ise_api>` and come once, the depth
/// stays within [`MAX_DEPTH`], the attributes must be well-formed.
fn open(
    body: &[u8],
    here: u64,
    start: &BytesStart<'_>,
    names: &mut Vec<String>,
    seen_root: &mut bool,
) -> Result<(), XmlError> {
    let local = start.local_name();
    let name = std::str::from_utf8(local.as_ref())
        .map_err(|_| not_xml(body, here, "an element name is not UTF-8"))?;
    if names.is_empty() {
        if *seen_root {
            return Err(not_xml(body, here, "a second root element"));
        }
        if !name.eq_ignore_ascii_case(ROOT) {
            let full = String::from_utf8_lossy(start.name().as_ref()).into_owned();
            return Err(XmlError::WrongRoot {
                found: short(&full),
            });
        }
        *seen_root = true;
    }
    if names.len() >= MAX_DEPTH {
        return Err(XmlError::TooDeep { limit: MAX_DEPTH });
    }
    for attribute in start.attributes() {
        attribute.map_err(|e| not_xml(body, here, &e.to_string()))?;
    }
    names.push(name.to_ascii_lowercase());
    Ok(())
}

/// Character data: inside the root it belongs to the innermost element;
/// outside only whitespace may stand.
fn add_text(body: &[u8], here: u64, texts: &mut [String], text: &str) -> Result<(), XmlError> {
    match texts.last_mut() {
        Some(current) => current.push_str(text),
        None if text.trim().is_empty() => {}
        None => return Err(not_xml(body, here, "text outside the root element")),
    }
    Ok(())
}

/// The character a reference stands for: a character reference or one of
/// XML's five predefined entities (without a DTD there are no others).
fn resolve(reference: &BytesRef<'_>) -> Result<char, String> {
    match reference.resolve_char_ref() {
        Ok(Some(c)) => Ok(c),
        Ok(None) => {
            let name = reference.decode().map_err(|e| e.to_string())?;
            match name.as_ref() {
                "amp" => Ok('&'),
                "lt" => Ok('<'),
                "gt" => Ok('>'),
                "quot" => Ok('"'),
                "apos" => Ok('\''),
                other => Err(format!("unknown entity &{};", short(other))),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// [`XmlError::NotXml`] at a byte offset of `body`.
fn not_xml(body: &[u8], offset: u64, reason: &str) -> XmlError {
    let end = usize::try_from(offset).map_or(body.len(), |o| o.min(body.len()));
    let before = &body[..end];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    XmlError::NotXml {
        line: before.iter().filter(|&&b| b == b'\n').count() + 1,
        column: String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1,
        reason: reason.to_owned(),
    }
}

/// At most 40 characters of a name from the body, for an error message.
fn short(s: &str) -> String {
    const MAX: usize = 40;
    if s.chars().count() <= MAX {
        s.to_owned()
    } else {
        let mut cut: String = s.chars().take(MAX).collect();
        cut.push('…');
        cut
    }
}

#[cfg(test)]
mod tests {
    //! The documents are checked against Cisco's Swagger itself (loaded from
    //! `tests/fixtures/cisco-ise/`), against the example bodies, and read
    //! back by a separate small XML tree reader.

    use super::*;

    use proptest::prelude::*;
    use yaml_rust2::Yaml;

    use super::super::spec_check::*;

    fn assert_valid(xml: &str, version: u8) {
        if let Err(e) = validate(xml, version, true) {
            panic!("v{version}: {e}\n{xml}");
        }
    }

    /// A document made of a definition's own `example:` values.
    fn cisco_example(def: &Yaml) -> String {
        fn element(name: &str, def: &Yaml, out: &mut String) {
            out.push('<');
            out.push_str(name);
            out.push('>');
            if let Some(props) = def["properties"].as_hash() {
                for (k, v) in props {
                    element(k.as_str().expect("a name"), v, out);
                }
            } else {
                let text = match &def["example"] {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    other => panic!("example {other:?}"),
                };
                out.push_str(&quick_xml::escape::escape(text.as_str()));
            }
            out.push_str("</");
            out.push_str(name);
            out.push('>');
        }
        let mut out = String::new();
        element("ise_api", def, &mut out);
        out
    }

    // --- sample data -------------------------------------------------------

    const TRICKY: &str = "Threat <script>alert(\"x\")</script> & 'more' — Ünïcødé 端末 😀";

    fn full_device(key: DeviceKey) -> IseDevice {
        IseDevice {
            key,
            register_status: true,
            compliance: Compliance {
                status: false,
                failure_reason: Some(TRICKY.to_owned()),
                remediation: Some("Open the app's \"Fix\" tab & follow <steps>".to_owned()),
            },
            disk_encryption_on: Some(true),
            pin_lock_on: Some(false),
            jail_broken: Some(true),
            manufacturer: Some("Apple & Sons <Ltd>".to_owned()),
            model: Some("iPhone 15 Pro \"Max\"".to_owned()),
            imei: Some("987654321098765".to_owned()),
            meid: Some("B0123456789012".to_owned()),
            udid: Some("00008020-0015784C218A402E".to_owned()),
            serial_number: Some("F9GDX3RQQ1GC".to_owned()),
            os_version: Some("iOS 17.3.1".to_owned()),
            phone_number: Some("+49 (0) 30 1234".to_owned()),
            last_checkin_ms: Some(1_721_571_561_000),
            guid: Some("1759c0fd-c8da-49e8-b14f-19d85acfacea".to_owned()),
            macaddresses: vec!["F434F0A1E478".to_owned(), "0026B424FEB4".to_owned()],
        }
    }

    fn minimal_device(key: DeviceKey) -> IseDevice {
        IseDevice::new(
            key,
            false,
            Compliance {
                status: true,
                failure_reason: None,
                remediation: None,
            },
        )
    }

    fn mac(s: &str) -> DeviceKey {
        DeviceKey::MacAddress(s.to_owned())
    }

    fn guid(s: &str) -> DeviceKey {
        DeviceKey::Guid(s.to_owned())
    }

    fn info(version: u8) -> MdmInfo {
        MdmInfo {
            api_version: version,
            api_path: format!("/ciscoise/mdmapi/v{version}"),
            redirect_url: "https://mtd.example.com/enroll".to_owned(),
            query_max_size: 1000,
            vendor: "ExampleVendor".to_owned(),
            product_name: "Example MTD Connector".to_owned(),
            product_version: "1.0.0".to_owned(),
        }
    }

    const V3_ONLY: [&str; 4] = [
        "server_busy_wait_seconds",
        "lastCheckinTimeStamp",
        "guid",
        "macaddresses",
    ];

    // --- the validator, checked ------------------------------------------

    #[test]
    fn the_validator_accepts_documents_made_of_the_swaggers_own_examples() {
        for version in [2, 3] {
            let swagger = swagger(version);
            for name in ["mdminfo", "attributes", "action", "sendmessage"] {
                let (def_name, def) = response_definition(&swagger, name);
                let xml = cisco_example(&def);
                validate(&xml, version, true)
                    .unwrap_or_else(|e| panic!("v{version} {def_name}: {e}\n{xml}"));
            }
        }
    }

    #[test]
    fn the_validator_accepts_every_example_response_in_its_version() {
        let mut checked = 0;
        for entry in std::fs::read_dir(fixture_path("examples")).expect("examples") {
            let file = entry
                .expect("an entry")
                .file_name()
                .into_string()
                .expect("UTF-8");
            if !file.ends_with("-response.xml") {
                continue;
            }
            let xml = example(&file);
            let version: u8 = parsed(&xml)
                .text_at("api_version")
                .parse()
                .expect("a version");
            // Intune's real answer, copied into this example, puts
            // attributes/guid first; everything else follows Cisco's order.
            let in_order = file != "v3-noncompliant-guid-response.xml";
            validate(&xml, version, in_order).unwrap_or_else(|e| panic!("{file}: {e}"));
            checked += 1;
        }
        assert_eq!(checked, 12, "every *-response.xml was checked");
        let out_of_order = validate(&example("v3-noncompliant-guid-response.xml"), 3, true);
        assert!(out_of_order
            .unwrap_err()
            .contains("register_status: out of the definition's order"));
    }

    #[test]
    fn the_validator_rejects_what_the_swagger_does_not_define() {
        let good = example("v2-noncompliant-page1-response.xml");
        validate(&good, 2, true).expect("the example is valid");
        let bad = |from: &str, to: &str| good.replacen(from, to, 1);
        let cases = [
            (
                bad("<register_status>", "<colour>red</colour><register_status>"),
                "colour: not defined",
            ),
            (
                bad("</compliance>", "</compliance><guid>x</guid>"),
                "guid: not defined",
            ),
            (
                bad(
                    "<deviceList>",
                    "<server_busy_wait_seconds>0</server_busy_wait_seconds><deviceList>",
                ),
                "server_busy_wait_seconds: not defined",
            ),
            (
                bad("<status>false</status>", "<status>False</status>"),
                "not a boolean",
            ),
            (
                bad("<register_status>true", "<register_status>yes"),
                "not a boolean",
            ),
            (
                bad(
                    "<paging_info>2</paging_info>",
                    "<paging_info>2.0</paging_info>",
                ),
                "not an integer",
            ),
            (
                bad(
                    "<name>attributes</name>",
                    "<name>attributes</name><name>attributes</name>",
                ),
                "name: repeated",
            ),
            (
                bad("<name>attributes</name>", "<name>devices</name>"),
                "no document is named",
            ),
            (
                bad(
                    "<api_version>2</api_version>",
                    "<api_version>3</api_version>",
                ),
                "api_version 3",
            ),
            (
                bad("<deviceList>", "<deviceList>stray text"),
                "text \"stray text",
            ),
            (
                bad(
                    "<register_status>true</register_status>",
                    "<register_status><b>true</b></register_status>",
                ),
                "holds elements",
            ),
        ];
        for (xml, expected) in cases {
            let error = validate(&xml, 2, false).expect_err(expected);
            assert!(
                error.contains(expected),
                "{error:?} should say {expected:?}"
            );
        }
        // Order: compliance before register_status.
        let swapped = good.replacen(
            "<register_status>true</register_status>\n        <compliance>\n          <status>false</status>\n          <failure_reason>Active threat: malicious app</failure_reason>\n          <remediation>Remove the flagged application</remediation>\n        </compliance>",
            "<compliance>\n          <status>false</status>\n          <failure_reason>Active threat: malicious app</failure_reason>\n          <remediation>Remove the flagged application</remediation>\n        </compliance>\n        <register_status>true</register_status>",
            1,
        );
        assert_ne!(swapped, good);
        assert!(validate(&swapped, 2, true)
            .unwrap_err()
            .contains("out of the definition's order"));
        assert!(validate(&swapped, 2, false).is_ok());
        // v3-only elements are fine in v3.
        let v3 = bad("</compliance>", "</compliance><guid>x</guid>")
            .replace("<api_version>2", "<api_version>3");
        assert!(validate(&v3, 3, false).is_ok());
    }

    #[test]
    fn the_widened_attributes_are_exactly_the_filter_tables() {
        let names = |version| {
            let mut schema = response_schema(version, "attributes");
            schema
                .properties(&["deviceList", "device", "attributes"])
                .iter()
                .map(|(n, _)| n.clone())
                .collect::<Vec<_>>()
        };
        let v2 = [
            "register_status",
            "compliance",
            "disk_encryption_on",
            "pin_lock_on",
            "jail_broken",
            "manufacturer",
            "model",
            "imei",
            "meid",
            "udid",
            "serial_number",
            "os_version",
            "phone_number",
        ];
        assert_eq!(names(2), v2);
        let mut v3 = v2.to_vec();
        v3.extend(["lastCheckinTimeStamp", "guid", "macaddresses"]);
        assert_eq!(names(3), v3);
    }

    // --- writing -----------------------------------------------------------

    #[test]
    fn every_document_of_every_version_is_valid_for_that_version() {
        for version in 1..=MAX_VERSION {
            let full = [
                full_device(mac("0026B424FEB4")),
                full_device(guid("3eeb9e62-cec9-4dd8-9dd6-74903695a62b")),
            ];
            let minimal = [
                minimal_device(mac("AABBCCDDEEFF")),
                minimal_device(guid("b537124a")),
            ];
            let documents = [
                mdm_info(&info(version)),
                attributes(version, 0, &full),
                attributes(version, 7, &minimal),
                attributes(version, 0, &[]),
                action_response(
                    version,
                    &[
                        ActionResult {
                            key: mac("0026B424FEB4"),
                            action_status: true,
                            failure_reason: None,
                        },
                        ActionResult {
                            key: guid("1759c0fd"),
                            action_status: false,
                            failure_reason: Some(TRICKY.into()),
                        },
                    ],
                ),
                action_response(version, &[]),
                message_response(
                    version,
                    &[
                        MessageResult::not_supported(mac("000000000000")),
                        MessageResult::not_supported(guid("1759c0fd")),
                    ],
                ),
            ];
            for xml in documents {
                assert!(
                    xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ise_api>"),
                    "{xml}"
                );
                assert_valid(&xml, version);
            }
        }
    }

    #[test]
    fn mdm_info_matches_the_examples_and_carries_vendor_and_product_in_every_version() {
        for version in [2, 3] {
            let ours = parsed(&mdm_info(&info(version)));
            let theirs = parsed(&example(&format!("v{version}-mdminfo-response.xml")));
            assert_eq!(ours.normalised(), theirs.normalised());
        }
        let v1 = parsed(&mdm_info(&info(1)));
        assert_eq!(v1.text_at("api_version"), "1");
        assert_eq!(v1.text_at("messaging_support"), "false");
        for element in ["vendor", "product_name", "product_version"] {
            assert!(v1.has(element), "{element}");
        }
    }

    #[test]
    fn mdm_info_values_round_trip_with_escaping() {
        let tricky = MdmInfo {
            redirect_url: "https://mtd.example.com/enroll?a=1&b=<2>&c=\"3\"".to_owned(),
            vendor: TRICKY.to_owned(),
            product_name: "Produkt „Ä“ 'x'".to_owned(),
            ..info(3)
        };
        let xml = mdm_info(&tricky);
        assert!(xml.contains("&amp;b=&lt;2&gt;"), "{xml}");
        let doc = parsed(&xml);
        assert_eq!(doc.text_at("redirect_url"), tricky.redirect_url);
        assert_eq!(doc.text_at("vendor"), TRICKY);
        assert_eq!(doc.text_at("product_name"), tricky.product_name);
        assert_eq!(doc.text_at("query_max_size"), "1000");
        // The versions are clamped to the ones we speak.
        assert_eq!(
            parsed(&mdm_info(&MdmInfo {
                api_version: 9,
                ..info(3)
            }))
            .text_at("api_version"),
            "3"
        );
        assert_eq!(
            parsed(&mdm_info(&MdmInfo {
                api_version: 0,
                ..info(3)
            }))
            .text_at("api_version"),
            "1"
        );
    }

    #[test]
    fn attributes_match_the_v2_examples_exactly() {
        let device = IseDevice {
            compliance: Compliance {
                status: false,
                failure_reason: Some("Active threat: malicious app com.example.trojan".into()),
                remediation: Some("Open the MTD app and remove the flagged application".into()),
            },
            disk_encryption_on: Some(true),
            pin_lock_on: Some(true),
            jail_broken: Some(false),
            manufacturer: Some("Apple".into()),
            model: Some("iPhone 14 Pro".into()),
            imei: Some("987654321098765".into()),
            meid: Some("B0123456789012".into()),
            udid: Some("00008020-0015784C218A402E".into()),
            serial_number: Some("F9GDX3RQQ1GC".into()),
            os_version: Some("iOS 17.3.1".into()),
            phone_number: Some("+1987654321".into()),
            // v3 only: not written in v2.
            last_checkin_ms: Some(1),
            guid: Some("not in v2".into()),
            macaddresses: vec!["0026B424FEB4".into()],
            ..minimal_device(mac("0026B424FEB4"))
        };
        let device = IseDevice {
            register_status: true,
            ..device
        };
        assert_eq!(
            parsed(&attributes(2, 0, &[device])).normalised(),
            parsed(&example("v2-devices-by-mac-response.xml")).normalised()
        );

        let noncompliant = |key: &str, reason: &str, remediation: &str| IseDevice {
            register_status: true,
            compliance: Compliance {
                status: false,
                failure_reason: Some(reason.into()),
                remediation: Some(remediation.into()),
            },
            ..minimal_device(mac(key))
        };
        let page = [
            noncompliant(
                "0026B424FEB4",
                "Active threat: malicious app",
                "Remove the flagged application",
            ),
            noncompliant("AABBCCDDEEFF", "Device is jailbroken", "Restore the OS"),
        ];
        assert_eq!(
            parsed(&attributes(2, 2, &page)).normalised(),
            parsed(&example("v2-noncompliant-page1-response.xml")).normalised()
        );
    }

    #[test]
    fn attributes_match_the_v3_examples() {
        let by_guid = IseDevice {
            register_status: true,
            compliance: Compliance {
                status: false,
                failure_reason: Some("Active threat: network MITM detected".into()),
                remediation: Some("Disconnect from the rogue Wi-Fi and open the MTD app".into()),
            },
            disk_encryption_on: Some(true),
            pin_lock_on: Some(true),
            jail_broken: Some(false),
            manufacturer: Some("Apple".into()),
            model: Some("iPad 8th Gen 10.2-inch (Wi-Fi Only)".into()),
            udid: Some("00008020-0015784C218A402E".into()),
            serial_number: Some("F9GDX3RQQ1GC".into()),
            os_version: Some("iOS 14.4".into()),
            phone_number: Some(String::new()),
            last_checkin_ms: Some(1_621_571_561_000),
            guid: Some("1759c0fd-c8da-49e8-b14f-19d85acfacea".into()),
            macaddresses: vec!["F434F0A1E478".into()],
            ..minimal_device(guid("1759c0fd-c8da-49e8-b14f-19d85acfacea"))
        };
        assert_eq!(
            parsed(&attributes(3, 0, &[by_guid])).normalised(),
            parsed(&example("v3-devices-by-guid-response.xml")).normalised()
        );

        let by_mac = IseDevice {
            register_status: true,
            disk_encryption_on: Some(true),
            pin_lock_on: Some(true),
            jail_broken: Some(false),
            os_version: Some("Android 14".into()),
            last_checkin_ms: Some(1_721_571_561_000),
            guid: Some("5d0c1a2b-0f3e-4c1a-9a57-0c2f6a1b7e11".into()),
            ..minimal_device(mac("F434F0A1E478"))
        };
        // The example leaves out server_busy_wait_seconds, which we send as 0.
        let ours = parsed(&attributes(3, 0, &[by_mac]));
        assert_eq!(ours.text_at("server_busy_wait_seconds"), "0");
        assert_eq!(
            ours.without("server_busy_wait_seconds").normalised(),
            parsed(&example("v3-devices-by-mac-response.xml")).normalised()
        );
    }

    #[test]
    fn an_unknown_device_gets_an_empty_device_list() {
        for version in 1..=MAX_VERSION {
            let xml = attributes(version, 0, &[]);
            assert!(xml.contains("<deviceList></deviceList>"), "{xml}");
            assert_eq!(parsed(&xml).at("deviceList").children, vec![]);
        }
        assert_eq!(
            parsed(&attributes(3, 0, &[]))
                .without("server_busy_wait_seconds")
                .normalised(),
            parsed(&example("v2-v3-devices-unknown-response.xml")).normalised()
        );
    }

    #[test]
    fn v3_only_elements_appear_in_v3_alone() {
        let devices = [full_device(mac("0026B424FEB4"))];
        for version in [1, 2] {
            let names = parsed(&attributes(version, 0, &devices)).names();
            for element in V3_ONLY {
                assert!(!names.contains(element), "v{version} has <{element}>");
            }
            assert!(names.contains("imei") && names.contains("meid") && names.contains("model"));
        }
        let v3 = parsed(&attributes(3, 0, &devices));
        for element in V3_ONLY {
            assert!(v3.names().contains(element), "v3 lacks <{element}>");
        }
        let attrs = v3.at("deviceList/device/attributes");
        assert_eq!(attrs.text_at("lastCheckinTimeStamp"), "1721571561000");
        assert_eq!(
            attrs.text_at("guid"),
            "1759c0fd-c8da-49e8-b14f-19d85acfacea"
        );
        assert_eq!(attrs.text_at("macaddresses"), "F434F0A1E478,0026B424FEB4");
    }

    #[test]
    fn a_guid_keyed_device_has_no_key_before_v3() {
        for version in [1, 2] {
            let xml = attributes(version, 0, &[full_device(guid("1759c0fd"))]);
            let device = parsed(&xml).at("deviceList/device").clone();
            assert_eq!(
                device
                    .children
                    .iter()
                    .map(|c| c.name.as_str())
                    .collect::<Vec<_>>(),
                ["attributes"]
            );
            assert!(!xml.contains("1759c0fd"), "{xml}");
        }
        let v3 = parsed(&attributes(3, 0, &[full_device(guid("1759c0fd"))]));
        assert_eq!(v3.text_at("deviceList/device/guid"), "1759c0fd");
        let v3_mac = parsed(&attributes(3, 0, &[minimal_device(mac("0026B424FEB4"))]));
        assert_eq!(
            v3_mac.text_at("deviceList/device/macaddress"),
            "0026B424FEB4"
        );
    }

    #[test]
    fn every_attribute_value_round_trips_through_a_parser() {
        for version in 1..=MAX_VERSION {
            let device = full_device(mac("0026B424FEB4"));
            let doc = parsed(&attributes(version, 3, std::slice::from_ref(&device)));
            assert_eq!(doc.text_at("paging_info"), "3");
            let a = doc.at("deviceList/device/attributes");
            assert_eq!(a.text_at("register_status"), "true");
            assert_eq!(a.text_at("compliance/status"), "false");
            assert_eq!(a.text_at("compliance/failure_reason"), TRICKY);
            assert_eq!(
                a.text_at("compliance/remediation"),
                device.compliance.remediation.as_deref().unwrap()
            );
            assert_eq!(a.text_at("disk_encryption_on"), "true");
            assert_eq!(a.text_at("pin_lock_on"), "false");
            assert_eq!(a.text_at("jail_broken"), "true");
            assert_eq!(a.text_at("manufacturer"), "Apple & Sons <Ltd>");
            assert_eq!(a.text_at("model"), "iPhone 15 Pro \"Max\"");
            assert_eq!(a.text_at("imei"), "987654321098765");
            assert_eq!(a.text_at("meid"), "B0123456789012");
            assert_eq!(a.text_at("udid"), "00008020-0015784C218A402E");
            assert_eq!(a.text_at("serial_number"), "F9GDX3RQQ1GC");
            assert_eq!(a.text_at("os_version"), "iOS 17.3.1");
            assert_eq!(a.text_at("phone_number"), "+49 (0) 30 1234");
        }
    }

    #[test]
    fn a_minimal_device_carries_only_its_key_registration_and_compliance() {
        for version in 1..=MAX_VERSION {
            let doc = parsed(&attributes(
                version,
                0,
                &[minimal_device(mac("AABBCCDDEEFF"))],
            ));
            let device = doc.at("deviceList/device");
            assert_eq!(device.text_at("macaddress"), "AABBCCDDEEFF");
            let names: Vec<_> = device
                .at("attributes")
                .children
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(names, ["register_status", "compliance"]);
            let compliance: Vec<_> = device
                .at("attributes/compliance")
                .children
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            assert_eq!(compliance, ["status"]);
            assert_eq!(device.text_at("attributes/register_status"), "false");
        }
    }

    #[test]
    fn blank_values_are_left_out_and_macaddresses_stop_at_five() {
        let device = IseDevice {
            manufacturer: Some("  ".into()),
            compliance: Compliance {
                status: false,
                failure_reason: Some(String::new()),
                remediation: None,
            },
            macaddresses: (0..8)
                .map(|i| format!("00000000000{i}"))
                .chain([String::new()])
                .collect(),
            ..minimal_device(guid("g"))
        };
        let doc = parsed(&attributes(3, 0, &[device]));
        let a = doc.at("deviceList/device/attributes");
        assert!(!a.has("manufacturer") && !a.has("compliance/failure_reason"));
        assert_eq!(
            a.text_at("macaddresses"),
            "000000000000,000000000001,000000000002,000000000003,000000000004"
        );
        let none = IseDevice {
            macaddresses: vec![" ".into()],
            ..minimal_device(guid("g"))
        };
        assert!(!parsed(&attributes(3, 0, &[none]))
            .at("deviceList/device/attributes")
            .has("macaddresses"));
    }

    #[test]
    fn characters_xml_cannot_carry_become_replacement_characters() {
        let device = IseDevice {
            manufacturer: Some("A\u{0}B\u{1b}[31mC\u{FFFE}\tD".into()),
            ..minimal_device(mac("AABBCCDDEEFF\u{7}"))
        };
        let xml = attributes(3, 0, &[device]);
        assert!(
            !xml.chars()
                .any(|c| c.is_control() && !matches!(c, '\t' | '\n' | '\r' | '\u{7f}'..='\u{9f}')),
            "{xml:?}"
        );
        let doc = parsed(&xml);
        assert_eq!(
            doc.text_at("deviceList/device/attributes/manufacturer"),
            "A\u{FFFD}B\u{FFFD}[31mC\u{FFFD}\tD"
        );
        assert_eq!(
            doc.text_at("deviceList/device/macaddress"),
            "AABBCCDDEEFF\u{FFFD}"
        );
    }

    #[test]
    fn action_responses_match_the_examples() {
        let not_supported = |key| ActionResult {
            key,
            action_status: false,
            failure_reason: Some("Action not supported by this server".into()),
        };
        assert_eq!(
            parsed(&action_response(2, &[not_supported(mac("0026B424FEB4"))])).normalised(),
            parsed(&example("v2-action-response.xml")).normalised()
        );
        assert_eq!(
            parsed(&action_response(
                3,
                &[not_supported(guid("1759c0fd-c8da-49e8-b14f-19d85acfacea"))]
            ))
            .normalised(),
            parsed(&example("v3-action-response.xml")).normalised()
        );
        let accepted = parsed(&action_response(
            3,
            &[ActionResult {
                key: mac("0026B424FEB4"),
                action_status: true,
                failure_reason: None,
            }],
        ));
        let device = accepted.at("deviceList/device");
        assert_eq!(device.text_at("macaddress"), "0026B424FEB4");
        assert_eq!(device.text_at("result/action_status"), "true");
        assert!(!device.has("result/failure_reason"));
        let reason = parsed(&action_response(
            2,
            &[ActionResult {
                key: mac("0026B424FEB4"),
                action_status: false,
                failure_reason: Some(TRICKY.into()),
            }],
        ));
        assert_eq!(
            reason.text_at("deviceList/device/result/failure_reason"),
            TRICKY
        );
    }

    #[test]
    fn message_responses_say_messaging_is_not_supported() {
        for version in 1..=MAX_VERSION {
            let doc = parsed(&message_response(
                version,
                &[
                    MessageResult::not_supported(mac("000000000000")),
                    MessageResult::not_supported(mac("111111111111")),
                ],
            ));
            assert_eq!(doc.text_at("name"), "sendmessage");
            let devices = &doc.at("deviceList").children;
            assert_eq!(devices.len(), 2);
            for (device, key) in devices.iter().zip(["000000000000", "111111111111"]) {
                assert_eq!(device.text_at("macaddress"), key);
                assert_eq!(device.text_at("result/message_status"), "false");
                assert_eq!(
                    device.text_at("result/failure_reason"),
                    "messaging is not supported"
                );
            }
        }
        let v3 = parsed(&message_response(
            3,
            &[MessageResult::not_supported(guid(
                "1759c0fd-c8da-49e8-b14f-19d85acfacea",
            ))],
        ));
        let shape = parsed(&example("v3-sendmessage-response.xml"));
        assert_eq!(
            v3.at("deviceList/device").text_at("guid"),
            shape.text_at("deviceList/device/guid")
        );
        let sent = parsed(&message_response(
            3,
            &[MessageResult {
                key: guid("g"),
                message_status: true,
                failure_reason: None,
            }],
        ));
        assert_eq!(
            sent.text_at("deviceList/device/result/message_status"),
            "true"
        );
    }

    // --- reading -----------------------------------------------------------

    #[test]
    fn the_example_requests_are_read_with_their_identifiers() {
        assert_eq!(
            parse_action_request(example("v2-action-request.xml").as_bytes()),
            Ok(vec![Identifier::MacAddress("0026B424FEB4".into())])
        );
        assert_eq!(
            parse_action_request(example("v3-action-request.xml").as_bytes()),
            Ok(vec![Identifier::Guid(
                "1759c0fd-c8da-49e8-b14f-19d85acfacea".into()
            )])
        );
        assert_eq!(
            parse_message_request(example("v2-sendmessage-request.xml").as_bytes()),
            Ok(vec![
                Identifier::MacAddress("000000000000".into()),
                Identifier::MacAddress("111111111111".into()),
            ])
        );
        assert_eq!(
            parse_message_request(example("v3-sendmessage-request.xml").as_bytes()),
            Ok(vec![Identifier::Guid(
                "1759c0fd-c8da-49e8-b14f-19d85acfacea".into()
            )])
        );
        assert_eq!(
            parse_batch_request(example("v2-batchdevices-request.xml").as_bytes()),
            Ok(vec!["3408BC507C78".to_owned(), "0026B424FEB4".to_owned()])
        );
    }

    #[test]
    fn identifiers_are_read_leniently() {
        let body = br#"<?xml version="1.0"?>
            <!-- ISE -->
            <ns:ISE_API xmlns:ns="urn:x">
              <ns:Identifier>
                <MacAddress> 00:26:b4:24:fe:b4 </MacAddress>
                <guid><![CDATA[1759C0FD]]>-&#x41;&amp;</guid>
                <guidhn>host.example.com</guidhn>
                <udid>u</udid><imei>i</imei><meid>m</meid>
                <serialnumber>s</serialnumber><username>alice</username>
                <macaddress>not-a-mac</macaddress>
                <macaddress>0026B424FEB4</macaddress>
                <colour>red</colour>
                <guid></guid>
              </ns:Identifier>
              <guid>outside any identifier</guid>
            </ns:ISE_API>"#;
        assert_eq!(
            parse_action_request(body),
            Ok(vec![
                Identifier::MacAddress("0026B424FEB4".into()),
                Identifier::Guid("1759C0FD-A&".into()),
                Identifier::Hostname("host.example.com".into()),
                Identifier::Udid("u".into()),
                Identifier::Imei("i".into()),
                Identifier::Meid("m".into()),
                Identifier::SerialNumber("s".into()),
                Identifier::Username("alice".into()),
                Identifier::MacAddress("not-a-mac".into()),
            ])
        );
        let guid_id = Identifier::Guid("g".into());
        assert_eq!((guid_id.value(), guid_id.element()), ("g", "guid"));
        assert_eq!(guid_id.device_key(), Some(DeviceKey::Guid("g".into())));
        assert_eq!(Identifier::Udid("u".into()).device_key(), None);
        assert_eq!(Identifier::Hostname("h".into()).element(), "guidhn");
    }

    #[test]
    fn a_batch_request_yields_every_value_and_defensively_macs_and_guids() {
        let body = b"<ise_api><value> A </value><values><value>B</value></values>\
            <identifier><macaddress>C</macaddress><guid>D</guid></identifier><value>A</value><value/></ise_api>";
        assert_eq!(
            parse_batch_request(body),
            Ok(vec!["A".into(), "B".into(), "C".into(), "D".into()])
        );
        assert_eq!(parse_batch_request(b"<ise_api/>"), Ok(vec![]));
    }

    #[test]
    fn malformed_requests_are_errors_with_clear_messages() {
        let deep = format!(
            "<ise_api>{}{}</ise_api>",
            "<a>".repeat(10_000),
            "</a>".repeat(10_000)
        );
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "empty body: no XML element"),
            (b"  \r\n\t ".to_vec(), "empty body"),
            (b"<?xml version=\"1.0\"?><!-- nothing -->".to_vec(), "empty body"),
            (b"hello".to_vec(), "not XML at line 1:"),
            (b"{\"identifier\": \"x\"}".to_vec(), "not XML at line 1:"),
            (b"<foo><identifier><guid>g</guid></identifier></foo>".to_vec(), "root element is <foo>, expected <ise_api>"),
            (b"<ise_api>\n  <identifier>\n</ise_api>".to_vec(), "not XML at line 3:"),
            (b"<ise_api><identifier><guid>g</guid></identifier>".to_vec(), "the document ends inside <ise_api>"),
            (b"<ise_api></ise_api><ise_api></ise_api>".to_vec(), "a second root element"),
            (b"<ise_api></ise_api>trailing".to_vec(), "text outside the root element"),
            (b"<ise_api><guid>&bomb;</guid></ise_api>".to_vec(), "unknown entity &bomb;"),
            (b"<ise_api><guid>&#0;</guid></ise_api>".to_vec(), "not XML"),
            (b"<!DOCTYPE ise_api [<!ENTITY a \"aaaa\">]><ise_api/>".to_vec(), "a DOCTYPE declaration is not accepted"),
            (b"<ise_api><identifier a=\"1\" a=\"2\"/></ise_api>".to_vec(), "not XML"),
            (b"<ise_api><identifier><guid>\xff\xfe</guid></identifier></ise_api>".to_vec(), "not XML"),
            (b"\x00\x01\x02\xff<<>>&&;;".to_vec(), "not XML"),
            (deep.into_bytes(), "elements nested deeper than 32 levels"),
            (b"<ise_api><identifier><colour>red</colour><guid> </guid></identifier><guid>g</guid></ise_api>".to_vec(), "no identifier"),
            (b"<ise_api/>".to_vec(), "no identifier"),
        ];
        for (body, expected) in cases {
            let shown = String::from_utf8_lossy(&body)
                .chars()
                .take(80)
                .collect::<String>();
            let error = parse_action_request(&body).expect_err(&shown).to_string();
            assert!(
                error.contains(expected),
                "{shown:?}: {error:?} should say {expected:?}"
            );
            if expected != "no identifier" {
                assert_eq!(
                    parse_batch_request(&body).map_err(|e| e.to_string()),
                    Err(error.clone()),
                    "{shown:?}"
                );
                assert_eq!(
                    parse_message_request(&body).map_err(|e| e.to_string()),
                    Err(error),
                    "{shown:?}"
                );
            }
        }
        let long_root = format!("<{}/>", "x".repeat(500));
        assert_eq!(
            parse_batch_request(long_root.as_bytes()),
            Err(XmlError::WrongRoot {
                found: format!("{}…", "x".repeat(40))
            })
        );
    }

    #[test]
    fn a_utf8_bom_and_a_prolog_are_fine() {
        let body = [
            b"\xEF\xBB\xBF".as_slice(),
            example("v3-action-request.xml").as_bytes(),
        ]
        .concat();
        assert_eq!(parse_action_request(&body).map(|ids| ids.len()), Ok(1));
        assert_eq!(request_xml(Some("application/xml"), &body), body.as_slice());
    }

    #[test]
    fn the_xml_of_a_multipart_request_is_its_first_part() {
        let xml = example("v3-action-request.xml");
        let crlf = format!(
            "preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"xml\"\r\nContent-Type: application/xml\r\n\r\n{xml}\r\n--XyZ\r\nContent-Disposition: form-data; name=\"other\"\r\n\r\nnot xml\r\n--XyZ--\r\n"
        );
        for content_type in [
            "multipart/form-data; boundary=XyZ",
            "Multipart/Form-Data;charset=UTF-8; BOUNDARY=\"XyZ\"",
        ] {
            let part = request_xml(Some(content_type), crlf.as_bytes());
            assert_eq!(part, xml.as_bytes(), "{content_type}");
        }
        let lf = format!("--b\nContent-Disposition: form-data; name=\"a\"\n\n{xml}\n--b--\n");
        assert_eq!(
            request_xml(Some("multipart/form-data; boundary=b"), lf.as_bytes()),
            xml.as_bytes()
        );
        let no_headers = format!("--b\r\n\r\n{xml}\r\n--b--");
        assert_eq!(
            request_xml(
                Some("multipart/form-data; boundary=b"),
                no_headers.as_bytes()
            ),
            xml.as_bytes()
        );
        assert_eq!(
            parse_action_request(request_xml(
                Some("multipart/form-data; boundary=XyZ"),
                crlf.as_bytes()
            )),
            Ok(vec![Identifier::Guid(
                "1759c0fd-c8da-49e8-b14f-19d85acfacea".into()
            )])
        );

        // Everything else is the body as it came.
        let plain = xml.as_bytes();
        for content_type in [
            None,
            Some("application/xml"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=b"),
        ] {
            assert_eq!(request_xml(content_type, plain), plain);
        }
        for (content_type, body) in [
            ("multipart/form-data", crlf.as_str()),
            ("multipart/form-data; boundary=", crlf.as_str()),
            ("multipart/form-data; boundary=nope", crlf.as_str()),
            ("text/plain; boundary=XyZ", crlf.as_str()),
            ("multipart/form-data; boundary=b", "--b--\r\n"),
            (
                "multipart/form-data; boundary=b",
                "--b\r\nX: y\r\n\r\nno end",
            ),
            ("multipart/form-data; boundary=b", "--b"),
            ("multipart/form-data; boundary=b", ""),
        ] {
            assert_eq!(
                request_xml(Some(content_type), body.as_bytes()),
                body.as_bytes(),
                "{content_type} {body:?}"
            );
        }
    }

    #[test]
    fn macs_are_normalised_from_any_common_form() {
        for input in [
            "0026B424FEB4",
            "0026b424feb4",
            "00:26:b4:24:fe:b4",
            "00-26-B4-24-FE-B4",
            "0026.b424.feb4",
            " 00 26 b4 24 fe b4 ",
            "00:26-b4.24 fe\tb4",
            "0026B424FEB4:",
        ] {
            assert_eq!(
                normalise_mac(input).as_deref(),
                Some("0026B424FEB4"),
                "{input:?}"
            );
        }
        for input in [
            "",
            "::",
            "0026B424FEB",
            "0026B424FEB4A",
            "0026B424FEBG",
            "00/26/B4/24/FE/B4",
            "0x0026B424FEB4",
            "００26B424FEB4",
            "0026B424FEB4\u{0}",
            "1759c0fd-c8da-49e8-b14f-19d85acfacea",
        ] {
            assert_eq!(normalise_mac(input), None, "{input:?}");
        }
    }

    // --- properties ----------------------------------------------------------

    /// Text the way a conformant reader returns what `clean` wrote.
    fn as_read(s: &str) -> String {
        clean(s).into_owned()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn no_byte_string_makes_a_reader_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_action_request(&body);
            let _ = parse_batch_request(&body);
            let _ = parse_message_request(&body);
            let _ = request_xml(Some("multipart/form-data; boundary=a"), &body);
        }

        #[test]
        fn no_xml_like_soup_makes_a_reader_panic(
            tokens in proptest::collection::vec(
                prop_oneof![
                    Just("<ise_api>".to_owned()), Just("</ise_api>".to_owned()),
                    Just("<identifier>".to_owned()), Just("</identifier>".to_owned()),
                    Just("<guid>".to_owned()), Just("</guid>".to_owned()),
                    Just("<macaddress/>".to_owned()), Just("<![CDATA[".to_owned()), Just("]]>".to_owned()),
                    Just("<!--".to_owned()), Just("-->".to_owned()), Just("<?xml version=\"1.0\"?>".to_owned()),
                    Just("<!DOCTYPE x>".to_owned()), Just("&amp;".to_owned()), Just("&#x1F600;".to_owned()),
                    Just("&#xD800;".to_owned()), Just("&".to_owned()), Just("\"".to_owned()),
                    "[a-z:_ =\"'<>/]{0,6}",
                    "\\PC{0,4}",
                ],
                0..40,
            )
        ) {
            let body = tokens.concat();
            let _ = parse_action_request(body.as_bytes());
            let _ = parse_batch_request(body.as_bytes());
            let _ = parse_message_request(body.as_bytes());
        }

        #[test]
        fn any_text_round_trips_and_stays_valid(
            version in 1..=MAX_VERSION,
            reason in any::<String>(),
            model in "\\PC{0,30}",
            // The validator reads Swagger's `integer` as 64-bit, as ISE
            // (Java) would at best.
            paging in 0..=i64::MAX.unsigned_abs(),
        ) {
            let device = IseDevice {
                compliance: Compliance { status: false, failure_reason: Some(reason.clone()), remediation: None },
                model: Some(model.clone()),
                ..minimal_device(mac("0026B424FEB4"))
            };
            let xml = attributes(version, paging, &[device]);
            prop_assert!(validate(&xml, version, true).is_ok(), "{:?}", validate(&xml, version, true));
            let doc = tree(&xml).map_err(TestCaseError::fail)?;
            prop_assert_eq!(doc.text_at("paging_info"), paging.to_string());
            let a = doc.at("deviceList/device/attributes");
            for (path, value) in [("compliance/failure_reason", &reason), ("model", &model)] {
                if value.trim().is_empty() {
                    prop_assert!(!a.has(path));
                } else {
                    prop_assert_eq!(a.text_at(path), as_read(value));
                }
            }
        }

        #[test]
        fn normalised_macs_are_twelve_upper_case_hex_digits(s in "[0-9a-fA-F:. -]{0,20}|\\PC{0,14}") {
            if let Some(mac) = normalise_mac(&s) {
                prop_assert_eq!(mac.len(), 12);
                prop_assert!(mac.chars().all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)));
                prop_assert_eq!(normalise_mac(&mac), Some(mac.clone()));
                let digits: String = s.chars().filter(char::is_ascii_hexdigit).collect();
                prop_assert_eq!(digits.to_ascii_uppercase(), mac);
            }
        }
    }
}
