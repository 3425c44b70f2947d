//! The admin console over HTTP, as a browser without JavaScript sees it:
//! the login and its cookie, the anti-forgery token, the headers of every
//! answer, escaping. (tests/browser drives a real Chromium through it.)

use crate::support::*;
use mtd_sim::SimKind;
use reqwest::header::{HeaderMap, CONTENT_TYPE, COOKIE, LOCATION, ORIGIN, SET_COOKIE};
use serde_json::json;
use std::time::Duration;

const TENANT: &str = "acme";

const POLICY: &str = r#"[policy]
max_destructive_actions_per_hour = 1
[[policy.rule]]
threat = "app.malicious"
action = "enterprise_wipe"
"#;

/// One answer of the console.
#[derive(Debug)]
struct Page {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The anti-forgery token of the page's forms.
    fn csrf(&self) -> String {
        let (_, rest) = self
            .body
            .split_once(r#"name="csrf" value=""#)
            .unwrap_or_else(|| panic!("no anti-forgery field in {}", self.body));
        rest.split('"').next().unwrap().to_string()
    }
}

/// A cookie-keeping client that does not follow redirects (the test checks them).
struct Console {
    base: String,
    client: reqwest::Client,
    cookie: Option<String>,
}

impl Console {
    fn new(app: &TestApp) -> Console {
        Console {
            base: format!("http://{}", app.addr),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: None,
        }
    }

    async fn send(&self, r: reqwest::RequestBuilder) -> Page {
        let r = match &self.cookie {
            Some(c) => r.header(COOKIE, c),
            None => r,
        };
        let response = r.send().await.expect("the daemon answers");
        Page {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&self, path: &str) -> Page {
        self.send(self.client.get(format!("{}{path}", self.base)))
            .await
    }

    /// POSTs a form as a browser on the console's own page would (its Origin).
    async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(
            self.client
                .post(format!("{}{path}", self.base))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(ORIGIN, &self.base)
                .body(body),
        )
        .await
    }

    /// Logs in with `token`; keeps the session cookie on success.
    async fn login(&mut self, token: &str) -> Page {
        let page = self.post("/console/login", &[("token", token)]).await;
        if let Some(set) = page.headers.get(SET_COOKIE) {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            self.cookie = Some(pair.to_string());
        }
        page
    }
}

async fn started() -> (Env, TestApp) {
    started_with(20).await
}

async fn started_with(devices: usize) -> (Env, TestApp) {
    let env = Env::new(&[SimKind::Airwatch], devices).await;
    let spec = MdmSpec {
        extra: "[mdm.permit]\nenterprise_wipe = true\n".into(),
        ..MdmSpec::new(SimKind::Airwatch)
    };
    let app = spawn_app(&env.write_config(TENANT, std::slice::from_ref(&spec), "0", POLICY)).await;
    let mdm_id = app.mdm_id(TENANT, &spec.name).await;
    let runs = app.finished_runs(mdm_id, 1, Duration::from_secs(60)).await;
    assert_eq!(runs[0].error, None);
    (env, app)
}

/// Three enterprise wipes under a cap of one an hour: one goes out, two are
/// held for approval. Returns the held ones' ids.
async fn held_wipes(env: &Env, app: &TestApp) -> Vec<i64> {
    let serials: Vec<_> = env
        .sim
        .airwatch()
        .unwrap()
        .devices()
        .into_iter()
        .filter(|d| d["SerialNumber"].is_string())
        .take(3)
        .map(|d| d["SerialNumber"].clone())
        .collect();
    for (i, serial) in serials.iter().enumerate() {
        let body = json!({"event_id": format!("c-{i}"), "detected_at": chrono::Utc::now().to_rfc3339(),
            "device": {"serial": serial}, "threat": {"type": "app.malicious", "severity": "high"}});
        let reply = post_signed(app, "/v1/agent/events", TENANT, body.to_string().as_bytes()).await;
        assert_eq!(reply.status, 202, "{}", reply.text);
    }
    let rows = wait_actions(env, Duration::from_secs(20), |r| {
        r.iter().filter(|a| a.state == "held").count() == 2
            && r.iter().filter(|a| a.state == "sent").count() == 1
    })
    .await;
    rows.iter()
        .filter(|a| a.state == "held")
        .map(|a| a.id)
        .collect()
}

fn assert_console_headers(page: &Page, what: &str) {
    let h = |name: &str| {
        page.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("{what}: no {name} header"))
            .to_string()
    };
    let csp = h("content-security-policy");
    for directive in [
        "default-src 'none'",
        "style-src 'self'",
        "img-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
    ] {
        assert!(
            csp.contains(directive),
            "{what}: CSP {csp:?} lacks {directive}"
        );
    }
    assert!(!csp.contains("script-src"), "{what}: no script is shipped");
    assert_eq!(h("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{what}");
}

#[tokio::test]
async fn the_root_leads_to_the_console_and_the_console_to_its_login() {
    let (_env, app) = started().await;
    let c = Console::new(&app);
    let root = c.get("/").await;
    assert_eq!((root.status, root.location()), (303, "/console/"));
    let console = c.get("/console/").await;
    assert_eq!(
        (console.status, console.location()),
        (303, "/console/login"),
        "no session"
    );
    let login = c.get("/console/login").await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains(r#"type="password" name="token""#));
    assert_eq!(login.headers.get("cache-control").unwrap(), "no-store");
    for page in [&root, &console, &login] {
        assert_console_headers(page, "before login");
    }
    let css = c.get("/console/style.css").await;
    assert_eq!(css.status, 200);
    assert!(css
        .headers
        .get(CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    app.shutdown().await;
}

#[tokio::test]
async fn the_admin_token_opens_a_session_in_a_strict_http_only_cookie() {
    let (_env, app) = started().await;
    let mut c = Console::new(&app);

    let wrong = c.login("not-the-token").await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.headers.get(SET_COOKIE).is_none());
    assert!(wrong.body.contains("not the admin token"), "{}", wrong.body);
    assert!(!wrong.body.contains(ADMIN_TOKEN));

    let ok = c.login(ADMIN_TOKEN).await;
    assert_eq!((ok.status, ok.location()), (303, "/console/"));
    let cookie = ok.headers.get(SET_COOKIE).unwrap().to_str().unwrap();
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    let (name, value) = attributes[0].split_once('=').unwrap();
    assert_eq!(name, "mtd_console");
    assert_eq!(value.len(), 64, "256 random bits in hex: {cookie}");
    assert!(value.chars().all(|c| c.is_ascii_hexdigit()));
    for a in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(attributes.contains(&a), "{a} in {cookie}");
    }
    assert!(
        attributes.iter().any(|a| a.starts_with("Max-Age=")),
        "expires: {cookie}"
    );
    assert!(!attributes.contains(&"Secure"), "plain HTTP here: {cookie}");

    let home = c.get("/console/").await;
    assert_eq!(home.status, 200);
    assert!(home.body.contains("Tenant acme"), "{}", home.body);
    assert!(home.body.contains("Test AIRWATCH"));
    assert!(!home.body.contains(ADMIN_TOKEN), "the token is never shown");
    assert!(!home.body.contains(AGENT_SECRET));
    assert_console_headers(&home, "the tenants page");
    assert_eq!(home.headers.get("cache-control").unwrap(), "no-store");

    // Log out: the same cookie opens nothing any more.
    let out = c.post("/console/logout", &[("csrf", &home.csrf())]).await;
    assert_eq!((out.status, out.location()), (303, "/console/login"));
    let after = c.get("/console/").await;
    assert_eq!((after.status, after.location()), (303, "/console/login"));
    // A made-up session id opens nothing either.
    c.cookie = Some(format!("mtd_console={}", "ab".repeat(32)));
    assert_eq!(c.get("/console/").await.status, 303);
    app.shutdown().await;
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled() {
    let (_env, app) = started().await;
    let mut c = Console::new(&app);
    for _ in 0..5 {
        assert_eq!(c.login("guess").await.status, 401);
    }
    let throttled = c.login(ADMIN_TOKEN).await;
    assert_eq!(
        throttled.status, 429,
        "even the right token while throttled"
    );
    assert!(throttled.headers.get("retry-after").is_some());
    assert!(throttled.headers.get(SET_COOKIE).is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn a_change_without_the_anti_forgery_token_is_refused_and_changes_nothing() {
    let (env, app) = started().await;
    let held = held_wipes(&env, &app).await;
    let mut c = Console::new(&app);
    c.login(ADMIN_TOKEN).await;
    let page = c
        .get(&format!("/console/tenants/{TENANT}/actions/{}", held[0]))
        .await;
    assert_eq!(page.status, 200);
    let csrf = page.csrf();
    let approve = format!("/console/tenants/{TENANT}/actions/{}/approve", held[0]);
    let cancel = format!("/console/tenants/{TENANT}/actions/{}/cancel", held[0]);
    for (path, fields) in [
        (&approve, vec![("confirm", "yes")]),
        (&approve, vec![("confirm", "yes"), ("csrf", "0000")]),
        (&cancel, vec![]),
        (&cancel, vec![("csrf", "")]),
    ] {
        let refused = c.post(path, &fields).await;
        assert_eq!(refused.status, 403, "{path} {fields:?}");
        assert_console_headers(&refused, "a refusal");
    }
    // The right token from another site's page: refused too.
    let foreign = c
        .send(
            c.client
                .post(format!("{}{cancel}", c.base))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(ORIGIN, "http://evil.example")
                .body(format!("csrf={csrf}")),
        )
        .await;
    assert_eq!(foreign.status, 403);
    // `Origin: null` (our no-referrer pages make browsers send it) passes
    // only with the browser's word that the form is our own page's.
    for fetch_site in [None, Some("cross-site"), Some("same-site")] {
        let mut r = c
            .client
            .post(format!("{}{cancel}", c.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(ORIGIN, "null")
            .body(format!("csrf={csrf}"));
        if let Some(site) = fetch_site {
            r = r.header("sec-fetch-site", site);
        }
        assert_eq!(c.send(r).await.status, 403, "{fetch_site:?}");
    }
    let wipes = actions(&env).await;
    assert!(
        wipes
            .iter()
            .filter(|a| held.contains(&a.id))
            .all(|a| a.state == "held"),
        "{wipes:#?}"
    );

    // A destructive approval asks first; the confirmation's form approves.
    let asked = c.post(&approve, &[("csrf", &csrf)]).await;
    assert_eq!(asked.status, 200);
    assert!(
        asked.body.contains("Yes, approve the wipe"),
        "{}",
        asked.body
    );
    assert_eq!(
        actions(&env)
            .await
            .iter()
            .find(|a| a.id == held[0])
            .unwrap()
            .state,
        "held"
    );
    let approved = c
        .post(&approve, &[("csrf", &asked.csrf()), ("confirm", "yes")])
        .await;
    assert_eq!(approved.status, 303, "{}", approved.body);
    wait_actions(&env, Duration::from_secs(20), |r| {
        r.iter().any(|a| a.id == held[0] && a.state == "sent")
    })
    .await;

    // Cancel the other one; a second cancel says why not.
    let other = format!("/console/tenants/{TENANT}/actions/{}/cancel", held[1]);
    assert_eq!(c.post(&other, &[("csrf", &csrf)]).await.status, 303);
    let again = c.post(&other, &[("csrf", &csrf)]).await;
    assert_eq!(again.status, 409);
    assert!(again.body.contains("cannot be cancelled"), "{}", again.body);
    let rows = actions(&env).await;
    assert_eq!(
        rows.iter().find(|a| a.id == held[1]).unwrap().state,
        "cancelled"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn stored_values_are_shown_as_text_never_as_markup() {
    let (env, app) = started().await;
    let held = held_wipes(&env, &app).await;
    let url = format!("sqlite://{}", env.db_path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE actions SET reason = '<script>alert(\"x\")</script>' WHERE id = ?")
        .bind(held[0])
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let mut c = Console::new(&app);
    c.login(ADMIN_TOKEN).await;
    for path in [
        format!("/console/tenants/{TENANT}/actions/{}", held[0]),
        format!("/console/tenants/{TENANT}/actions?state=held"),
    ] {
        let page = c.get(&path).await;
        assert_eq!(page.status, 200);
        assert!(!page.body.contains("<script"), "{path}: {}", page.body);
        assert!(
            page.body
                .contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"),
            "{path}: {}",
            page.body
        );
    }
    // A search for markup is echoed as text too.
    let search = c
        .get(&format!(
            "/console/tenants/{TENANT}/devices?identifier=%3Cscript%3E"
        ))
        .await;
    assert_eq!(search.status, 200);
    assert!(!search.body.contains("<script"), "{}", search.body);
    assert!(search.body.contains("&lt;script&gt;"));
    app.shutdown().await;
}

#[tokio::test]
async fn every_page_is_reachable_and_bad_filters_get_a_clear_answer() {
    let (env, app) = started().await;
    let held = held_wipes(&env, &app).await;
    let mut c = Console::new(&app);
    c.login(ADMIN_TOKEN).await;
    let home = c.get("/console/").await;
    for link in [
        format!("/console/tenants/{TENANT}/devices"),
        format!("/console/tenants/{TENANT}/actions"),
        format!("/console/tenants/{TENANT}/actions?state=held"),
        format!("/console/tenants/{TENANT}/cancel-wipes"),
        format!("/console/tenants/{TENANT}/devices?risk=high"),
    ] {
        assert!(home.body.contains(&format!("href=\"{link}\"")), "{link}");
        let page = c.get(&link).await;
        assert_eq!(page.status, 200, "{link}: {}", page.body);
        assert_console_headers(&page, &link);
    }
    let devices = c.get(&format!("/console/tenants/{TENANT}/devices")).await;
    let first = devices
        .body
        .split(&format!("href=\"/console/tenants/{TENANT}/devices/"))
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a device link");
    let device = c
        .get(&format!("/console/tenants/{TENANT}/devices/{first}"))
        .await;
    assert_eq!(device.status, 200);
    assert!(device.body.contains("Posture"));
    let held_list = c
        .get(&format!("/console/tenants/{TENANT}/actions?state=held"))
        .await;
    assert!(held_list
        .body
        .contains(&format!("/console/tenants/{TENANT}/actions/{}", held[0])));

    // Filters: an MDM by name, and the activation filter.
    let by_mdm = c
        .get(&format!(
            "/console/tenants/{TENANT}/devices?mdm=Test+AIRWATCH&activated=false"
        ))
        .await;
    assert_eq!(by_mdm.status, 200);
    for (bad, field) in [
        ("risk=severe", "risk"),
        ("mdm=Nope", "mdm"),
        ("activated=maybe", "activated"),
        ("after=x", "after"),
    ] {
        let page = c
            .get(&format!("/console/tenants/{TENANT}/devices?{bad}"))
            .await;
        assert_eq!(page.status, 400, "{bad}");
        assert!(page.body.contains(field), "{bad}: {}", page.body);
    }
    assert_eq!(c.get("/console/tenants/nope/devices").await.status, 404);
    assert_eq!(
        c.get(&format!("/console/tenants/{TENANT}/actions/999999"))
            .await
            .status,
        404
    );
    assert_eq!(
        c.get(&format!("/console/tenants/{TENANT}/devices/abc"))
            .await
            .status,
        404
    );

    // Cancel every pending wipe: the link asks, the confirmation cancels.
    let ask = c
        .get(&format!("/console/tenants/{TENANT}/cancel-wipes"))
        .await;
    assert!(
        ask.body.contains("Waiting now: <strong>2</strong>"),
        "{}",
        ask.body
    );
    let path = format!("/console/tenants/{TENANT}/cancel-wipes");
    let unconfirmed = c.post(&path, &[("csrf", &ask.csrf())]).await;
    assert_eq!(unconfirmed.status, 303, "no confirm: back to the question");
    assert_eq!(
        actions(&env)
            .await
            .iter()
            .filter(|a| a.state == "held")
            .count(),
        2
    );
    let done = c
        .post(&path, &[("csrf", &ask.csrf()), ("confirm", "yes")])
        .await;
    assert_eq!(done.status, 200);
    assert!(done.body.contains("2 wipes cancelled"), "{}", done.body);
    let rows = actions(&env).await;
    assert!(held
        .iter()
        .all(|id| rows.iter().find(|a| a.id == *id).unwrap().state == "cancelled"));

    // Sync now of the MDM: requested like the admin API's.
    let sync = c
        .post(
            &format!("/console/tenants/{TENANT}/sync"),
            &[("csrf", &ask.csrf()), ("mdm", "Test AIRWATCH")],
        )
        .await;
    assert_eq!(sync.status, 200, "{}", sync.body);
    assert!(sync.body.contains("Test AIRWATCH: queued") || sync.body.contains("coalesced"));
    let mdm_id = app.mdm_id(TENANT, "Test AIRWATCH").await;
    app.finished_runs(mdm_id, 2, Duration::from_secs(60)).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_reload_that_changes_the_admin_token_ends_the_sessions_of_the_old_one() {
    let (env, app) = started().await;
    let mut c = Console::new(&app);
    let ok = c.login(ADMIN_TOKEN).await;
    let max_age = ok
        .headers
        .get(SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        max_age.contains("Max-Age=43200"),
        "12 hours at most: {max_age}"
    );
    assert_eq!(c.get("/console/").await.status, 200);

    let main = env.dir.path().join("connector.toml");
    let text = std::fs::read_to_string(&main).unwrap();
    let new_token = "a-new-admin-token-0123456789";
    std::fs::write(&main, text.replace(ADMIN_TOKEN, new_token)).unwrap();
    mtd_connector::reload::reload(&app.state)
        .await
        .expect("the reload succeeds");

    let after = c.get("/console/").await;
    assert_eq!(
        (after.status, after.location()),
        (303, "/console/login"),
        "the old token's session is over"
    );
    assert_eq!(c.login(ADMIN_TOKEN).await.status, 401);
    assert_eq!(c.login(new_token).await.status, 303);
    assert_eq!(c.get("/console/").await.status, 200);
    app.shutdown().await;
}

#[tokio::test]
async fn the_device_list_pages_through_every_device_once() {
    let (env, app) = started_with(70).await;
    let stored = count(
        &env,
        "SELECT COUNT(*) FROM devices WHERE removed_at IS NULL",
    )
    .await;
    assert!(stored > 50, "more than a page: {stored}");
    let mut c = Console::new(&app);
    c.login(ADMIN_TOKEN).await;
    let link = format!("href=\"/console/tenants/{TENANT}/devices/");
    let mut seen = std::collections::BTreeSet::new();
    let mut path = format!("/console/tenants/{TENANT}/devices?activated=false");
    let mut pages = 0;
    loop {
        let page = c.get(&path).await;
        assert_eq!(page.status, 200, "{path}");
        pages += 1;
        for id in page.body.split(&link).skip(1) {
            let id = id.split('"').next().unwrap().to_string();
            assert!(seen.insert(id.clone()), "device {id} on two pages");
        }
        let Some(next) = page.body.split_once("\">Next page") else {
            break;
        };
        let href = next.0.rsplit("href=\"").next().unwrap();
        assert!(
            href.contains("activated=false"),
            "the filter is kept: {href}"
        );
        path = href.replace("&amp;", "&");
    }
    assert_eq!(pages, 2);
    assert_eq!(seen.len() as i64, stored);
    app.shutdown().await;
}
