//! The drive's own health verdict (SMART), through `smartctl -H -j`. Many
//! USB bridges do not pass SMART through; that is said, not guessed.

use std::path::Path;
use std::process::{Command, Stdio};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", content = "detail", rename_all = "kebab-case")]
pub enum Health {
    Passed,
    /// The drive says it is failing: copy what is on it now.
    Failing(String),
    /// No verdict: the bridge hides SMART, or smartctl is missing.
    Unavailable(String),
}

impl Health {
    pub fn describe(&self) -> String {
        match self {
            Health::Passed => "passed".into(),
            Health::Failing(d) => format!("FAILING ({d})"),
            Health::Unavailable(d) => format!("not available: {d}"),
        }
    }
}

/// Asks the drive through smartctl (never fails: a problem is Unavailable).
pub fn health(smartctl: &str, device: &Path) -> Health {
    match Command::new(smartctl)
        .args(["-H", "-j"])
        .arg(device)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(out) => parse(&out.stdout),
        Err(e) => Health::Unavailable(format!("cannot run {smartctl}: {e}")),
    }
}

/// smartctl's JSON: `smart_status.passed`, or its messages when it has no
/// verdict (an unknown USB bridge, a virtual disk).
pub fn parse(json: &[u8]) -> Health {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(json) else {
        return Health::Unavailable("smartctl gave no JSON".into());
    };
    let messages: Vec<&str> = v["smartctl"]["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(|m| m["string"].as_str()).collect())
        .unwrap_or_default();
    match v["smart_status"]["passed"].as_bool() {
        Some(true) => Health::Passed,
        Some(false) => Health::Failing(
            messages
                .first()
                .map_or("the drive's self-assessment failed", |m| m)
                .to_owned(),
        ),
        None => Health::Unavailable(
            messages
                .first()
                .map_or("this drive or its USB bridge does not report SMART", |m| m)
                .to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_smartctls_verdict() {
        let ok = br#"{"json_format_version":[1,0],"smartctl":{"version":[7,3],"exit_status":0},"smart_status":{"passed":true}}"#;
        assert_eq!(parse(ok), Health::Passed);
        let failing = br#"{"smartctl":{"exit_status":8,"messages":[{"string":"SMART overall-health self-assessment test result: FAILED!","severity":"error"}]},"smart_status":{"passed":false}}"#;
        assert_eq!(
            parse(failing),
            Health::Failing("SMART overall-health self-assessment test result: FAILED!".into())
        );
        let bridge = br#"{"smartctl":{"exit_status":1,"messages":[{"string":"/dev/sda: Unknown USB bridge [0x152d:0x0578 (0x214)]","severity":"error"}]}}"#;
        assert_eq!(
            parse(bridge),
            Health::Unavailable("/dev/sda: Unknown USB bridge [0x152d:0x0578 (0x214)]".into())
        );
        assert!(matches!(parse(b"not json"), Health::Unavailable(_)));
        assert!(matches!(
            health("/nonexistent/smartctl", Path::new("/dev/null")),
            Health::Unavailable(m) if m.contains("cannot run")
        ));
    }
}
