//! A fake Immich server for tests, the VM stories and the benchmarks.
//!
//! It answers the routes the appliance uses with the exact shapes of
//! `@immich/sdk` 3.2.2 (the contract test checks its routes, queue names and
//! response fields against the package), keeps queue pause state and the
//! system config, enforces API keys and their permissions, and can drain its
//! queues over time like a busy server. `/__fake/state` is its own
//! introspection route for tests and is not part of Immich's API.

pub mod library;
pub mod markers;
pub mod ntfy;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// Every queue of Immich 3.2 (`QueueName`).
pub const QUEUES: [&str; 19] = [
    "thumbnailGeneration",
    "metadataExtraction",
    "videoConversion",
    "faceDetection",
    "facialRecognition",
    "smartSearch",
    "duplicateDetection",
    "backgroundTask",
    "storageTemplateMigration",
    "migration",
    "search",
    "sidecar",
    "library",
    "notifications",
    "backupDatabase",
    "ocr",
    "workflow",
    "integrityCheck",
    "editor",
];

/// Queues with a concurrency setting (`AdminConfigJobDto`) and defaults.
pub const CONCURRENCY: [(&str, u64); 15] = [
    ("backgroundTask", 5),
    ("editor", 2),
    ("faceDetection", 2),
    ("integrityCheck", 1),
    ("library", 5),
    ("metadataExtraction", 5),
    ("migration", 5),
    ("notifications", 5),
    ("ocr", 1),
    ("search", 5),
    ("sidecar", 5),
    ("smartSearch", 2),
    ("thumbnailGeneration", 3),
    ("videoConversion", 1),
    ("workflow", 5),
];

/// Top-level sections of `AdminConfigDto`.
pub const CONFIG_SECTIONS: [&str; 22] = [
    "backup",
    "ffmpeg",
    "image",
    "integrityChecks",
    "job",
    "library",
    "logging",
    "machineLearning",
    "map",
    "metadata",
    "newVersionCheck",
    "nightlyTasks",
    "notifications",
    "oauth",
    "passwordLogin",
    "reverseGeocoding",
    "server",
    "storageTemplate",
    "templates",
    "theme",
    "trash",
    "user",
];

/// The routes served, (method, path template), all under /api.
pub const ROUTES: [(&str, &str); 14] = [
    ("GET", "/server/ping"),
    ("GET", "/server/version"),
    ("GET", "/server/features"),
    ("GET", "/queues"),
    ("GET", "/queues/{name}"),
    ("PUT", "/queues/{name}"),
    ("GET", "/jobs"),
    ("PUT", "/jobs/{name}"),
    ("GET", "/system-config"),
    ("PUT", "/system-config"),
    ("POST", "/auth/login"),
    ("POST", "/api-keys"),
    ("GET", "/api-keys/me"),
    ("DELETE", "/api-keys/{id}"),
];

#[derive(Debug, Clone)]
pub struct Options {
    /// An API key accepted with every permission (as if created by an admin).
    pub api_key: Option<String>,
    /// Serve only the legacy /jobs routes, like a server before v2.4.
    pub legacy_only: bool,
    /// As if IMMICH_CONFIG_FILE were set: config writes are refused.
    pub config_file: bool,
    pub admin_email: String,
    pub admin_password: String,
    /// Waiting jobs per queue at start.
    pub backlog: Vec<(String, u64)>,
    /// Jobs each unpaused queue finishes per second (0: static counts).
    pub drain_per_sec: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            api_key: None,
            legacy_only: false,
            config_file: false,
            admin_email: "admin@example.com".into(),
            admin_password: "admin-password".into(),
            backlog: vec![],
            drain_per_sec: 0.0,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct QueueState {
    paused: bool,
    waiting: f64,
    active: u64,
    completed: u64,
}

#[derive(Debug)]
struct State {
    opts: Options,
    queues: BTreeMap<String, QueueState>,
    config: Value,
    config_writes: u64,
    /// API key secret -> permissions.
    keys: BTreeMap<String, BTreeSet<String>>,
    tokens: BTreeSet<String>,
    requests: Vec<String>,
    next_id: u64,
    /// Every answer waits this long first: a hung server.
    hang: Duration,
}

fn default_config() -> Value {
    let mut job = serde_json::Map::new();
    for (q, n) in CONCURRENCY {
        job.insert(q.into(), json!({ "concurrency": n }));
    }
    let mut c = serde_json::Map::new();
    for s in CONFIG_SECTIONS {
        c.insert(s.into(), json!({}));
    }
    c.insert("job".into(), Value::Object(job));
    c.insert(
        "ffmpeg".into(),
        json!({ "threads": 0, "preset": "ultrafast", "accel": "disabled" }),
    );
    c.insert(
        "machineLearning".into(),
        json!({
            "enabled": true,
            "urls": ["http://localhost:3003"],
            "availabilityChecks": { "enabled": true, "interval": 30000, "timeout": 2000 },
            "clip": {}, "duplicateDetection": {}, "facialRecognition": {}, "ocr": {}
        }),
    );
    c.insert("newVersionCheck".into(), json!({ "enabled": false }));
    Value::Object(c)
}

/// A running fake; stops when dropped.
#[derive(Debug)]
pub struct Fake {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Fake {
    /// Starts serving on `bind` (e.g. "127.0.0.1:0").
    pub fn spawn(bind: &str, opts: Options) -> std::io::Result<Fake> {
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut queues = BTreeMap::new();
        for q in QUEUES {
            queues.insert(q.to_string(), QueueState::default());
        }
        for (q, n) in &opts.backlog {
            if let Some(s) = queues.get_mut(q) {
                s.waiting = *n as f64;
            }
        }
        let mut keys = BTreeMap::new();
        if let Some(k) = &opts.api_key {
            keys.insert(k.clone(), BTreeSet::from(["all".to_string()]));
        }
        let state = Arc::new(Mutex::new(State {
            opts,
            queues,
            config: default_config(),
            config_writes: 0,
            keys,
            tokens: BTreeSet::new(),
            requests: vec![],
            next_id: 1,
            hang: Duration::ZERO,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(listener, state, stop));
        }
        {
            let (state, stop) = (state.clone(), stop.clone());
            std::thread::spawn(move || drain_loop(state, stop));
        }
        Ok(Fake { addr, state, stop })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The introspection document (what /__fake/state returns).
    pub fn snapshot(&self) -> Value {
        snapshot(&self.state.lock().expect("not poisoned"))
    }

    pub fn set_paused(&self, queue: &str, paused: bool) {
        if let Some(q) = self
            .state
            .lock()
            .expect("not poisoned")
            .queues
            .get_mut(queue)
        {
            q.paused = paused;
        }
    }

    /// From now on every answer waits `d` before it is sent (a server that
    /// hangs: its requests are read, then nothing comes back for a while).
    pub fn set_hang(&self, d: Duration) {
        self.state.lock().expect("not poisoned").hang = d;
    }

    /// Blocks until stopped from elsewhere (used by the binary).
    pub fn wait(&self) {
        while !self.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn snapshot(s: &State) -> Value {
    let paused: Vec<&String> = s
        .queues
        .iter()
        .filter(|(_, q)| q.paused)
        .map(|(n, _)| n)
        .collect();
    json!({
        "paused": paused,
        "configWrites": s.config_writes,
        "config": s.config,
        "requests": s.requests,
        "keys": s.keys.values().map(|p| p.iter().collect::<Vec<_>>()).collect::<Vec<_>>(),
        "waiting": s.queues.iter().map(|(n, q)| (n.clone(), json!(q.waiting.round() as u64))).collect::<serde_json::Map<_, _>>(),
    })
}

fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, _)) => {
                let state = state.clone();
                std::thread::spawn(move || {
                    let _ = handle(stream, &state);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Drains unpaused queues like a server working through a backlog.
fn drain_loop(state: Arc<Mutex<State>>, stop: Arc<AtomicBool>) {
    let tick = Duration::from_millis(200);
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(tick);
        let mut s = state.lock().expect("not poisoned");
        let rate = s.opts.drain_per_sec * tick.as_secs_f64();
        if rate <= 0.0 {
            continue;
        }
        let conc: BTreeMap<String, u64> = CONCURRENCY
            .iter()
            .map(|(q, _)| {
                (
                    q.to_string(),
                    s.config
                        .pointer(&format!("/job/{q}/concurrency"))
                        .and_then(Value::as_u64)
                        .unwrap_or(1),
                )
            })
            .collect();
        for (name, q) in s.queues.iter_mut() {
            if q.paused {
                // In-flight jobs still finish after a pause.
                q.completed += q.active;
                q.active = 0;
                continue;
            }
            let c = conc.get(name).copied().unwrap_or(1);
            let done = rate.min(q.waiting);
            q.waiting -= done;
            q.completed += done.round() as u64;
            q.active = if q.waiting > 0.5 { c } else { 0 };
        }
    }
}

#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Lower-cased names.
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
}

pub fn read_request(stream: &TcpStream) -> std::io::Result<Request> {
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts.next().unwrap_or("").to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(Request {
        method,
        path,
        headers,
        body,
    })
}

fn handle(mut stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let req = read_request(&stream)?;
    // The stand-in's own routes answer at once, so that a story can end a
    // hang it started.
    if !req.path.starts_with("/__fake/") {
        let hang = state.lock().expect("not poisoned").hang;
        std::thread::sleep(hang);
    }
    let (status, body) = {
        let mut s = state.lock().expect("not poisoned");
        s.requests.push(format!("{} {}", req.method, req.path));
        route(&mut s, &req)
    };
    respond_json(&mut stream, status, &body)
}

/// Writes a JSON answer and closes: what every stand-in server here sends.
pub fn respond_json(stream: &mut TcpStream, status: u16, body: &Value) -> std::io::Result<()> {
    let text = body.to_string();
    let reason = match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    stream.flush()
}

fn error(status: u16, message: &str) -> (u16, Value) {
    (status, json!({ "message": message, "statusCode": status }))
}

/// Checks the API key or bearer token and its permission.
fn authorise(s: &State, req: &Request, permission: &str) -> Result<(), (u16, Value)> {
    if let Some(key) = req.headers.get("x-api-key") {
        return match s.keys.get(key) {
            Some(p) if p.contains("all") || p.contains(permission) => Ok(()),
            Some(_) => Err(error(
                403,
                &format!("Missing required permission: {permission}"),
            )),
            None => Err(error(401, "Invalid API key")),
        };
    }
    if let Some(tok) = req
        .headers
        .get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return if s.tokens.contains(tok) {
            Ok(())
        } else {
            Err(error(401, "Invalid user token"))
        };
    }
    Err(error(401, "Authentication required"))
}

fn queue_dto(name: &str, q: &QueueState) -> Value {
    json!({
        "name": name,
        "isPaused": q.paused,
        "statistics": stats(q),
    })
}

fn stats(q: &QueueState) -> Value {
    json!({
        "active": q.active,
        "completed": q.completed,
        "delayed": 0,
        "failed": 0,
        "paused": if q.paused { q.waiting.round() as u64 } else { 0 },
        "waiting": if q.paused { 0 } else { q.waiting.round() as u64 },
    })
}

fn legacy_dto(q: &QueueState) -> Value {
    json!({
        "jobCounts": stats(q),
        "queueStatus": { "isActive": q.active > 0, "isPaused": q.paused },
    })
}

fn route(s: &mut State, req: &Request) -> (u16, Value) {
    let path = req.path.split('?').next().unwrap_or("");
    let body: Value = if req.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(_) => return error(400, "Invalid JSON body"),
        }
    };
    // A healthchecks-style endpoint for the backup stories' pings (not part
    // of Immich's API; every request is in /__fake/state's log).
    if path.starts_with("/__fake/ping") {
        return (200, json!({}));
    }
    let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    macro_rules! auth {
        ($perm:expr) => {
            if let Err(e) = authorise(s, req, $perm) {
                return e;
            }
        };
    }
    match (req.method.as_str(), seg.as_slice()) {
        ("GET", ["__fake", "state"]) => (200, snapshot(s)),
        // `{"secs": N}`: every answer of Immich's API is held back N s from
        // now on (0 ends it), as a hung server's are.
        ("PUT", ["__fake", "hang"]) => match body.get("secs").and_then(Value::as_f64) {
            Some(secs) if (0.0..=3600.0).contains(&secs) => {
                s.hang = Duration::from_secs_f64(secs);
                (200, json!({ "hang_secs": secs }))
            }
            _ => error(400, "give {\"secs\": N} with N from 0 to 3600"),
        },
        ("GET", ["api", "server", "ping"]) => (200, json!({ "res": "pong" })),
        ("GET", ["api", "server", "version"]) => (
            200,
            json!({ "major": 3, "minor": 2, "patch": 2, "prerelease": null }),
        ),
        ("GET", ["api", "server", "features"]) => {
            let mut f = serde_json::Map::new();
            for k in [
                "duplicateDetection",
                "email",
                "facialRecognition",
                "importFaces",
                "map",
                "oauth",
                "oauthAutoLaunch",
                "ocr",
                "passwordLogin",
                "realtimeTranscoding",
                "reverseGeocoding",
                "search",
                "sidecar",
                "smartSearch",
                "trash",
            ] {
                f.insert(
                    k.into(),
                    json!(!matches!(
                        k,
                        "email" | "oauth" | "oauthAutoLaunch" | "importFaces"
                    )),
                );
            }
            f.insert("configFile".into(), json!(s.opts.config_file));
            (200, Value::Object(f))
        }
        (_, ["api", "queues", ..]) if s.opts.legacy_only => error(404, "Cannot GET /api/queues"),
        ("GET", ["api", "queues"]) => {
            auth!("queue.read");
            (
                200,
                Value::Array(s.queues.iter().map(|(n, q)| queue_dto(n, q)).collect()),
            )
        }
        ("GET", ["api", "queues", name]) => {
            auth!("queue.read");
            match s.queues.get(*name) {
                Some(q) => (200, queue_dto(name, q)),
                None => error(400, "Validation failed: name is not a QueueName"),
            }
        }
        ("PUT", ["api", "queues", name]) => {
            auth!("queue.update");
            let paused = body.get("isPaused").and_then(Value::as_bool);
            if *name == "backgroundTask" && paused == Some(true) {
                return error(400, "The BackgroundTask queue cannot be paused");
            }
            match s.queues.get_mut(*name) {
                Some(q) => {
                    if let Some(p) = paused {
                        q.paused = p;
                    }
                    (200, queue_dto(name, q))
                }
                None => error(400, "Validation failed: name is not a QueueName"),
            }
        }
        ("GET", ["api", "jobs"]) => {
            auth!("job.read");
            (
                200,
                Value::Object(
                    s.queues
                        .iter()
                        .map(|(n, q)| (n.clone(), legacy_dto(q)))
                        .collect(),
                ),
            )
        }
        ("PUT", ["api", "jobs", name]) => {
            auth!("job.create");
            let cmd = body.get("command").and_then(Value::as_str).unwrap_or("");
            let Some(q) = s.queues.get_mut(*name) else {
                return error(400, "Validation failed: name is not a QueueName");
            };
            match cmd {
                "pause" if *name == "backgroundTask" => {
                    error(400, "The BackgroundTask queue cannot be paused")
                }
                "pause" => {
                    q.paused = true;
                    (200, legacy_dto(q))
                }
                "resume" => {
                    q.paused = false;
                    (200, legacy_dto(q))
                }
                "start" | "empty" | "clear-failed" => (200, legacy_dto(q)),
                _ => error(400, "Validation failed: command is not a QueueCommand"),
            }
        }
        ("GET", ["api", "system-config"]) => {
            auth!("systemConfig.read");
            (200, s.config.clone())
        }
        ("PUT", ["api", "system-config"]) => {
            auth!("systemConfig.update");
            if s.opts.config_file {
                return error(
                    400,
                    "Cannot update configuration while IMMICH_CONFIG_FILE is in use",
                );
            }
            let missing: Vec<&str> = CONFIG_SECTIONS
                .iter()
                .copied()
                .filter(|k| body.get(*k).is_none())
                .collect();
            if !missing.is_empty() {
                return error(
                    400,
                    &format!("Validation failed: missing {}", missing.join(", ")),
                );
            }
            s.config = body;
            s.config_writes += 1;
            (200, s.config.clone())
        }
        ("POST", ["api", "auth", "login"]) => {
            let email = body.get("email").and_then(Value::as_str).unwrap_or("");
            let password = body.get("password").and_then(Value::as_str).unwrap_or("");
            if email != s.opts.admin_email || password != s.opts.admin_password {
                return error(401, "Incorrect email or password");
            }
            let token = format!("session-token-{}", s.next_id);
            s.next_id += 1;
            s.tokens.insert(token.clone());
            (
                201,
                json!({
                    "accessToken": token, "isAdmin": true, "isOnboarded": true, "name": "Admin",
                    "profileImagePath": "", "shouldChangePassword": false,
                    "userEmail": email, "userId": "00000000-0000-4000-8000-000000000001"
                }),
            )
        }
        ("POST", ["api", "api-keys"]) => {
            auth!("apiKey.create");
            let perms: BTreeSet<String> = body
                .get("permissions")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|p| p.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if perms.is_empty() {
                return error(400, "Validation failed: permissions must not be empty");
            }
            let secret = format!("fake-secret-{:08}", s.next_id * 7919);
            let id = format!("00000000-0000-4000-8000-{:012}", s.next_id);
            s.next_id += 1;
            let name = body
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("API Key")
                .to_owned();
            s.keys.insert(secret.clone(), perms.clone());
            let key = json!({
                "createdAt": "2026-11-21T00:00:00.000Z", "id": id, "name": name,
                "permissions": perms, "updatedAt": "2026-11-21T00:00:00.000Z"
            });
            let mut resp = key.as_object().cloned().unwrap_or_default();
            resp.insert("apiKey".into(), key);
            resp.insert("secret".into(), json!(secret));
            (201, Value::Object(resp))
        }
        ("GET", ["api", "api-keys", "me"]) => {
            auth!("apiKey.read");
            (
                200,
                json!({"createdAt": "2026-11-21T00:00:00.000Z", "id": "me", "name": "key", "permissions": [], "updatedAt": "2026-11-21T00:00:00.000Z"}),
            )
        }
        ("DELETE", ["api", "api-keys", _id]) => {
            auth!("apiKey.delete");
            (204, Value::Null)
        }
        _ => error(404, &format!("Cannot {} {path}", req.method)),
    }
}
