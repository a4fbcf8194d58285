//! The URLs at which the phone reaches Immich: LAN addresses, the mDNS name,
//! and the Tailscale name and address when Tailscale is up.

use std::net::IpAddr;
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::config::Config;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Urls {
    pub lan: Vec<String>,
    pub tailscale: Vec<String>,
    /// Why there is no Tailscale URL, when there is none.
    pub tailscale_note: Option<String>,
}

impl Urls {
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.lan.iter().chain(&self.tailscale)
    }
}

/// What `tailscale status --json` says about this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailscaleSelf {
    pub dns_name: String,
    pub ips: Vec<IpAddr>,
}

/// Where addresses come from (interfaces, the tailscale CLI).
pub trait AddressSource {
    fn interface_addresses(&self) -> Vec<(String, IpAddr)>;
    /// Ok(None) when Tailscale is installed but not logged in or not running.
    fn tailscale(&self) -> Result<Option<TailscaleSelf>, String>;
}

#[derive(Debug, Clone)]
pub struct SystemAddresses {
    pub tailscale_cli: String,
}

impl AddressSource for SystemAddresses {
    fn interface_addresses(&self) -> Vec<(String, IpAddr)> {
        let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
            return vec![];
        };
        addrs
            .filter_map(|a| {
                let ip = a.address.as_ref().and_then(|s| {
                    s.as_sockaddr_in()
                        .map(|v4| IpAddr::V4(v4.ip()))
                        .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
                })?;
                Some((a.interface_name, ip))
            })
            .collect()
    }

    fn tailscale(&self) -> Result<Option<TailscaleSelf>, String> {
        let out = Command::new(&self.tailscale_cli)
            .args(["status", "--json", "--peers=false"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("tailscale is not installed ({e})"))?;
        parse_tailscale_status(&out.stdout)
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Status {
    backend_state: String,
    #[serde(rename = "Self")]
    me: Option<SelfNode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SelfNode {
    #[serde(rename = "DNSName")]
    dns_name: String,
    #[serde(default)]
    tailscale_i_ps: Vec<IpAddr>,
}

pub fn parse_tailscale_status(json: &[u8]) -> Result<Option<TailscaleSelf>, String> {
    let s: Status = serde_json::from_slice(json)
        .map_err(|e| format!("unexpected `tailscale status` output: {e}"))?;
    if s.backend_state != "Running" {
        return Ok(None);
    }
    Ok(s.me.map(|m| TailscaleSelf {
        dns_name: m.dns_name.trim_end_matches('.').to_owned(),
        ips: m.tailscale_i_ps,
    }))
}

/// The URLs to print. LAN URLs only when the LAN port is open.
pub fn urls(cfg: &Config, src: &dyn AddressSource) -> Urls {
    let mut u = Urls::default();
    let port = cfg.immich.lan_port;
    if port != 0 {
        if !cfg.immich.mdns_name.is_empty() {
            u.lan
                .push(format!("http://{}:{port}", cfg.immich.mdns_name));
        }
        for (iface, ip) in src.interface_addresses() {
            if is_lan(&iface, &ip) {
                u.lan.push(match ip {
                    IpAddr::V4(v4) => format!("http://{v4}:{port}"),
                    IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
                });
            }
        }
    }
    if !cfg.immich.tailscale {
        return u;
    }
    match src.tailscale() {
        Ok(Some(ts)) => {
            if cfg.immich.tailscale_serve && !ts.dns_name.is_empty() {
                u.tailscale.push(format!("https://{}", ts.dns_name));
            }
            // Immich listens on the tailnet on its own port as well.
            let ts_port = cfg
                .immich
                .url
                .rsplit(':')
                .next()
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or(2283);
            if !cfg.immich.tailscale_serve {
                if !ts.dns_name.is_empty() {
                    u.tailscale
                        .push(format!("http://{}:{ts_port}", ts.dns_name));
                }
                for ip in ts.ips.iter().filter(|ip| ip.is_ipv4()) {
                    u.tailscale.push(format!("http://{ip}:{ts_port}"));
                }
            }
        }
        Ok(None) => {
            u.tailscale_note = Some("Tailscale is not logged in; run `sudo tailscale up`".into())
        }
        Err(e) => u.tailscale_note = Some(e),
    }
    u
}

fn is_lan(iface: &str, ip: &IpAddr) -> bool {
    if iface == "lo"
        || iface.starts_with("tailscale")
        || iface.starts_with("docker")
        || iface.starts_with("veth")
    {
        return false;
    }
    match ip {
        IpAddr::V4(v4) => !v4.is_loopback() && !v4.is_link_local() && !v4.is_unspecified(),
        // Only unique-local and global v6 addresses are usable as URLs.
        IpAddr::V6(v6) => {
            let seg = v6.segments()[0];
            !v6.is_loopback() && (seg & 0xffc0) != 0xfe80 && !v6.is_unspecified()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake(Vec<(String, IpAddr)>, Result<Option<TailscaleSelf>, String>);
    impl AddressSource for Fake {
        fn interface_addresses(&self) -> Vec<(String, IpAddr)> {
            self.0.clone()
        }
        fn tailscale(&self) -> Result<Option<TailscaleSelf>, String> {
            self.1.clone()
        }
    }

    #[test]
    fn parses_tailscale_status() {
        let j = br#"{"BackendState":"Running","Self":{"DNSName":"immich.tail1234.ts.net.","TailscaleIPs":["100.101.102.103","fd7a:115c:a1e0::1"]}}"#;
        let s = parse_tailscale_status(j).unwrap().unwrap();
        assert_eq!(s.dns_name, "immich.tail1234.ts.net");
        assert_eq!(s.ips.len(), 2);
        let stopped = br#"{"BackendState":"NeedsLogin","Self":{"DNSName":"","TailscaleIPs":[]}}"#;
        assert_eq!(parse_tailscale_status(stopped).unwrap(), None);
        assert!(parse_tailscale_status(b"not json").is_err());
    }

    #[test]
    fn builds_urls() {
        let cfg = Config::defaults();
        let fake = Fake(
            vec![
                ("lo".into(), "127.0.0.1".parse().unwrap()),
                ("end0".into(), "192.168.1.20".parse().unwrap()),
                ("end0".into(), "fe80::1".parse().unwrap()),
                ("tailscale0".into(), "100.101.102.103".parse().unwrap()),
            ],
            Ok(Some(TailscaleSelf {
                dns_name: "immich.tail1234.ts.net".into(),
                ips: vec!["100.101.102.103".parse().unwrap()],
            })),
        );
        let u = urls(&cfg, &fake);
        assert_eq!(
            u.lan,
            ["http://immich.local:2283", "http://192.168.1.20:2283"]
        );
        assert_eq!(
            u.tailscale,
            [
                "http://immich.tail1234.ts.net:2283",
                "http://100.101.102.103:2283"
            ]
        );
        let mut serve = cfg.clone();
        serve.immich.tailscale_serve = true;
        serve.immich.lan_port = 0;
        let u = urls(&serve, &fake);
        assert!(u.lan.is_empty(), "the LAN port is closed");
        assert_eq!(u.tailscale, ["https://immich.tail1234.ts.net"]);
        let down = Fake(vec![], Ok(None));
        assert!(
            urls(&cfg, &down)
                .tailscale_note
                .unwrap()
                .contains("tailscale up")
        );
        let mut off = cfg.clone();
        off.immich.tailscale = false;
        let u = urls(&off, &fake);
        assert!(u.tailscale.is_empty() && u.tailscale_note.is_none());
    }
}
