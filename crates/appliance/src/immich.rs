//! Immich's HTTP API, the few routes the appliance uses, behind one trait.
//!
//! Routes, queue names and DTO fields follow `@immich/sdk` (the generated
//! client of Immich v3); `tests/immich_contract.rs` checks them against the
//! pinned package. Servers without `/api/queues` (before v2.4) get the
//! deprecated `/api/jobs` routes instead.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The API key header Immich reads (`ImmichHeader.ApiKey`).
pub const API_KEY_HEADER: &str = "x-api-key";

/// The permissions the throttler's key is created with, and no more.
pub const THROTTLE_PERMISSIONS: [&str; 6] = [
    "queue.read",
    "queue.update",
    "job.read",
    "job.create",
    "systemConfig.read",
    "systemConfig.update",
];

/// Every route this client calls, as (method, path template). The contract
/// test finds each of them in the SDK.
pub const ROUTES: [(&str, &str); 11] = [
    ("GET", "/server/ping"),
    ("GET", "/server/version"),
    ("GET", "/server/features"),
    ("GET", "/queues"),
    ("PUT", "/queues/{name}"),
    ("GET", "/jobs"),
    ("PUT", "/jobs/{name}"),
    ("GET", "/system-config"),
    ("PUT", "/system-config"),
    ("POST", "/auth/login"),
    ("POST", "/api-keys"),
];

#[derive(Debug, thiserror::Error)]
pub enum ImmichError {
    #[error("Immich at {url} is not reachable: {message}")]
    Unreachable { url: String, message: String },
    #[error("Immich refused {what}: HTTP {status}{body}", body = if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        what: String,
        status: u16,
        body: String,
    },
    #[error(
        "the API key was rejected (HTTP {0}); create a new one with `immich-throttle setup-api-key`"
    )]
    Unauthorized(u16),
    #[error("Immich answered {what} with something unexpected: {message}")]
    Decode { what: String, message: String },
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatistics {
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
    pub delayed: u64,
    pub waiting: u64,
    pub paused: u64,
}

/// `QueueResponseDto`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Queue {
    pub name: String,
    pub is_paused: bool,
    pub statistics: QueueStatistics,
}

impl Queue {
    /// Jobs that still have to run.
    pub fn backlog(&self) -> u64 {
        self.statistics.waiting
            + self.statistics.active
            + self.statistics.delayed
            + self.statistics.paused
    }
}

/// `QueueUpdateDto`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueUpdate {
    pub is_paused: bool,
}

/// The legacy `/jobs` shapes (`QueueResponseLegacyDto`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyQueue {
    job_counts: QueueStatistics,
    queue_status: LegacyStatus,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LegacyStatus {
    #[allow(dead_code)]
    is_active: bool,
    is_paused: bool,
}

/// `QueueCommandDto` (legacy).
#[derive(Debug, Clone, Serialize)]
struct LegacyCommand<'a> {
    command: &'a str,
    force: bool,
}

/// The parts of `ServerFeaturesDto` the appliance reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Features {
    /// True when IMMICH_CONFIG_FILE is set: config writes are then refused.
    pub config_file: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct LoginCredential<'a> {
    email: &'a str,
    password: &'a str,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LoginResponse {
    access_token: String,
    is_admin: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ApiKeyCreate<'a> {
    name: &'a str,
    permissions: &'a [&'a str],
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiKeyCreateResponse {
    secret: String,
}

/// The Immich operations the appliance needs.
pub trait ImmichApi {
    fn ping(&self) -> Result<(), ImmichError>;
    fn version(&self) -> Result<Version, ImmichError>;
    fn features(&self) -> Result<Features, ImmichError>;
    /// Every queue the server has (enumerated, never a fixed list).
    fn queues(&self) -> Result<Vec<Queue>, ImmichError>;
    fn set_paused(&self, queue: &str, paused: bool) -> Result<(), ImmichError>;
    fn system_config(&self) -> Result<serde_json::Value, ImmichError>;
    fn put_system_config(&self, config: &serde_json::Value) -> Result<(), ImmichError>;
}

/// The real client: blocking HTTP with short timeouts.
pub struct Client {
    base: String,
    api_key: Option<zeroize::Zeroizing<String>>,
    agent: ureq::Agent,
    /// Set after a 404 on /api/queues: the server predates the queues API.
    legacy: AtomicBool,
}

// By hand: the API key is wiped on drop but would print in a derived Debug.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("legacy", &self.legacy)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `url` is the server root, e.g. `http://127.0.0.1:2283`.
    pub fn new(url: &str, api_key: Option<String>, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .new_agent();
        Client {
            base: format!("{}/api", url.trim_end_matches('/')),
            api_key: api_key.map(zeroize::Zeroizing::new),
            agent,
            legacy: AtomicBool::new(false),
        }
    }

    pub fn uses_legacy_jobs_api(&self) -> bool {
        self.legacy.load(Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn unreachable(&self, e: ureq::Error) -> ImmichError {
        ImmichError::Unreachable {
            url: self.base.clone(),
            message: e.to_string(),
        }
    }

    fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        bearer: Option<&str>,
    ) -> Result<(u16, ureq::Body), ImmichError> {
        let url = self.url(path);
        let mut headers: Vec<(&str, String)> = vec![("accept", "application/json".into())];
        if let Some(k) = &self.api_key {
            headers.push((API_KEY_HEADER, k.to_string()));
        }
        if let Some(t) = bearer {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        let resp = match (method, body) {
            ("GET", _) => {
                let mut r = self.agent.get(&url);
                for (k, v) in &headers {
                    r = r.header(*k, v.as_str());
                }
                r.call()
            }
            (m, b) => {
                let mut r = match m {
                    "PUT" => self.agent.put(&url),
                    _ => self.agent.post(&url),
                };
                for (k, v) in &headers {
                    r = r.header(*k, v.as_str());
                }
                match b {
                    Some(v) => r.send_json(v),
                    None => r.send_empty(),
                }
            }
        }
        .map_err(|e| self.unreachable(e))?;
        let status = resp.status().as_u16();
        Ok((status, resp.into_body()))
    }

    fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        bearer: Option<&str>,
    ) -> Result<T, ImmichError> {
        let what = format!("{method} /api{path}");
        let (status, mut b) = self.send(method, path, body, bearer)?;
        check(status, &what, &mut b)?;
        b.read_json().map_err(|e| ImmichError::Decode {
            what,
            message: e.to_string(),
        })
    }

    fn empty(&self, method: &str, path: &str, body: &serde_json::Value) -> Result<(), ImmichError> {
        let what = format!("{method} /api{path}");
        let (status, mut b) = self.send(method, path, Some(body), None)?;
        check(status, &what, &mut b)
    }

    /// Logs in as an admin and creates an API key with `permissions`;
    /// returns its secret. The password is sent once and not kept.
    pub fn create_api_key(
        &self,
        email: &str,
        password: &str,
        name: &str,
        permissions: &[&str],
    ) -> Result<zeroize::Zeroizing<String>, ImmichError> {
        let login: LoginResponse = self.json(
            "POST",
            "/auth/login",
            Some(&serde_json::to_value(LoginCredential { email, password }).expect("serialises")),
            None,
        )?;
        let token = zeroize::Zeroizing::new(login.access_token);
        if !login.is_admin {
            return Err(ImmichError::Status {
                what: "the login".into(),
                status: 403,
                body: format!(
                    "{email} is not an Immich admin; queue and config routes need an admin's key"
                ),
            });
        }
        let created: ApiKeyCreateResponse = self.json(
            "POST",
            "/api-keys",
            Some(&serde_json::to_value(ApiKeyCreate { name, permissions }).expect("serialises")),
            Some(&token),
        )?;
        Ok(zeroize::Zeroizing::new(created.secret))
    }
}

fn check(status: u16, what: &str, body: &mut ureq::Body) -> Result<(), ImmichError> {
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(ImmichError::Unauthorized(status)),
        _ => {
            let text = body.read_to_string().unwrap_or_default();
            Err(ImmichError::Status {
                what: what.to_owned(),
                status,
                body: text.chars().take(300).collect(),
            })
        }
    }
}

#[derive(Deserialize)]
struct Pong {
    res: String,
}

impl ImmichApi for Client {
    fn ping(&self) -> Result<(), ImmichError> {
        let p: Pong = self.json("GET", "/server/ping", None, None)?;
        if p.res == "pong" {
            Ok(())
        } else {
            Err(ImmichError::Decode {
                what: "GET /api/server/ping".into(),
                message: format!("res = {:?}, not \"pong\"", p.res),
            })
        }
    }

    fn version(&self) -> Result<Version, ImmichError> {
        self.json("GET", "/server/version", None, None)
    }

    fn features(&self) -> Result<Features, ImmichError> {
        self.json("GET", "/server/features", None, None)
    }

    fn queues(&self) -> Result<Vec<Queue>, ImmichError> {
        if !self.legacy.load(Ordering::Relaxed) {
            match self.json::<Vec<Queue>>("GET", "/queues", None, None) {
                Ok(q) => return Ok(q),
                Err(ImmichError::Status { status: 404, .. }) => {
                    self.legacy.store(true, Ordering::Relaxed)
                }
                Err(e) => return Err(e),
            }
        }
        let map: std::collections::BTreeMap<String, LegacyQueue> =
            self.json("GET", "/jobs", None, None)?;
        Ok(map
            .into_iter()
            .map(|(name, q)| Queue {
                name,
                is_paused: q.queue_status.is_paused,
                statistics: q.job_counts,
            })
            .collect())
    }

    fn set_paused(&self, queue: &str, paused: bool) -> Result<(), ImmichError> {
        if !self.legacy.load(Ordering::Relaxed) {
            let body = serde_json::to_value(QueueUpdate { is_paused: paused }).expect("serialises");
            match self.empty("PUT", &format!("/queues/{queue}"), &body) {
                Err(ImmichError::Status { status: 404, .. }) => {
                    self.legacy.store(true, Ordering::Relaxed)
                }
                other => return other,
            }
        }
        let body = serde_json::to_value(LegacyCommand {
            command: if paused { "pause" } else { "resume" },
            force: false,
        })
        .expect("serialises");
        self.empty("PUT", &format!("/jobs/{queue}"), &body)
    }

    fn system_config(&self) -> Result<serde_json::Value, ImmichError> {
        self.json("GET", "/system-config", None, None)
    }

    fn put_system_config(&self, config: &serde_json::Value) -> Result<(), ImmichError> {
        self.empty("PUT", "/system-config", config)
    }
}

/// Sets `job.<queue>.concurrency` in a full system config; false when the
/// queue has no concurrency setting.
pub fn set_concurrency(config: &mut serde_json::Value, queue: &str, n: u64) -> bool {
    match config.pointer_mut(&format!("/job/{queue}/concurrency")) {
        Some(v) => {
            *v = serde_json::Value::from(n);
            true
        }
        None => false,
    }
}

pub fn concurrency(config: &serde_json::Value, queue: &str) -> Option<u64> {
    config
        .pointer(&format!("/job/{queue}/concurrency"))?
        .as_u64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_dto_matches_the_v3_shape() {
        let q: Queue = serde_json::from_str(
            r#"{"name":"thumbnailGeneration","isPaused":false,
               "statistics":{"active":3,"completed":0,"failed":1,"delayed":0,"waiting":1520,"paused":0}}"#,
        )
        .unwrap();
        assert_eq!(q.name, "thumbnailGeneration");
        assert_eq!(q.backlog(), 1523);
        let back = serde_json::to_value(&q).unwrap();
        assert!(back.get("isPaused").is_some() && back.get("statistics").is_some());
    }

    #[test]
    fn concurrency_edits_only_the_named_queue() {
        let mut c = serde_json::json!({"job": {"thumbnailGeneration": {"concurrency": 3},
                                                "videoConversion": {"concurrency": 1}},
                                       "ffmpeg": {"threads": 0}});
        assert!(set_concurrency(&mut c, "thumbnailGeneration", 1));
        assert!(!set_concurrency(&mut c, "facialRecognition", 2));
        assert_eq!(concurrency(&c, "thumbnailGeneration"), Some(1));
        assert_eq!(concurrency(&c, "videoConversion"), Some(1));
        assert_eq!(c["ffmpeg"]["threads"], 0);
    }

    #[test]
    fn unreachable_server_is_a_clear_error() {
        // Nothing listens on port 1.
        let c = Client::new("http://127.0.0.1:1", None, Duration::from_millis(500));
        let e = c.ping().unwrap_err();
        assert!(matches!(e, ImmichError::Unreachable { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("Immich at http://127.0.0.1:1/api is not reachable"),
            "{e}"
        );
    }

    #[test]
    fn the_client_never_prints_its_api_key() {
        let c = Client::new(
            "http://127.0.0.1:2283",
            Some("k3y-that-must-not-show".into()),
            Duration::from_secs(1),
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("k3y-that-must-not-show"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
