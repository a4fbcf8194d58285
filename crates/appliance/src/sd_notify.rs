//! The systemd notification protocol (sd_notify): READY=1, WATCHDOG=1,
//! STATUS=..., STOPPING=1, sent as datagrams to $NOTIFY_SOCKET.

use std::os::unix::net::UnixDatagram;

/// Where notifications go.
pub trait Notify {
    fn notify(&self, state: &str);
}

/// The real notifier; a no-op when not started by systemd.
#[derive(Debug, Default)]
pub struct Systemd {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Systemd {
    pub fn from_env() -> Self {
        let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
            return Systemd::default();
        };
        let path = path.to_string_lossy().into_owned();
        let addr = if let Some(name) = path.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        } else {
            std::os::unix::net::SocketAddr::from_pathname(&path)
        };
        match (UnixDatagram::unbound(), addr) {
            (Ok(s), Ok(a)) => Systemd {
                socket: Some((s, a)),
            },
            _ => Systemd::default(),
        }
    }

    /// The watchdog interval systemd expects pings within, if any.
    pub fn watchdog_interval() -> Option<std::time::Duration> {
        let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        let pid_ok = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        (pid_ok && usec > 0).then(|| std::time::Duration::from_micros(usec))
    }
}

impl Notify for Systemd {
    fn notify(&self, state: &str) {
        if let Some((s, a)) = &self.socket
            && let Err(e) = s.send_to_addr(state.as_bytes(), a)
        {
            tracing::debug!(error = %e, "sd_notify failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_datagrams_to_the_socket() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Systemd {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
            )),
        };
        n.notify("READY=1\nSTATUS=holding 77.0 °C");
        let mut buf = [0u8; 128];
        let len = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], "READY=1\nSTATUS=holding 77.0 °C".as_bytes());
    }
}
