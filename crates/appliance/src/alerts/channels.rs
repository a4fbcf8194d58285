//! Where alerts go: ntfy (a push to the phone), a webhook, and e-mail. One
//! trait, one implementation per channel; each is built only when its
//! settings are filled in.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use lettre::Transport;
use zeroize::Zeroizing;

use super::{Condition, Kind, Message};
use crate::backup::redact_url;
use crate::config::{Alerts, Config};

/// A way to reach the owner.
pub trait Channel {
    /// Its name in the state file and the report.
    fn name(&self) -> &'static str;
    /// Whether it carries this condition at all.
    fn carries(&self, _c: Condition) -> bool {
        true
    }
    fn send(&self, m: &Message) -> Result<(), String>;
}

const PRIORITIES: [&str; 11] = [
    "min", "low", "default", "high", "urgent", "max", "1", "2", "3", "4", "5",
];
const SECURITY: [&str; 3] = ["starttls", "tls", "plain"];

/// Checks the alert settings when the config is loaded, so that a mistake
/// fails the build of the system instead of the first alert. The error
/// names the key without its `alerts.` prefix.
pub fn validate(a: &Alerts) -> Result<(), String> {
    for (key, url) in [("ntfy-url", &a.ntfy_url), ("webhook-url", &a.webhook_url)] {
        if !(url.is_empty() || url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "{key} must start with https:// (or http://), not `{}`",
                redact_url(url)
            ));
        }
    }
    if !a.ntfy_url.is_empty() {
        let rest = a.ntfy_url.split_once("://").map_or("", |(_, r)| r);
        let topic = rest.split_once('/').map_or("", |(_, t)| t);
        if topic.is_empty() || topic.contains('/') {
            return Err(
                "ntfy-url must be a topic's URL, such as https://ntfy.sh/<your topic>".into(),
            );
        }
    }
    if !PRIORITIES.contains(&a.ntfy_priority.as_str()) {
        return Err(format!(
            "ntfy-priority must be one of {}, not `{}`",
            PRIORITIES.join(", "),
            a.ntfy_priority
        ));
    }
    if !SECURITY.contains(&a.smtp_security.as_str()) {
        return Err(format!(
            "smtp-security must be starttls, tls or plain, not `{}`",
            a.smtp_security
        ));
    }
    if a.smtp_password_file.is_absolute() {
        return Err(
            "smtp-password-file is relative to drive.mount-point (it lives on the drive)".into(),
        );
    }
    if !a.smtp_host.is_empty() {
        if a.smtp_security == "plain" && !is_loopback(&a.smtp_host) {
            return Err(format!(
                "smtp-security = \"plain\" sends the password and the alerts unencrypted; it is allowed only to a relay on this machine (localhost), not to {}",
                a.smtp_host
            ));
        }
        a.email_from
            .parse::<lettre::message::Mailbox>()
            .map_err(|_| {
                format!(
                    "email-from must be an e-mail address when smtp-host is set, not `{}`",
                    a.email_from
                )
            })?;
        if a.email_to.is_empty() {
            return Err("email-to must list at least one address when smtp-host is set".into());
        }
        for to in &a.email_to {
            to.parse::<lettre::message::Mailbox>()
                .map_err(|_| format!("email-to: `{to}` is not an e-mail address"))?;
        }
    }
    if !(1..=300).contains(&a.timeout_secs) {
        return Err("timeout-secs must be between 1 and 300".into());
    }
    Ok(())
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The names of the channels whose settings are filled in, as `status`
/// lists them (e-mail too while it waits for its password).
pub fn set(a: &Alerts) -> Vec<&'static str> {
    [
        ("ntfy", &a.ntfy_url),
        ("webhook", &a.webhook_url),
        ("email", &a.smtp_host),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(n, _)| n)
    .collect()
}

/// The channels the config fills in. E-mail needs its password from the
/// drive: while that cannot be read it is left out, with the reason.
pub fn configured(cfg: &Config) -> (Vec<Box<dyn Channel>>, Vec<String>) {
    let a = &cfg.alerts;
    let timeout = Duration::from_secs(a.timeout_secs);
    let mut v: Vec<Box<dyn Channel>> = vec![];
    let mut waiting = vec![];
    if !a.ntfy_url.is_empty() {
        v.push(Box::new(Ntfy {
            url: a.ntfy_url.clone(),
            priority: a.ntfy_priority.clone(),
            agent: agent(timeout),
        }));
    }
    if !a.webhook_url.is_empty() {
        v.push(Box::new(Webhook {
            url: a.webhook_url.clone(),
            agent: agent(timeout),
        }));
    }
    if !a.smtp_host.is_empty() {
        match Email::new(cfg, timeout) {
            Ok(e) => v.push(Box::new(e)),
            Err(why) => waiting.push(why),
        }
    }
    (v, waiting)
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(true)
        .build()
        .new_agent()
}

fn http_error(url: &str, e: ureq::Error) -> String {
    match e {
        ureq::Error::StatusCode(code) => format!("{} answered HTTP {code}", redact_url(url)),
        e => format!(
            "{} did not answer: {}",
            redact_url(url),
            e.to_string().replace(url, &redact_url(url))
        ),
    }
}

/// A header value that any HTTP library passes: ASCII as it is, anything
/// else in RFC 2047's encoded-word form, which ntfy decodes.
fn header_text(s: &str) -> String {
    if s.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        s.to_owned()
    } else {
        use base64::Engine;
        format!(
            "=?UTF-8?B?{}?=",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    }
}

/// ntfy's publish API: a POST of the text to the topic's URL, with the
/// title, priority, tags and click-through address in headers.
pub struct Ntfy {
    url: String,
    priority: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Ntfy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ntfy({})", redact_url(&self.url))
    }
}

impl Channel for Ntfy {
    fn name(&self) -> &'static str {
        "ntfy"
    }

    fn send(&self, m: &Message) -> Result<(), String> {
        let (priority, tag) = match m.kind {
            Kind::Raised => (self.priority.as_str(), "warning"),
            Kind::Resolved => ("default", "white_check_mark"),
            Kind::Test => ("default", "bell"),
        };
        let tags = match m.condition {
            Some(c) => format!("{tag},{}", c.key()),
            None => tag.to_owned(),
        };
        let mut req = self
            .agent
            .post(&self.url)
            .header("Title", header_text(&m.title))
            .header("Priority", priority)
            .header("Tags", tags)
            .header("Content-Type", "text/plain; charset=utf-8");
        if let Some(u) = &m.page_url {
            req = req.header("Click", u);
        }
        req.send(m.body.as_bytes())
            .map(drop)
            .map_err(|e| http_error(&self.url, e))
    }
}

/// A JSON POST per message, for home-automation hubs and the like.
pub struct Webhook {
    url: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Webhook({})", redact_url(&self.url))
    }
}

impl Channel for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn send(&self, m: &Message) -> Result<(), String> {
        let body = serde_json::json!({
            "appliance": m.appliance,
            "condition": m.condition.map(|c| c.key()),
            "event": m.kind,
            "title": m.title,
            "message": m.body,
            "page_url": m.page_url,
            "time": m.time,
        });
        self.agent
            .post(&self.url)
            .send_json(&body)
            .map(drop)
            .map_err(|e| http_error(&self.url, e))
    }
}

/// E-mail through the owner's SMTP server (lettre), TLS unless the relay is
/// on this machine.
pub struct Email {
    from: lettre::message::Mailbox,
    to: Vec<lettre::message::Mailbox>,
    transport: lettre::SmtpTransport,
    host: String,
}

impl std::fmt::Debug for Email {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Email({})", self.host)
    }
}

impl Email {
    fn new(cfg: &Config, timeout: Duration) -> Result<Email, String> {
        let a = &cfg.alerts;
        let builder = match a.smtp_security.as_str() {
            "tls" => lettre::SmtpTransport::relay(&a.smtp_host),
            "starttls" => lettre::SmtpTransport::starttls_relay(&a.smtp_host),
            _ => Ok(lettre::SmtpTransport::builder_dangerous(&a.smtp_host)),
        }
        .map_err(|e| format!("e-mail: {e}"))?;
        let mut builder = builder.port(a.smtp_port).timeout(Some(timeout));
        if !a.smtp_user.is_empty() {
            let path: PathBuf = cfg.drive.mount_point.join(&a.smtp_password_file);
            let password = Zeroizing::new(std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "e-mail waits for the drive: its password ({}) cannot be read: {e}",
                    path.display()
                )
            })?);
            let password = password.trim_end_matches(['\r', '\n']);
            // lettre keeps its own copy, which it does not wipe.
            builder =
                builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
                    a.smtp_user.clone(),
                    password.to_owned(),
                ));
        }
        let parse = |s: &str| {
            s.parse::<lettre::message::Mailbox>()
                .map_err(|e| format!("e-mail: `{s}`: {e}"))
        };
        Ok(Email {
            from: parse(&a.email_from)?,
            to: a
                .email_to
                .iter()
                .map(|t| parse(t))
                .collect::<Result<_, _>>()?,
            transport: builder.build(),
            host: a.smtp_host.clone(),
        })
    }
}

impl Channel for Email {
    fn name(&self) -> &'static str {
        "email"
    }

    // Its password is on the drive: it cannot be sent while the drive is
    // locked, and by the unlock the news would be stale.
    fn carries(&self, c: Condition) -> bool {
        c != Condition::Locked
    }

    fn send(&self, m: &Message) -> Result<(), String> {
        let mut b = lettre::Message::builder()
            .from(self.from.clone())
            .subject(&m.title)
            .header(lettre::message::header::ContentType::TEXT_PLAIN);
        for to in &self.to {
            b = b.to(to.clone());
        }
        let mail = b.body(m.body.clone()).map_err(|e| format!("e-mail: {e}"))?;
        self.transport
            .send(&mail)
            .map(drop)
            .map_err(|e| format!("e-mail through {}: {e}", self.host))
    }
}
