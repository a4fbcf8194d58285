//! The Immich client against the fake server: pause and resume, the legacy
//! fallback, permissions, config writes, and creating a scoped API key.

use std::time::Duration;

use appliance::immich::{self, Client, ImmichApi, ImmichError};
use fake_immich::{Fake, Options};

fn fake(opts: Options) -> Fake {
    Fake::spawn("127.0.0.1:0", opts).unwrap()
}

fn client(f: &Fake, key: &str) -> Client {
    Client::new(&f.url(), Some(key.into()), Duration::from_secs(5))
}

#[test]
fn pauses_and_resumes_through_the_queues_api() {
    let f = fake(Options {
        api_key: Some("k".into()),
        ..Default::default()
    });
    let c = client(&f, "k");
    c.ping().unwrap();
    c.set_paused("videoConversion", true).unwrap();
    let q = c.queues().unwrap();
    assert!(
        q.iter()
            .find(|q| q.name == "videoConversion")
            .unwrap()
            .is_paused
    );
    assert!(!c.uses_legacy_jobs_api());
    c.set_paused("videoConversion", false).unwrap();
    assert_eq!(f.snapshot()["paused"], serde_json::json!([]));
    let err = c.set_paused("backgroundTask", true).unwrap_err();
    assert!(err.to_string().contains("cannot be paused"), "{err}");
}

#[test]
fn falls_back_to_the_legacy_jobs_api_on_old_servers() {
    let f = fake(Options {
        api_key: Some("k".into()),
        legacy_only: true,
        ..Default::default()
    });
    let c = client(&f, "k");
    let q = c.queues().unwrap();
    assert!(c.uses_legacy_jobs_api());
    assert_eq!(q.len(), fake_immich::QUEUES.len());
    c.set_paused("smartSearch", true).unwrap();
    assert_eq!(f.snapshot()["paused"], serde_json::json!(["smartSearch"]));
    let log = f.snapshot()["requests"].to_string();
    assert!(log.contains("PUT /api/jobs/smartSearch"), "{log}");
}

#[test]
fn a_bad_key_is_reported_as_such() {
    let f = fake(Options {
        api_key: Some("k".into()),
        ..Default::default()
    });
    let err = client(&f, "wrong").queues().unwrap_err();
    assert!(matches!(err, ImmichError::Unauthorized(401)), "{err}");
    assert!(err.to_string().contains("setup-api-key"));
}

#[test]
fn config_is_read_modified_and_written_whole() {
    let f = fake(Options {
        api_key: Some("k".into()),
        ..Default::default()
    });
    let c = client(&f, "k");
    let mut cfg = c.system_config().unwrap();
    assert!(immich::set_concurrency(&mut cfg, "thumbnailGeneration", 1));
    c.put_system_config(&cfg).unwrap();
    assert_eq!(
        immich::concurrency(&c.system_config().unwrap(), "thumbnailGeneration"),
        Some(1)
    );
    assert_eq!(f.snapshot()["configWrites"], 1);
    assert!(!c.features().unwrap().config_file);
}

#[test]
fn config_writes_are_refused_when_immich_uses_a_config_file() {
    let f = fake(Options {
        api_key: Some("k".into()),
        config_file: true,
        ..Default::default()
    });
    let c = client(&f, "k");
    assert!(c.features().unwrap().config_file);
    let cfg = c.system_config().unwrap();
    let err = c.put_system_config(&cfg).unwrap_err();
    assert!(err.to_string().contains("IMMICH_CONFIG_FILE"), "{err}");
}

#[test]
fn creates_a_key_with_only_the_throttlers_permissions() {
    let f = fake(Options::default());
    let anon = Client::new(&f.url(), None, Duration::from_secs(5));
    let wrong = anon.create_api_key(
        "admin@example.com",
        "nope",
        "t",
        &immich::THROTTLE_PERMISSIONS,
    );
    assert!(wrong.is_err());
    let secret = anon
        .create_api_key(
            "admin@example.com",
            "admin-password",
            "immich-throttle",
            &immich::THROTTLE_PERMISSIONS,
        )
        .unwrap();
    let keys = f.snapshot()["keys"].clone();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    let perms: Vec<String> = serde_json::from_value(keys[0].clone()).unwrap();
    let mut want: Vec<String> = immich::THROTTLE_PERMISSIONS
        .iter()
        .map(|s| s.to_string())
        .collect();
    want.sort();
    assert_eq!(perms, want);
    // The new key works for what the throttler does.
    let c = client(&f, &secret);
    c.queues().unwrap();
    c.set_paused("ocr", true).unwrap();
}
