//! The admin console in a real browser (issue 20.2): headless Chromium driven
//! through chromedriver (WebDriver) against the daemon in process and the
//! AirWatch and SOTI simulators.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`; `.ci/run` installs them): without them the test
//! fails and says how to install them. `MTD_CONSOLE_SCREENSHOT=docs/console.png`
//! writes a screenshot of the tenants page there (the README's).

// The API tests' harness, shared; this test uses only part of it.
#[path = "../api/logs.rs"]
#[allow(dead_code)]
mod logs;
#[path = "../api/support.rs"]
#[allow(dead_code)]
mod support;

use fantoccini::{Client, ClientBuilder, Locator};
use mtd_sim::SimKind;
use serde_json::{json, Value};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const TENANT: &str = "acme";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

const POLICY: &str = r#"[policy]
max_destructive_actions_per_hour = 1
[[policy.rule]]
threat = "app.malicious"
action = "enterprise_wipe"
[[policy.rule]]
threat = "network.arp_mitm"
action = "none"
"#;

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Driver {
        for (path, package) in [(CHROMEDRIVER, "chromium-driver"), (CHROMIUM, "chromium")] {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: the console's browser test needs Debian's chromium and \
                 chromium-driver; install them with `apt-get install chromium chromium-driver` \
                 (as .ci/run does) [{package}]"
            );
        }
        // A free port: bound by the system, then handed to chromedriver.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start: {e}"));
        let driver = Driver { child, port };
        // Ready once it accepts connections (a condition, not a fixed sleep).
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver did not listen on {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        driver
    }

    async fn browser(&self, profile: &Path) -> Client {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("chromedriver starts a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The wipes the AirWatch simulator accepted for a device (its vendor id).
fn wipes_received(env: &Env, vendor_id: &str) -> usize {
    env.sim
        .state(SimKind::Airwatch)
        .unwrap()
        .core()
        .actions()
        .into_iter()
        .filter(|a| {
            a.device_id.as_deref() == Some(vendor_id)
                && (200..300).contains(&a.status)
                && a.action == "EnterpriseWipe"
        })
        .count()
}

/// Every URL the current page loaded (the document and its resources).
async fn loaded(c: &Client) -> Vec<String> {
    let names = c
        .execute(
            "return performance.getEntries().map(e => e.name).filter(n => /^[a-z]+:/.test(n));",
            vec![],
        )
        .await
        .unwrap();
    serde_json::from_value(names).unwrap()
}

/// Fails if the page loaded anything from another origin than `origin`.
async fn assert_same_origin(c: &Client, origin: &str) {
    let urls = loaded(c).await;
    assert!(
        !urls.is_empty(),
        "the Performance API lists the page itself"
    );
    for url in &urls {
        assert!(
            url.starts_with(&format!("{origin}/")),
            "{} loaded {url} from another origin",
            c.current_url().await.unwrap()
        );
    }
}

/// The text of the page's `main`, waiting (10 s at most) for a page that has
/// one: right after a click the new page may still be loading.
async fn text(c: &Client) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let read = async { c.find(Locator::Css("main")).await?.text().await }.await;
        match read {
            Ok(text) => return text,
            Err(e) if Instant::now() > deadline => panic!(
                "no page with a <main> after 10 s ({e}): {}",
                c.source().await.unwrap_or_default()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until the browser shows `url`; else fails with what it shows.
async fn at(c: &Client, url: &str) {
    let want = url::Url::parse(url).unwrap();
    if c.wait()
        .at_most(Duration::from_secs(10))
        .for_url(&want)
        .await
        .is_err()
    {
        panic!(
            "the browser is at {}, not {url}: {}",
            c.current_url().await.unwrap(),
            c.source().await.unwrap()
        );
    }
}

/// Clicks the element `css` names, then waits until the browser has left
/// the page it was on (every click of this test loads a page): reading the
/// old page's text right after a click would race the navigation.
async fn click(c: &Client, css: &str) {
    let before = c
        .find(Locator::Css("html"))
        .await
        .unwrap_or_else(|e| panic!("no page before clicking {css}: {e}"));
    c.wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
        .click()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    // The old page's root goes stale once the new page replaces it.
    while before.tag_name().await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "clicking {css} did not load a page within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_approves_a_held_wipe_and_cancels_another_in_a_real_browser() {
    let driver = Driver::start();
    let env = Env::new(&[SimKind::Airwatch, SimKind::Soti], 25).await;
    let airwatch = MdmSpec {
        extra: "[mdm.permit]\nenterprise_wipe = true\n".into(),
        ..MdmSpec::new(SimKind::Airwatch)
    };
    let soti = MdmSpec::new(SimKind::Soti);
    let app =
        spawn_app(&env.write_config(TENANT, &[airwatch.clone(), soti.clone()], "0", POLICY)).await;
    for spec in [&airwatch, &soti] {
        let id = app.mdm_id(TENANT, &spec.name).await;
        let runs = app.finished_runs(id, 1, Duration::from_secs(60)).await;
        assert_eq!(runs[0].error, None);
    }

    // Four malicious apps under a cap of one wipe an hour: one goes out,
    // three wait for an admin. (serial, AirWatch's id) of each device.
    let targets: Vec<(Value, String)> = env
        .sim
        .airwatch()
        .unwrap()
        .devices()
        .into_iter()
        .filter(|d| d["SerialNumber"].is_string())
        .take(4)
        .map(|d| (d["SerialNumber"].clone(), d["Id"]["Value"].to_string()))
        .collect();
    for (i, (serial, _)) in targets.iter().enumerate() {
        let body = json!({"event_id": format!("b-{i}"), "detected_at": chrono::Utc::now().to_rfc3339(),
            "device": {"serial": serial}, "threat": {"type": "app.malicious", "severity": "high"}});
        let reply = post_signed(
            &app,
            "/v1/agent/events",
            TENANT,
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    let rows = wait_actions(&env, Duration::from_secs(30), |r| {
        r.iter().filter(|a| a.state == "held").count() == 3
            && r.iter().filter(|a| a.state == "sent").count() == 1
    })
    .await;
    let held: Vec<i64> = rows
        .iter()
        .filter(|a| a.state == "held")
        .map(|a| a.id)
        .collect();

    let profile = tempfile::tempdir().unwrap();
    let c = driver.browser(profile.path()).await;
    let origin = format!("http://{}", app.addr);

    // `/` leads to the login; the token once, then the tenants.
    c.goto(&format!("{origin}/")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/console/login");
    assert_same_origin(&c, &origin).await;
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    click(&c, "form.login button[type=submit]").await;
    at(&c, &format!("{origin}/console/")).await;
    let home = text(&c).await;
    assert!(home.contains("Tenant acme"), "{home}");
    assert!(
        home.contains("Test AIRWATCH") && home.contains("Test SOTI"),
        "{home}"
    );
    assert!(home.contains("Held actions (3)"), "{home}");
    assert!(!c.source().await.unwrap().contains(ADMIN_TOKEN));
    assert_same_origin(&c, &origin).await;
    // The session cookie is not readable by scripts (HttpOnly).
    let visible = c.execute("return document.cookie;", vec![]).await.unwrap();
    assert_eq!(visible, json!(""), "HttpOnly");
    if let Ok(path) = std::env::var("MTD_CONSOLE_SCREENSHOT") {
        let png = c.screenshot().await.unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    // Open a held wipe from the held list and approve it, through the confirmation.
    click(
        &c,
        &format!("a[href='/console/tenants/{TENANT}/actions?state=held']"),
    )
    .await;
    click(
        &c,
        &format!("a[href='/console/tenants/{TENANT}/actions/{}']", held[0]),
    )
    .await;
    let detail = text(&c).await;
    assert!(
        detail.contains("enterprise_wipe") && detail.contains("held"),
        "{detail}"
    );
    assert!(
        detail.contains("max_destructive_actions_per_hour"),
        "{detail}"
    );
    assert_same_origin(&c, &origin).await;
    click(&c, "form[action$='/approve'] button").await;
    let confirm = text(&c).await;
    assert!(confirm.contains("cannot be undone"), "{confirm}");
    assert_eq!(
        actions(&env)
            .await
            .iter()
            .find(|a| a.id == held[0])
            .unwrap()
            .state,
        "held",
        "the confirmation page alone approves nothing"
    );
    click(&c, "form[action$='/approve'] button.danger").await;
    wait_actions(&env, Duration::from_secs(20), |r| {
        r.iter().any(|a| a.id == held[0] && a.state == "sent")
    })
    .await;
    let received: usize = targets.iter().map(|(_, id)| wipes_received(&env, id)).sum();
    assert_eq!(
        received, 2,
        "the first wipe and the approved one reached the MDM"
    );
    c.refresh().await.unwrap();
    let after = text(&c).await;
    assert!(
        after.contains("approved by an admin"),
        "the audit trail: {after}"
    );

    // Cancel another held wipe.
    c.goto(&format!(
        "{origin}/console/tenants/{TENANT}/actions/{}",
        held[1]
    ))
    .await
    .unwrap();
    click(&c, "form[action$='/cancel'] button").await;
    let cancelled = text(&c).await;
    assert!(cancelled.contains("cancelled by an admin"), "{cancelled}");
    assert_eq!(
        actions(&env)
            .await
            .iter()
            .find(|a| a.id == held[1])
            .unwrap()
            .state,
        "cancelled"
    );

    // A form sent without its anti-forgery token: 403, the action stays held.
    c.goto(&format!(
        "{origin}/console/tenants/{TENANT}/actions/{}",
        held[2]
    ))
    .await
    .unwrap();
    c.execute(
        "const f = document.querySelector(\"form[action$='/cancel']\");
         f.querySelector('input[name=csrf]').remove();
         f.submit();",
        vec![],
    )
    .await
    .unwrap();
    at(
        &c,
        &format!(
            "{origin}/console/tenants/{TENANT}/actions/{}/cancel",
            held[2]
        ),
    )
    .await;
    let refused = text(&c).await;
    assert!(
        refused.contains("403") && refused.contains("anti-forgery"),
        "{refused}"
    );
    assert_eq!(
        actions(&env)
            .await
            .iter()
            .find(|a| a.id == held[2])
            .unwrap()
            .state,
        "held"
    );
    let received_now: usize = targets.iter().map(|(_, id)| wipes_received(&env, id)).sum();
    assert_eq!(received_now, 2, "nothing more reached the MDM");

    // The device pages: search by serial, then one device's detail.
    let serial = targets[0].0.as_str().unwrap().to_string();
    c.goto(&format!("{origin}/console/tenants/{TENANT}/devices"))
        .await
        .unwrap();
    c.find(Locator::Css("input[name=identifier]"))
        .await
        .unwrap()
        .send_keys(&serial)
        .await
        .unwrap();
    click(&c, "form.filters button[type=submit]").await;
    click(
        &c,
        &format!("main table a[href^='/console/tenants/{TENANT}/devices/']"),
    )
    .await;
    let device = text(&c).await;
    assert!(
        device.contains(&serial) && device.contains("app.malicious"),
        "{device}"
    );
    assert_same_origin(&c, &origin).await;

    // On a phone's width, pages do not overflow sideways (wide tables scroll
    // inside their own box).
    c.set_window_size(390, 844).await.unwrap();
    for path in [
        "/console/".to_string(),
        format!("/console/tenants/{TENANT}/devices"),
        format!("/console/tenants/{TENANT}/actions/{}", held[0]),
    ] {
        c.goto(&format!("{origin}{path}")).await.unwrap();
        let widths = c
            .execute(
                "return [document.documentElement.scrollWidth, window.innerWidth];",
                vec![],
            )
            .await
            .unwrap();
        let (scroll, inner) = (widths[0].as_u64().unwrap(), widths[1].as_u64().unwrap());
        assert!(inner <= 500, "a phone-sized window: {inner}");
        assert!(
            scroll <= inner,
            "{path}: {scroll} px wide in a {inner} px window"
        );
    }

    c.close().await.unwrap();
    app.shutdown().await;
}
