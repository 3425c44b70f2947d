//! `test-connection` and `sync` through the built binary, against the simulators.

use crate::support::bin;
use mtd_sim::{soti, Fault, SimKind, SimOptions, Simulator};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The simulators run on a runtime of their own while the binary runs.
pub(crate) struct Sims {
    rt: tokio::runtime::Runtime,
    sim: Option<Simulator>,
}

impl Sims {
    pub(crate) fn start() -> Sims {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sim = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            Simulator::start(
                listener,
                SimOptions {
                    kinds: vec![SimKind::Soti, SimKind::Airwatch, SimKind::Maas360],
                    devices: 25,
                    seed: 3,
                    ..Default::default()
                },
            )
            .unwrap()
        });
        Sims { rt, sim: Some(sim) }
    }
    pub(crate) fn sim(&self) -> &Simulator {
        self.sim.as_ref().unwrap()
    }
}

impl Sims {
    /// A TLS front for the simulators with a fresh self-signed certificate for
    /// `localhost`; returns its port and the certificate (PEM).
    fn tls_front(&self) -> (u16, String) {
        use tokio_rustls::rustls;
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let pem = certified.cert.pem();
        let key =
            rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let backend = self.sim().local_addr();
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        self.rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses the certificate ends the handshake: nothing to do then.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(backend).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        (port, pem)
    }
}

impl Drop for Sims {
    fn drop(&mut self) {
        if let Some(sim) = self.sim.take() {
            self.rt.block_on(sim.shutdown());
        }
    }
}

pub(crate) fn soti_mdm(name: &str, url: &str, password: &str) -> String {
    format!(
        "[[mdm]]\nname = \"{name}\"\nkind = \"soti\"\nurl = \"{url}\"\nbackground_sync = false\n[mdm.credentials]\nclient_id = \"{}\"\nclient_secret = \"{}\"\nusername = \"{}\"\npassword = \"{password}\"\n",
        soti::DEFAULT_CLIENT_ID,
        soti::DEFAULT_CLIENT_SECRET,
        soti::DEFAULT_USERNAME
    )
}

pub(crate) fn airwatch_mdm(name: &str, url: &str, username: &str) -> String {
    use mtd_sim::airwatch;
    format!(
        "[[mdm]]\nname = \"{name}\"\nkind = \"airwatch\"\nurl = \"{url}\"\nbackground_sync = false\n[mdm.credentials]\nusername = \"{username}\"\npassword = \"{}\"\napi_key = \"{}\"\n",
        airwatch::DEFAULT_PASSWORD,
        airwatch::DEFAULT_API_KEY
    )
}

pub(crate) fn maas360_mdm(name: &str, url: &str, password: &str) -> String {
    use mtd_sim::maas360 as m;
    format!(
        "[[mdm]]\nname = \"{name}\"\nkind = \"maas360\"\nurl = \"{url}\"\nbackground_sync = false\n[mdm.credentials]\nbilling_id = \"{}\"\napp_id = \"{}\"\napp_version = \"{}\"\nplatform_id = \"{}\"\napp_access_key = \"{}\"\nusername = \"{}\"\npassword = \"{password}\"\n",
        m::DEFAULT_BILLING_ID,
        m::DEFAULT_APP_ID,
        m::DEFAULT_APP_VERSION,
        m::DEFAULT_PLATFORM_ID,
        m::DEFAULT_APP_ACCESS_KEY,
        m::DEFAULT_USERNAME,
    )
}

fn write(dir: &Path, mdms: &[String]) -> PathBuf {
    std::fs::create_dir_all(dir.join("tenants.d")).unwrap();
    let main = dir.join("connector.toml");
    // A port nobody listens on: `sync` finds no daemon there and syncs in
    // its own process (the default 127.0.0.1:8080 may be a demo's).
    std::fs::write(
        &main,
        format!(
            "[server]\nlisten = \"127.0.0.1:{}\"\n[store]\npath = \"data/c.db\"\n[sync]\nfull_sync_every = \"0\"\n",
            crate::admin::free_port()
        ),
    )
    .unwrap();
    let mut t = String::from("id = \"acme\"\nagent_secret = \"s3cret-agent-key\"\n\n");
    for m in mdms {
        t.push_str(m);
        t.push('\n');
    }
    std::fs::write(dir.join("tenants.d/acme.toml"), t).unwrap();
    main
}

fn run(config: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .args(["--tenant", "acme"])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn line_for<'a>(out: &'a str, mdm: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(mdm))
        .unwrap_or_else(|| panic!("no line for {mdm} in:\n{out}"))
}

#[test]
fn test_connection_tells_each_failure_apart_in_plain_words() {
    let sims = Sims::start();
    let soti_url = sims.sim().base_url(SimKind::Soti);
    let airwatch_url = sims.sim().base_url(SimKind::Airwatch);
    let maas360_url = sims.sim().base_url(SimKind::Maas360);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!(
            "http://127.0.0.1:{}/MobiControl",
            l.local_addr().unwrap().port()
        )
    };
    let wrong_path = soti_url.replace("/MobiControl", "/NotMobiControl");
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        &[
            soti_mdm("Good SOTI", &soti_url, soti::DEFAULT_PASSWORD),
            soti_mdm("Wrong password", &soti_url, "not-the-password"),
            soti_mdm("Wrong path", &wrong_path, soti::DEFAULT_PASSWORD),
            soti_mdm("Closed port", &closed, soti::DEFAULT_PASSWORD),
            airwatch_mdm(
                "No API role",
                &airwatch_url,
                mtd_sim::airwatch::DEFAULT_NO_API_ROLE_USERNAME,
            ),
            maas360_mdm(
                "Good MaaS360",
                &maas360_url,
                mtd_sim::maas360::DEFAULT_PASSWORD,
            ),
            // MaaS360 refuses a login with HTTP 200 and an error code.
            maas360_mdm("MaaS360 wrong password", &maas360_url, "not-the-password"),
        ],
    );
    let (code, out) = run(&config, &["test-connection"]);
    assert_eq!(code, Some(1), "any failure exits non-zero:\n{out}");
    let good = line_for(&out, "Good SOTI");
    assert!(
        good.starts_with("OK") && good.contains("success") && good.contains("25 devices")
            || good.contains("devices"),
        "{good}"
    );
    assert!(
        line_for(&out, "Wrong password").contains("401: wrong"),
        "{out}"
    );
    assert!(
        line_for(&out, "Wrong path").contains("404: wrong URL or instance"),
        "{out}"
    );
    assert!(
        line_for(&out, "Closed port")
            .contains("cannot connect: check DNS, routing and the firewall"),
        "{out}"
    );
    assert!(
        line_for(&out, "No API role").contains("403: the account lacks the API role"),
        "{out}"
    );
    let good = line_for(&out, "Good MaaS360");
    assert!(
        good.starts_with("OK") && good.contains("25 devices"),
        "{out}"
    );
    let refused = line_for(&out, "MaaS360 wrong password");
    assert!(
        refused.starts_with("FAIL") && refused.contains("wrong credentials"),
        "{out}"
    );
    assert!(!out.contains("not-the-password"), "no secret in the output");

    // One MDM only, and rate limited.
    sims.sim()
        .soti()
        .unwrap()
        .core()
        .inject(Fault::rate_limited(9).times(1).including_token())
        .unwrap();
    let (code, out) = run(&config, &["test-connection", "--mdm", "Good SOTI"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("OK") || l.starts_with("FAIL"))
            .count(),
        1,
        "{out}"
    );
    assert!(
        line_for(&out, "Good SOTI").contains("rate limited by the MDM: try again in 9 s"),
        "{out}"
    );

    let (code, out) = run(&config, &["test-connection", "--mdm", "Good SOTI"]);
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn sync_command_syncs_now_and_prints_the_counts() {
    let sims = Sims::start();
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        &[soti_mdm(
            "Acme SOTI",
            &sims.sim().base_url(SimKind::Soti),
            soti::DEFAULT_PASSWORD,
        )],
    );
    let (code, out) = run(&config, &["sync"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        line_for(&out, "Acme SOTI: succeeded").contains("devices 25 added, 0 updated, 0 removed"),
        "{out}"
    );
    let (code, out) = run(&config, &["sync", "--mdm", "Acme SOTI"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("devices 0 added, 0 updated, 0 removed"),
        "a second sync changes nothing:\n{out}"
    );

    let (code, out) = run(&config, &["sync", "--mdm", "Nope"]);
    assert_ne!(code, Some(0));
    assert!(out.contains("no MDM named `Nope`"), "{out}");
}

#[test]
fn test_connection_tells_an_untrusted_certificate_apart_and_ca_cert_fixes_it() {
    let sims = Sims::start();
    let (port, pem) = sims.tls_front();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sim-ca.pem"), pem).unwrap();
    let url = format!("https://localhost:{port}/MobiControl");
    let trusted = soti_mdm("Trusted", &url, soti::DEFAULT_PASSWORD).replace(
        "background_sync = false\n",
        "background_sync = false\nca_cert = \"../sim-ca.pem\"\n",
    );
    let config = write(
        dir.path(),
        &[soti_mdm("Untrusted", &url, soti::DEFAULT_PASSWORD), trusted],
    );
    let (code, out) = run(&config, &["test-connection"]);
    assert_eq!(code, Some(1), "{out}");
    let untrusted = line_for(&out, "Untrusted");
    assert!(
        untrusted.contains("TLS trust failure") && untrusted.contains("set `ca_cert`"),
        "{out}"
    );
    assert!(
        line_for(&out, "Trusted (").starts_with("OK"),
        "with ca_cert the same server is trusted:\n{out}"
    );
}

#[test]
fn test_connection_names_a_redirect_to_another_port_and_sends_nothing_there() {
    let sims = Sims::start();
    // Another origin: a listener on another port that counts what reaches it.
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = elsewhere.local_addr().unwrap().port();
    elsewhere.set_nonblocking(true).unwrap();
    let soti_location = format!("http://127.0.0.1:{port}/MobiControl/api/token");
    let airwatch_location = format!("http://127.0.0.1:{port}/airwatch/API/mdm/devices/search");
    sims.sim()
        .soti()
        .unwrap()
        .core()
        .inject(Fault::redirect(soti_location.as_str()).including_token())
        .unwrap();
    sims.sim()
        .airwatch()
        .unwrap()
        .core()
        .inject(Fault::redirect(airwatch_location.as_str()))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        &[
            soti_mdm(
                "Moved SOTI",
                &sims.sim().base_url(SimKind::Soti),
                soti::DEFAULT_PASSWORD,
            ),
            airwatch_mdm(
                "Moved AirWatch",
                &sims.sim().base_url(SimKind::Airwatch),
                mtd_sim::airwatch::DEFAULT_USERNAME,
            ),
        ],
    );
    let (code, out) = run(&config, &["test-connection"]);
    assert_eq!(code, Some(1), "{out}");
    let soti = line_for(&out, "Moved SOTI");
    assert!(
        soti.starts_with("FAIL") && soti.contains(&soti_location),
        "{out}"
    );
    let airwatch = line_for(&out, "Moved AirWatch");
    assert!(
        airwatch.starts_with("FAIL") && airwatch.contains(&airwatch_location),
        "{out}"
    );
    assert!(
        matches!(elsewhere.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "something connected to the other origin"
    );
}

/// Issue 17: with `[mdm.risk_signal]`, test-connection checks that what the
/// signal writes exists at the MDM, and names what is missing.
#[test]
fn test_connection_names_a_missing_risk_signal_attribute_or_tag() {
    let sims = Sims::start();
    let dir = tempfile::tempdir().unwrap();
    let signal = "[mdm.risk_signal]\nenabled = true\n";
    let config = write(
        dir.path(),
        &[
            soti_mdm(
                "Acme SOTI",
                &sims.sim().base_url(SimKind::Soti),
                soti::DEFAULT_PASSWORD,
            ) + signal,
            airwatch_mdm(
                "Acme AirWatch",
                &sims.sim().base_url(SimKind::Airwatch),
                mtd_sim::airwatch::DEFAULT_USERNAME,
            ) + signal,
        ],
    );
    let (code, out) = run(&config, &["test-connection"]);
    assert_eq!(code, Some(0), "everything exists at first:\n{out}");

    // Someone deletes the attribute and a tag in the consoles.
    assert!(sims
        .sim()
        .soti()
        .unwrap()
        .remove_custom_attribute("MTD_Threat_Level"));
    assert!(sims
        .sim()
        .airwatch()
        .unwrap()
        .remove_tag("MTD_Threat_Level_High"));
    let (code, out) = run(&config, &["test-connection"]);
    assert_ne!(code, Some(0), "{out}");
    let soti_line = line_for(&out, "Acme SOTI");
    assert!(
        soti_line.starts_with("FAIL") && soti_line.contains("missing: MTD_Threat_Level"),
        "{out}"
    );
    let aw_line = line_for(&out, "Acme AirWatch");
    assert!(
        aw_line.starts_with("FAIL") && aw_line.contains("MTD_Threat_Level_High"),
        "{out}"
    );
    assert!(!aw_line.contains("MTD_Threat_Level_Low"), "{out}");
}
