//! Issue 18: Cisco ISE's view of the connector, through an ISE stand-in
//! that does what ISE does (mdminfo, a device by MAC address, the
//! non-compliant listing page by page, an action) over HTTP with Basic
//! credentials; every answer is checked against the element names and
//! types of Cisco's Swagger document for the version asked.

use crate::support::*;
use mtd_sim::SimKind;
use serde_json::{json, Value};
use std::time::Duration;

#[path = "../../src/ise/spec_check.rs"]
mod spec_check;

const ACME: &str = "acme";
const BETA: &str = "beta";
const ACME_ISE: (&str, &str) = ("ise-acme", "acme-ise-password-0123");
const BETA_ISE: (&str, &str) = ("ise-beta", "beta-ise-password-4567");

use spec_check::Node;

/// Reads an answer (any XML error fails the test).
fn parse(xml: &str) -> Node {
    let root = spec_check::parsed(xml);
    assert_eq!(root.name, "ise_api", "{xml}");
    root
}

/// The trimmed text at `a/b/c` under `node`, if there is such an element.
fn text_of(node: &Node, path: &str) -> Option<String> {
    let mut n = node;
    for part in path.split('/') {
        n = n.child(part)?;
    }
    Some(n.text.trim().to_string())
}

/// The `<device>` elements of a document's `<deviceList>`.
fn devices(doc: &Node) -> Vec<Node> {
    doc.child("deviceList")
        .map(|l| {
            l.children
                .iter()
                .filter(|c| c.name == "device")
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// Checks an answer against Cisco's Swagger for `version` (elements in
/// the definition's order) and that it is the document `name`.
fn check(version: u8, name: &str, xml: &str) -> Result<(), String> {
    spec_check::validate(xml, version, true)?;
    match text_of(&parse(xml), "name") {
        Some(n) if n == name => Ok(()),
        other => Err(format!("a {other:?} document, not {name}")),
    }
}

/// What ISE does, as a client.
struct IseClient {
    base: String,
    user: String,
    password: String,
    http: reqwest::Client,
}

impl IseClient {
    fn new(app: &TestApp, (user, password): (&str, &str)) -> IseClient {
        IseClient {
            base: format!("http://{}", app.addr),
            user: user.into(),
            password: password.into(),
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&str>) -> (u16, String) {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(&self.user, Some(&self.password))
            .header("Accept", "application/xml");
        if let Some(body) = body {
            r = r
                .header("Content-Type", "application/xml")
                .body(body.to_string());
        }
        let r = r.send().await.expect("the daemon answers");
        let status = r.status().as_u16();
        if status == 200 {
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            assert!(ct.starts_with("application/xml"), "{ct}");
        }
        (status, r.text().await.unwrap())
    }

    /// A GET that must succeed, its answer validated against the version's Swagger.
    async fn get_valid(&self, version: u8, name: &str, path: &str) -> Node {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {body}");
        check(version, name, &body)
            .unwrap_or_else(|e| panic!("{path}: not Cisco's v{version} {name}: {e}\n{body}"));
        parse(&body)
    }

    /// `mdminfo`, then the api_path it names.
    async fn mdminfo(&self, version: u8) -> (Node, String) {
        let path = if version == 1 {
            "/ciscoise/mdminfo".to_string()
        } else {
            format!("/ciscoise/mdminfo/?ise_api_version={version}")
        };
        let doc = self.get_valid(version, "mdminfo", &path).await;
        let api_path = text_of(&doc, "api_path").expect("an api_path");
        (doc, api_path)
    }

    async fn by_mac(&self, version: u8, mac: &str) -> Vec<Node> {
        let (_, api) = self.mdminfo(version).await;
        let doc = self
            .get_valid(
                version,
                "attributes",
                &format!("{api}/devices/?paging=0&querycriteria=macaddress&value={mac}&filter=all"),
            )
            .await;
        devices(&doc)
    }

    /// The whole non-compliant listing, following `paging_info`.
    async fn noncompliant(&self, version: u8) -> Vec<Node> {
        let (_, api) = self.mdminfo(version).await;
        let mut paging = "0".to_string();
        let mut all = Vec::new();
        for _ in 0..1000 {
            let doc = self
                .get_valid(
                    version,
                    "attributes",
                    &format!("{api}/devices/?paging={paging}&querycriteria=compliance&value=false&filter=all"),
                )
                .await;
            all.extend(devices(&doc));
            match text_of(&doc, "paging_info").as_deref() {
                None | Some("0") => return all,
                Some(next) => paging = next.to_string(),
            }
        }
        panic!("the listing does not end");
    }

    async fn action(&self, version: u8, action_type: &str, mac: &str) -> Node {
        let (_, api) = self.mdminfo(version).await;
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ise_api><identifier><macaddress>{mac}</macaddress></identifier></ise_api>"
        );
        let path = format!("{api}/action/actionType={action_type}");
        let (status, answer) = self.send(reqwest::Method::POST, &path, Some(&body)).await;
        assert_eq!(status, 200, "{path}: {answer}");
        check(version, "action", &answer)
            .unwrap_or_else(|e| panic!("not Cisco's v{version} action response: {e}\n{answer}"));
        parse(&answer)
    }
}

/// acme: an AirWatch MDM (its devices have MAC addresses and ownership);
/// beta: a SOTI MDM. Both with ISE credentials, ISE enabled.
async fn two_tenants(devices: usize, acme_policy: &str) -> (Env, TestApp) {
    let env = Env::new(&[SimKind::Airwatch, SimKind::Soti], devices).await;
    let acme = MdmSpec {
        extra: "[mdm.permit]\nlock = true\nenterprise_wipe = true\nwipe = true\n".into(),
        ..MdmSpec::new(SimKind::Airwatch)
    };
    let main = env.write_config(ACME, &[acme], "0", acme_policy);
    let root = env.dir.path();
    append(&main, "[ise]\nenabled = true\n");
    append(
        &root.join("tenants.d/acme.toml"),
        &format!(
            "\n[ise]\nusername = \"{}\"\npassword = \"{}\"\nnoncompliant_at = \"high\"\n",
            ACME_ISE.0, ACME_ISE.1
        ),
    );
    std::fs::write(
        root.join("tenants.d/beta.toml"),
        format!(
            "id = \"{BETA}\"\nagent_secret = \"{AGENT_SECRET}\"\n\n[[mdm]]\nname = \"Beta SOTI\"\nkind = \"soti\"\nurl = \"{}\"\n{}\n[ise]\nusername = \"{}\"\npassword = \"{}\"\n",
            env.sim.base_url(SimKind::Soti),
            credentials(SimKind::Soti),
            BETA_ISE.0,
            BETA_ISE.1
        ),
    )
    .unwrap();
    let app = spawn_app(&main).await;
    for (tenant, name) in [(ACME, "Test AIRWATCH"), (BETA, "Beta SOTI")] {
        let id = app.mdm_id(tenant, name).await;
        app.finished_runs(id, 1, Duration::from_secs(30)).await;
    }
    (env, app)
}

fn append(path: &std::path::Path, text: &str) {
    let mut s = std::fs::read_to_string(path).unwrap();
    s.push_str(text);
    std::fs::write(path, s).unwrap();
}

/// AirWatch devices of the simulator that it reports compliant (so that
/// only the connector's risk level decides what ISE is told): (udid, MAC as
/// ISE sends it, ownership).
fn airwatch_devices(env: &Env) -> Vec<(String, String, String)> {
    env.sim
        .airwatch()
        .unwrap()
        .devices()
        .iter()
        .filter(|d| d["ComplianceStatus"].as_str() == Some("Compliant"))
        .filter_map(|d| {
            Some((
                d["Udid"].as_str()?.to_string(),
                d["MacAddress"].as_str()?.to_ascii_uppercase(),
                d["Ownership"].as_str().unwrap_or("").to_string(),
            ))
        })
        .filter(|(_, mac, _)| mac.len() == 12)
        .collect()
}

async fn post_event(app: &TestApp, id: &str, udid: &str, severity: &str, status: &str) {
    let body = json!({"events": [{
        "event_id": id,
        "detected_at": chrono::Utc::now().to_rfc3339(),
        "device": {"udid": udid},
        "threat": {"type": "network.arp_mitm", "severity": severity, "status": status}
    }]});
    let r = post_signed(app, "/v1/agent/events", ACME, body.to_string().as_bytes()).await;
    assert_eq!(r.status, 202, "{}", r.text);
}

fn status_of(d: &Node) -> String {
    text_of(d, "attributes/compliance/status").expect("compliance/status")
}

#[tokio::test]
async fn an_open_high_threat_makes_the_device_noncompliant_to_its_own_tenants_ise_only() {
    let (env, app) = two_tenants(12, "").await;
    let (udid, mac, _) = airwatch_devices(&env)[0].clone();
    let acme = IseClient::new(&app, ACME_ISE);
    let beta = IseClient::new(&app, BETA_ISE);

    for version in [1, 2, 3] {
        let (info, api) = acme.mdminfo(version).await;
        assert_eq!(text_of(&info, "api_version").unwrap(), version.to_string());
        assert_eq!(api, format!("/ciscoise/mdmapi/v{version}"));
        let found = acme.by_mac(version, &mac).await;
        assert_eq!(found.len(), 1, "v{version}");
        assert_eq!(status_of(&found[0]), "true", "v{version}");
        assert_eq!(
            text_of(&found[0], "attributes/register_status").unwrap(),
            "true"
        );
    }
    // A higher version than ours is answered with ours.
    let (info, _) = acme.mdminfo(3).await;
    let (status, body) = acme
        .send(
            reqwest::Method::GET,
            "/ciscoise/mdminfo/?ise_api_version=7",
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(text_of(&parse(&body), "api_version").unwrap(), "3");
    for name in ["vendor", "product_name", "product_version"] {
        assert!(!text_of(&info, name).unwrap().is_empty(), "{name}");
    }
    assert!(acme
        .noncompliant(3)
        .await
        .iter()
        .all(|d| text_of(d, "macaddress") != Some(mac.clone())));

    post_event(&app, "ise-1", &udid, "high", "detected").await;
    for version in [1, 2, 3] {
        let found = acme.by_mac(version, &mac).await;
        assert_eq!(status_of(&found[0]), "false", "v{version}");
        let reason = text_of(&found[0], "attributes/compliance/failure_reason").unwrap();
        assert!(reason.contains("network.arp_mitm"), "{reason}");
        assert!(!text_of(&found[0], "attributes/compliance/remediation")
            .unwrap()
            .is_empty());
        // The MAC in any case and separator form finds it too.
        let dashed: String = mac
            .to_ascii_lowercase()
            .as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("-");
        assert_eq!(acme.by_mac(version, &dashed).await.len(), 1, "{dashed}");
    }
    let listed = acme.noncompliant(2).await;
    assert!(listed
        .iter()
        .any(|d| text_of(d, "macaddress").as_deref() == Some(mac.as_str())));
    // Another tenant's ISE never sees it: 200 with an empty list.
    for version in [1, 2, 3] {
        assert!(beta.by_mac(version, &mac).await.is_empty(), "v{version}");
        assert!(beta
            .noncompliant(version)
            .await
            .iter()
            .all(|d| text_of(d, "macaddress").as_deref() != Some(mac.as_str())));
    }

    post_event(&app, "ise-2", &udid, "high", "resolved").await;
    for version in [1, 2, 3] {
        assert_eq!(
            status_of(&acme.by_mac(version, &mac).await[0]),
            "true",
            "v{version}"
        );
    }
    assert!(acme
        .noncompliant(3)
        .await
        .iter()
        .all(|d| text_of(d, "macaddress").as_deref() != Some(mac.as_str())));
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_401_without_detail_and_are_counted() {
    let (_env, app) = two_tenants(4, "").await;
    let client = reqwest::Client::new();
    let url = format!("http://{}/ciscoise/mdminfo/?ise_api_version=3", app.addr);
    for request in [
        client.get(&url),
        client.get(&url).basic_auth(ACME_ISE.0, Some("wrong")),
        client.get(&url).basic_auth("nobody", Some(ACME_ISE.1)),
        // The password of another tenant's user name.
        client.get(&url).basic_auth(ACME_ISE.0, Some(BETA_ISE.1)),
        client
            .get(&url)
            .header("Authorization", "Basic !!!not-base64"),
        client.get(&url).bearer_auth(ADMIN_TOKEN),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
        assert_eq!(r.text().await.unwrap(), "");
    }
    let metrics = reqwest::get(format!("http://{}/metrics", app.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "mtd_ise_auth_failures_total 6"),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_noncompliant_listing_pages_through_every_device_at_risk_once() {
    let (env, app) = two_tenants(40, "").await;
    let aw_devices = airwatch_devices(&env);
    assert!(aw_devices.len() >= 30, "{}", aw_devices.len());
    // 25 devices at risk; query_max_size is 1,000 by default, so shrink it.
    let main = env.dir.path().join("connector.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    assert!(text.contains("[ise]\nenabled = true\n"));
    drop(app);
    std::fs::write(
        &main,
        text.replace(
            "[ise]\nenabled = true\n",
            "[ise]\nenabled = true\nquery_max_size = 7\n",
        ),
    )
    .unwrap();
    let app = spawn_app(&main).await;
    let at_risk: Vec<&(String, String, String)> = aw_devices.iter().take(25).collect();
    for (i, (udid, _, _)) in at_risk.iter().enumerate() {
        post_event(&app, &format!("page-{i}"), udid, "critical", "detected").await;
    }
    let acme = IseClient::new(&app, ACME_ISE);
    for version in [2, 3] {
        let listed = acme.noncompliant(version).await;
        let macs: Vec<String> = listed
            .iter()
            .filter_map(|d| text_of(d, "macaddress"))
            .collect();
        let unique: std::collections::BTreeSet<&String> = macs.iter().collect();
        assert_eq!(unique.len(), macs.len(), "each device once: {macs:?}");
        for (_, mac, _) in &at_risk {
            assert!(macs.contains(mac), "v{version}: {mac} missing");
        }
        assert!(listed.iter().all(|d| status_of(d) == "false"));
    }
}

#[tokio::test]
async fn ise_actions_go_through_the_policy_a_personal_full_wipe_is_skipped_and_the_cap_holds() {
    let (env, app) = two_tenants(30, "[policy]\nmax_destructive_actions_per_hour = 1\n").await;
    let aw_devices = airwatch_devices(&env);
    let personal = aw_devices
        .iter()
        .find(|d| d.2 == "E")
        .expect("an employee-owned device");
    let corporate: Vec<_> = aw_devices.iter().filter(|d| d.2 == "C").take(2).collect();
    assert_eq!(corporate.len(), 2, "two corporate devices");
    let acme = IseClient::new(&app, ACME_ISE);
    let aw = env.sim.airwatch().unwrap();

    // full_wipe on a personal device: recorded skipped, nothing sent.
    let answer = acme.action(3, "full_wipe", &personal.1).await;
    let result = &devices(&answer)[0];
    assert_eq!(text_of(result, "result/action_status").unwrap(), "false");
    assert!(text_of(result, "result/failure_reason")
        .unwrap()
        .contains("corporate"));

    // corporate_wipe: the first goes out, the second is beyond the cap of 1 and held.
    let first = acme.action(2, "corporate_wipe", &corporate[0].1).await;
    assert_eq!(
        text_of(&devices(&first)[0], "result/action_status").unwrap(),
        "true"
    );
    let second = acme.action(2, "corporate_wipe", &corporate[1].1).await;
    assert_eq!(
        text_of(&devices(&second)[0], "result/action_status").unwrap(),
        "false"
    );
    assert!(text_of(&devices(&second)[0], "result/failure_reason")
        .unwrap()
        .contains("held"));

    // pin_lock on an unknown MAC: false, and nothing recorded for it.
    let unknown = acme.action(3, "pin_lock", "0A0B0C0D0E0F").await;
    assert_eq!(
        text_of(&devices(&unknown)[0], "result/action_status").unwrap(),
        "false"
    );

    // What the admin API and the simulator show.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let wipes: Vec<String> = aw
            .core()
            .actions()
            .iter()
            .map(|a| a.action.clone())
            .collect();
        if wipes.iter().any(|a| a.contains("EnterpriseWipe")) {
            assert_eq!(
                wipes
                    .iter()
                    .filter(|a| a.contains("EnterpriseWipe"))
                    .count(),
                1,
                "{wipes:?}"
            );
            assert!(!wipes.iter().any(|a| a.contains("DeviceWipe")), "{wipes:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the corporate wipe never reached the MDM: {wipes:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = reqwest::Client::new()
        .get(format!(
            "http://{}/v1/admin/tenants/{ACME}/actions?limit=50",
            app.addr
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    let list: Value = r.json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    let states: Vec<(String, String)> = items
        .iter()
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_string(),
                a["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        states.contains(&("wipe".into(), "skipped".into())),
        "{states:?}"
    );
    assert!(
        states.contains(&("enterprise_wipe".into(), "held".into())),
        "{states:?}"
    );
    assert!(
        items
            .iter()
            .all(|a| a["reason"].as_str().unwrap_or("").contains("Cisco ISE")),
        "{list}"
    );
    assert_eq!(items.len(), 3, "{list}");
}

#[tokio::test]
async fn the_ise_api_is_not_served_unless_enabled_and_bad_requests_get_400() {
    let (env, app) = two_tenants(4, "").await;
    let acme = IseClient::new(&app, ACME_ISE);
    for path in [
        "/ciscoise/mdmapi/v3/devices/?paging=0&querycriteria=shoesize&value=9&filter=all",
        "/ciscoise/mdmapi/v3/devices/?paging=x&querycriteria=compliance&value=false",
        "/ciscoise/mdmapi/v3/devices/?paging=0&querycriteria=compliance&value=maybe",
        "/ciscoise/mdmapi/v9/devices/?paging=0&querycriteria=macaddress&value=001122334455",
        "/ciscoise/mdminfo/?ise_api_version=zero",
    ] {
        let (status, body) = acme.send(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(!body.trim().is_empty(), "{path}: a reason");
    }
    for body in [
        "",
        "not xml",
        "<other/>",
        "<ise_api><identifier></identifier></ise_api>",
    ] {
        let (status, _) = acme
            .send(
                reqwest::Method::POST,
                "/ciscoise/mdmapi/v3/action/?actionType=pin_lock",
                Some(body),
            )
            .await;
        assert_eq!(status, 400, "{body:?}");
    }
    let (status, _) = acme
        .send(
            reqwest::Method::POST,
            "/ciscoise/mdmapi/v3/action/?actionType=self_destruct",
            Some(
                "<ise_api><identifier><macaddress>001122334455</macaddress></identifier></ise_api>",
            ),
        )
        .await;
    assert_eq!(status, 400);

    // Disabled in the main file: the paths are not there.
    let main = env.dir.path().join("connector.toml");
    drop(app);
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .replace("[ise]\nenabled = true\n", "");
    std::fs::write(&main, text).unwrap();
    let app = spawn_app(&main).await;
    let acme = IseClient::new(&app, ACME_ISE);
    let (status, _) = acme
        .send(
            reqwest::Method::GET,
            "/ciscoise/mdminfo/?ise_api_version=3",
            None,
        )
        .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn cisco_example_requests_are_accepted_by_the_daemon() {
    let (env, app) = two_tenants(6, "").await;
    let (_, mac, _) = airwatch_devices(&env)[0].clone();
    let acme = IseClient::new(&app, ACME_ISE);
    let examples =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cisco-ise/examples");
    let read = |name: &str| std::fs::read_to_string(examples.join(name)).unwrap();
    for (version, name, path, definition) in [
        (
            2,
            "v2-action-request.xml",
            "/ciscoise/mdmapi/v2/action/actionType=pin_lock",
            "action",
        ),
        (
            3,
            "v3-action-request.xml",
            "/ciscoise/mdmapi/v3/action/?actionType=pin_lock",
            "action",
        ),
        (
            2,
            "v2-batchdevices-request.xml",
            "/ciscoise/mdmapi/v2/batchdevices/?paging=0&querycriteria=macaddress&filter=all",
            "attributes",
        ),
    ] {
        let (status, body) = acme
            .send(reqwest::Method::POST, path, Some(&read(name)))
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        check(version, definition, &body).unwrap_or_else(|e| panic!("{name}: {e}\n{body}"));
    }
    for (version, name) in [
        (2, "v2-sendmessage-request.xml"),
        (3, "v3-sendmessage-request.xml"),
    ] {
        let (status, body) = acme
            .send(
                reqwest::Method::PUT,
                &format!("/ciscoise/mdmapi/v{version}/sendmessage"),
                Some(&read(name)),
            )
            .await;
        assert_eq!(status, 200, "{name}: {body}");
        check(version, "sendmessage", &body).unwrap_or_else(|e| panic!("{name}: {e}\n{body}"));
    }
    // A batch naming a known MAC among unknown ones answers that device.
    let batch = format!("<ise_api><value>{mac}</value><value>3408BC507C78</value></ise_api>");
    let (status, body) = acme
        .send(
            reqwest::Method::POST,
            "/ciscoise/mdmapi/v2/batchdevices/?paging=0&querycriteria=macaddress&filter=all",
            Some(&batch),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let found = devices(&parse(&body));
    assert_eq!(found.len(), 1, "{body}");
    assert_eq!(text_of(&found[0], "macaddress").unwrap(), mac);
}

#[tokio::test]
async fn a_device_is_found_by_each_identifier_ise_knows_and_the_mdms_own_verdict_counts() {
    let (env, app) = two_tenants(30, "").await;
    let acme = IseClient::new(&app, ACME_ISE);
    let all = env.sim.airwatch().unwrap().devices();
    let text = |d: &Value, k: &str| d[k].as_str().unwrap_or("").to_string();
    let d = all
        .iter()
        .find(|d| {
            text(d, "ComplianceStatus") == "Compliant"
                && text(d, "Imei").len() >= 14
                && !text(d, "UserName").is_empty()
                && text(d, "MacAddress").len() == 12
        })
        .expect("a compliant device with an IMEI and a user");
    let udid = text(d, "Udid");
    let (_, api) = acme.mdminfo(3).await;
    for (criterion, value) in [
        ("udid", udid.to_ascii_lowercase()),
        ("guid", udid.clone()),
        ("imei", text(d, "Imei")),
        ("username", text(d, "UserName").to_ascii_uppercase()),
        ("serialnumber", text(d, "SerialNumber")),
    ] {
        let doc = acme
            .get_valid(
                3,
                "attributes",
                &format!(
                    "{api}/devices/?paging=0&querycriteria={criterion}&value={value}&filter=all"
                ),
            )
            .await;
        let found = devices(&doc);
        assert!(
            found
                .iter()
                .any(|f| text_of(f, "attributes/udid")
                    .is_some_and(|u| u.eq_ignore_ascii_case(&udid))),
            "{criterion}={value}: {found:?}"
        );
        assert!(found.iter().all(|f| status_of(f) == "true"), "{criterion}");
    }
    // The v3 answer to a GUID query is keyed by the GUID ISE asked with.
    let doc = acme
        .get_valid(
            3,
            "attributes",
            &format!("{api}/devices/?paging=0&querycriteria=guid&value={udid}&filter=all"),
        )
        .await;
    assert_eq!(
        text_of(&devices(&doc)[0], "guid").as_deref(),
        Some(udid.as_str())
    );
    // v1's path-style URL, as PacketFence and ISE 1.x send it.
    let mac = text(d, "MacAddress").to_ascii_uppercase();
    let doc = acme
        .get_valid(
            1,
            "attributes",
            &format!("/ciscoise/mdmapi/v1/devices/0/macaddress/{mac}/all"),
        )
        .await;
    assert_eq!(
        text_of(&devices(&doc)[0], "macaddress").as_deref(),
        Some(mac.as_str())
    );
    // An unknown identifier: 200 and an empty list.
    let doc = acme
        .get_valid(
            3,
            "attributes",
            &format!("{api}/devices/?paging=0&querycriteria=udid&value=NO-SUCH-DEVICE&filter=all"),
        )
        .await;
    assert!(devices(&doc).is_empty());

    // A device its MDM reports not compliant is listed although it has no
    // open threat, and the reason says so.
    let bad = all
        .iter()
        .find(|d| {
            text(d, "ComplianceStatus") == "NonCompliant" && text(d, "MacAddress").len() == 12
        })
        .expect("a non-compliant device");
    let mac = text(bad, "MacAddress").to_ascii_uppercase();
    let listed = acme.noncompliant(3).await;
    let entry = listed
        .iter()
        .find(|d| text_of(d, "macaddress").as_deref() == Some(mac.as_str()))
        .expect("listed");
    assert!(text_of(entry, "attributes/compliance/failure_reason")
        .unwrap()
        .contains("MDM"));
}
