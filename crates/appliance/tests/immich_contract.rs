//! Checks the Immich client and the fake server against the published
//! contract, `@immich/sdk` 3.2.2 (the generated client of Immich's OpenAPI
//! spec). `cargo xtask ci` fetches the package from npm and runs this with
//! IMMICH_SDK_DIR set; without it the test fails and says how to run it.

use std::collections::BTreeSet;
use std::path::PathBuf;

use appliance::immich::{self, Client, ImmichApi};

struct Sdk {
    dts: String,
    js: String,
}

fn sdk() -> Sdk {
    let dir = std::env::var_os("IMMICH_SDK_DIR").map(PathBuf::from).unwrap_or_else(|| {
        panic!(
            "IMMICH_SDK_DIR is not set: run `cargo xtask ci --only contract`, which fetches @immich/sdk@3.2.2 with npm and points IMMICH_SDK_DIR at it"
        )
    });
    let read = |f: &str| {
        std::fs::read_to_string(dir.join("build").join(f))
            .unwrap_or_else(|e| panic!("{}/build/{f}: {e}", dir.display()))
    };
    let pkg = std::fs::read_to_string(dir.join("package.json")).expect("package.json");
    assert!(
        pkg.contains("\"version\": \"3.2.2\""),
        "expected @immich/sdk 3.2.2"
    );
    Sdk {
        dts: read("fetch-client.d.ts"),
        js: read("fetch-client.js"),
    }
}

impl Sdk {
    /// Field names of `export type NAME = { ... };`.
    fn fields(&self, name: &str) -> BTreeSet<String> {
        let start = format!("export type {name} = {{");
        let at = self
            .dts
            .find(&start)
            .unwrap_or_else(|| panic!("type {name} is not in the SDK"));
        let body = &self.dts[at + start.len()..];
        let end = body.find("\n};").expect("type ends");
        body[..end]
            .lines()
            .filter_map(|l| {
                let l = l.trim();
                let (name, _) = l.split_once(':')?;
                let name = name.trim_end_matches('?');
                (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                    .then(|| name.to_owned())
            })
            .collect()
    }

    fn required(&self, name: &str) -> BTreeSet<String> {
        let all = self.fields(name);
        let start = format!("export type {name} = {{");
        let body = &self.dts[self.dts.find(&start).unwrap()..];
        all.into_iter()
            .filter(|f| !body[..body.find("\n};").unwrap()].contains(&format!("{f}?:")))
            .collect()
    }

    /// Values of `export declare enum NAME { A = "a", ... }`.
    fn enum_values(&self, name: &str) -> BTreeSet<String> {
        let start = format!("export declare enum {name} {{");
        let at = self
            .dts
            .find(&start)
            .unwrap_or_else(|| panic!("enum {name} is not in the SDK"));
        let body = &self.dts[at + start.len()..];
        let end = body.find('}').unwrap();
        body[..end]
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(_, v)| v.trim().trim_end_matches(',').trim_matches('"').to_owned())
            })
            .collect()
    }

    /// Every (METHOD, /path) the generated client calls, with `${...}`
    /// parameters written as `{param}`.
    fn routes(&self) -> BTreeSet<(String, String)> {
        let mut out = BTreeSet::new();
        for chunk in self.js.split("export function ").skip(1) {
            let Some(call) = chunk.find("oazapfts.fetch") else {
                continue;
            };
            let rest = &chunk[call..];
            let open = rest.find(['"', '`']).unwrap();
            let quote = rest.as_bytes()[open] as char;
            let close = rest[open + 1..].find(quote).unwrap() + open + 1;
            let mut path = rest[open + 1..close].to_owned();
            while let Some(s) = path.find("${") {
                let e = path[s..].find('}').unwrap() + s;
                let inner = &path[s + 2..e];
                let param = inner
                    .trim_start_matches("encodeURIComponent(")
                    .trim_end_matches(')');
                path.replace_range(s..=e, &format!("{{{param}}}"));
            }
            let path = path.split('?').next().unwrap().to_owned();
            let head = &rest[..rest.find("}));").unwrap_or(rest.len()).min(400)];
            let method = head
                .split("method: \"")
                .nth(1)
                .and_then(|m| m.split('"').next())
                .unwrap_or("GET")
                .to_owned();
            out.insert((method, path));
        }
        out
    }
}

fn keys(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_object().expect("an object").keys().cloned().collect()
}

#[test]
fn client_routes_exist_in_the_sdk() {
    let sdk = sdk();
    let routes = sdk.routes();
    assert!(routes.len() > 100, "parsed only {} routes", routes.len());
    for (m, p) in immich::ROUTES {
        assert!(
            routes.contains(&(m.to_owned(), p.to_owned())),
            "the client calls {m} {p}, which the SDK does not have"
        );
    }
    for (m, p) in fake_immich::ROUTES {
        assert!(
            routes.contains(&(m.to_owned(), p.to_owned())),
            "the fake serves {m} {p}, which the SDK does not have"
        );
    }
}

#[test]
fn queue_names_permissions_and_config_sections_match() {
    let sdk = sdk();
    let queues = sdk.enum_values("QueueName");
    let fake: BTreeSet<String> = fake_immich::QUEUES.iter().map(|s| s.to_string()).collect();
    assert_eq!(fake, queues, "the fake's queues differ from QueueName");
    let cfg = appliance::config::Config::defaults();
    for q in cfg
        .throttle
        .pause_order
        .iter()
        .chain(&cfg.throttle.protected_queues)
    {
        assert!(
            queues.contains(q),
            "config names queue `{q}`, which is not a QueueName"
        );
    }
    let perms = sdk.enum_values("Permission");
    for p in immich::THROTTLE_PERMISSIONS {
        assert!(perms.contains(p), "permission {p} is not in the SDK");
    }
    let commands = sdk.enum_values("QueueCommand");
    assert!(commands.contains("pause") && commands.contains("resume"));
    let sections: BTreeSet<String> = fake_immich::CONFIG_SECTIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(sections, sdk.fields("AdminConfigDto"));
    let jobs: BTreeSet<String> = fake_immich::CONCURRENCY
        .iter()
        .map(|(q, _)| q.to_string())
        .collect();
    assert_eq!(jobs, sdk.fields("AdminConfigJobDto"));
    assert!(
        sdk.fields("AdminConfigJobSettingsDto")
            .contains("concurrency")
    );
    assert!(sdk.fields("AdminConfigMachineLearningDto").contains("urls"));
}

#[test]
fn dto_fields_match_and_the_fake_answers_in_the_exact_shapes() {
    let sdk = sdk();
    // Request bodies we send: every field exists, every required field is sent.
    let update = serde_json::to_value(immich::QueueUpdate { is_paused: true }).unwrap();
    assert!(keys(&update).is_subset(&sdk.fields("QueueUpdateDto")));
    assert!(sdk.required("QueueCommandDto").is_subset(&BTreeSet::from([
        "command".to_string(),
        "force".to_string()
    ])));
    assert!(
        sdk.required("LoginCredentialDto")
            .is_subset(&BTreeSet::from([
                "email".to_string(),
                "password".to_string()
            ]))
    );
    assert_eq!(
        sdk.required("ApiKeyCreateDto"),
        BTreeSet::from(["permissions".to_string()])
    );
    assert!(sdk.fields("ApiKeyCreateDto").contains("name"));

    // Responses: the fake's are exactly the SDK's shapes.
    let fake = fake_immich::Fake::spawn(
        "127.0.0.1:0",
        fake_immich::Options {
            api_key: Some("k".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let get = |path: &str| -> serde_json::Value {
        ureq::get(&format!("{}/api{path}", fake.url()))
            .header("x-api-key", "k")
            .call()
            .unwrap()
            .body_mut()
            .read_json()
            .unwrap()
    };
    assert_eq!(keys(&get("/server/ping")), sdk.fields("ServerPingResponse"));
    assert_eq!(
        keys(&get("/server/version")),
        sdk.fields("ServerVersionResponseDto")
    );
    assert_eq!(
        keys(&get("/server/features")),
        sdk.fields("ServerFeaturesDto")
    );
    let queues = get("/queues");
    let q0 = &queues.as_array().unwrap()[0];
    assert_eq!(keys(q0), sdk.fields("QueueResponseDto"));
    assert_eq!(keys(&q0["statistics"]), sdk.fields("QueueStatisticsDto"));
    let legacy = get("/jobs");
    assert_eq!(keys(&legacy), sdk.fields("QueuesResponseLegacyDto"));
    let l0 = &legacy["thumbnailGeneration"];
    assert_eq!(keys(l0), sdk.fields("QueueResponseLegacyDto"));
    assert_eq!(keys(&l0["queueStatus"]), sdk.fields("QueueStatusLegacyDto"));
    assert_eq!(keys(&get("/system-config")), sdk.fields("AdminConfigDto"));
    let login: serde_json::Value = ureq::post(&format!("{}/api/auth/login", fake.url()))
        .send_json(serde_json::json!({"email": "admin@example.com", "password": "admin-password"}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(keys(&login), sdk.fields("LoginResponseDto"));
    let created: serde_json::Value = ureq::post(&format!("{}/api/api-keys", fake.url()))
        .header(
            "authorization",
            &format!("Bearer {}", login["accessToken"].as_str().unwrap()),
        )
        .send_json(serde_json::json!({"name": "t", "permissions": ["queue.read"]}))
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap();
    assert_eq!(keys(&created), sdk.fields("ApiKeyCreateResponseDto"));
    assert_eq!(keys(&created["apiKey"]), sdk.fields("ApiKeyResponseDto"));

    // And our client reads what the fake sends.
    let c = Client::new(
        &fake.url(),
        Some("k".into()),
        std::time::Duration::from_secs(5),
    );
    assert_eq!(
        c.queues().unwrap().len(),
        sdk.enum_values("QueueName").len()
    );
}
