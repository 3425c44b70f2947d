//! HTTPS on the daemon's listener (`[server] tls_cert`/`tls_key`): served to
//! a client that trusts the certificate, over HTTP/2 and HTTP/1.1, while a
//! plain-HTTP client, a client that sends no handshake and one that sends
//! garbage are each turned away without holding up anybody else.

use crate::support::*;
use mtd_sim::SimKind;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Writes a self-signed certificate for localhost and 127.0.0.1 and its key
/// next to the main file, and names them in its `[server]` (with a short
/// request-head timeout, so a stalled handshake is closed within the test).
/// Called again, it renews the certificate and key in place. Returns the
/// certificate's PEM.
fn with_tls(main: &Path) -> String {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = main.parent().unwrap();
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    let pem = certified.cert.pem();
    std::fs::write(dir.join("certs/server.pem"), &pem).unwrap();
    std::fs::write(
        dir.join("certs/server.key"),
        certified.key_pair.serialize_pem(),
    )
    .unwrap();
    let text = std::fs::read_to_string(main).unwrap();
    if text.contains("tls_cert") {
        return pem; // a renewal: the same files, new content
    }
    let text = text.replacen(
        "[server]\n",
        "[server]\ntls_cert = \"certs/server.pem\"\ntls_key = \"certs/server.key\"\nheader_read_timeout = \"2s\"\n",
        1,
    );
    std::fs::write(main, text).unwrap();
    pem
}

fn trusting(pem: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_daemon_serves_https_with_its_certificate_and_turns_plain_http_away_cleanly() {
    let env = Env::new(&[SimKind::Soti], 1).await;
    let spec = MdmSpec {
        background_sync: false,
        ..MdmSpec::new(SimKind::Soti)
    };
    let main = env.write_config("tls-tenant", &[spec], "0", "");
    let pem = with_tls(&main);
    let app = spawn_app(&main).await;
    let port = app.addr.port();
    let client = trusting(&pem);

    // HTTPS, by name and by address; ALPN picks HTTP/2 for a client that offers it.
    for host in ["localhost", "127.0.0.1"] {
        let r = client
            .get(format!("https://{host}:{port}/healthz"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("HTTPS to {host}: {e:?}"));
        assert_eq!(r.status(), 200, "{host}");
        assert_eq!(r.version(), reqwest::Version::HTTP_2, "{host}");
    }
    // And HTTP/1.1 for a client that offers only that.
    let http1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .http1_only()
        .build()
        .unwrap();
    let r = http1
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.version()),
        (200, reqwest::Version::HTTP_11)
    );

    // A client that does not trust the certificate refuses it.
    let untrusting = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let e = untrusting
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect_err("a self-signed certificate is not trusted by default");
    assert!(!e.is_timeout(), "{e:?}");

    // Plain HTTP to the HTTPS port: answered at once, with a 400 saying so.
    let asked = Instant::now();
    let r = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .expect("plain HTTP gets an answer, not a reset or a hang");
    assert_eq!(r.status(), 400);
    assert!(
        r.text().await.unwrap().contains("use https://"),
        "the answer says what to do"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );

    // Bytes that are neither TLS nor HTTP: the connection is closed at once.
    let mut garbage = TcpStream::connect(app.addr).await.unwrap();
    garbage
        .write_all(b"\x00\x01\x02\x03 not tls\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the connection was not closed");

    // A client that opens a connection and sends no handshake holds up
    // nobody, and is closed after header_read_timeout (2 s here).
    let mut stalled = TcpStream::connect(app.addr).await.unwrap();
    let opened = Instant::now();
    let r = client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        opened.elapsed() < Duration::from_secs(1),
        "{:?}",
        opened.elapsed()
    );
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), stalled.read(&mut buf))
        .await
        .expect("a stalled handshake is closed within its timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed, nothing sent");
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(6),
        "closed after {took:?}"
    );

    // After all that, the daemon still serves HTTPS (the admin API too).
    let r = client
        .get(format!("https://localhost:{port}/v1/admin/tenants"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The failures were counted at DEBUG, never warned about per connection;
    // the start-up line says https.
    let logs = crate::logs::text();
    assert!(logs.contains("TLS handshake failed"), "no DEBUG line");
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("WARN") && l.contains("handshake")),
        "a handshake failure was logged at WARN"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("Serving the agent and admin API")
                && l.contains(&format!("url=https://127.0.0.1:{port}"))),
        "the start-up line does not say https"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_reload_keeps_serving_the_certificate_the_daemon_started_with() {
    let env = Env::new(&[SimKind::Soti], 1).await;
    let spec = MdmSpec {
        background_sync: false,
        ..MdmSpec::new(SimKind::Soti)
    };
    let main = env.write_config("tls-reload", &[spec], "0", "");
    let old_pem = with_tls(&main);
    let app = spawn_app(&main).await;
    let url = format!("https://127.0.0.1:{}/healthz", app.addr.port());

    // A renewed certificate on disk, then SIGHUP's reload: it applies (the
    // tenants part), and the listener goes on with the certificate it has.
    let new_pem = with_tls(&main);
    assert_ne!(old_pem, new_pem);
    mtd_connector::reload::reload(&app.state)
        .await
        .expect("the reload succeeds");
    let r = trusting(&old_pem).get(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let e = trusting(&new_pem)
        .get(&url)
        .send()
        .await
        .expect_err("the new certificate takes a restart");
    assert!(!e.is_timeout(), "{e:?}");
    assert!(
        crate::logs::text().contains("[server] changed: a restart is needed"),
        "the reload says the certificate waits for a restart"
    );
    app.shutdown().await;
}

/// The console over HTTPS: its session cookie is `Secure`, and a form POST
/// over HTTP/2 (no `Host` header: the authority is in the request line) from
/// the daemon's own `https://` origin passes the origin check.
#[tokio::test]
async fn the_console_over_https_sets_a_secure_cookie_and_knows_its_own_origin() {
    let env = Env::new(&[SimKind::Soti], 1).await;
    let spec = MdmSpec {
        background_sync: false,
        ..MdmSpec::new(SimKind::Soti)
    };
    let main = env.write_config("tls-tenant", &[spec], "0", "");
    let pem = with_tls(&main);
    let app = spawn_app(&main).await;
    let origin = format!("https://localhost:{}", app.addr.port());
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |from: &str| {
        client
            .post(format!("{origin}/console/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", from)
            .body(format!("token={ADMIN_TOKEN}"))
            .send()
    };
    let r = login(&origin).await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap();
    let attributes: Vec<&str> = cookie.split(';').map(str::trim).collect();
    for a in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(attributes.contains(&a), "{a} in {cookie}");
    }
    // The plain-HTTP origin of the same host is another origin.
    let other = format!("http://localhost:{}", app.addr.port());
    assert_eq!(login(&other).await.unwrap().status(), 403);
    app.shutdown().await;
}
