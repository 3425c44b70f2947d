//! systemd's service notifications (`sd_notify(3)`, for the unit's
//! `Type=notify`): `READY=1` once the store is open and the listener bound
//! and serving, `RELOADING=1` then `READY=1` around a SIGHUP reload, and
//! `STOPPING=1` when the daemon starts to drain.
//!
//! Hand-written rather than a crate: the protocol is one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `$NOTIFY_SOCKET` (a path,
//! or `@name` for a Linux abstract socket). Without the variable (not run
//! by systemd) nothing is sent; a failed send is logged and otherwise
//! ignored, since a service that cannot tell systemd it is ready is
//! still better running than stopped by us.

/// Sends `state` (`KEY=VALUE` lines) to `$NOTIFY_SOCKET`, if set.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&socket, state) {
        tracing::warn!(error = %e, socket = %socket.to_string_lossy(), "Cannot notify systemd");
    }
}

#[cfg(unix)]
fn send(socket: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let bytes = socket.as_bytes();
    let sock = UnixDatagram::unbound()?;
    let sent = match bytes.split_first() {
        Some((b'@', name)) => send_abstract(&sock, name, state)?,
        Some((b'/', _)) => sock.send_to(state.as_bytes(), socket)?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "NOTIFY_SOCKET is neither an absolute path nor an @abstract name",
            ))
        }
    };
    if sent != state.len() {
        return Err(std::io::Error::other("the notification was cut short"));
    }
    Ok(())
}

#[cfg(target_os = "linux")]
fn send_abstract(
    sock: &std::os::unix::net::UnixDatagram,
    name: &[u8],
    state: &str,
) -> std::io::Result<usize> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(state.as_bytes(), &addr)
}

#[cfg(all(unix, not(target_os = "linux")))]
fn send_abstract(
    _: &std::os::unix::net::UnixDatagram,
    _: &[u8],
    _: &str,
) -> std::io::Result<usize> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets exist on Linux only",
    ))
}

#[cfg(not(unix))]
fn send(_: &std::ffi::OsStr, _: &str) -> std::io::Result<()> {
    Ok(())
}
