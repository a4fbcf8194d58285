//! A stand-in for an ntfy server's publish API (docs.ntfy.sh/publish), for
//! the alert stories: a POST or PUT of the message to `/<topic>`, with the
//! title, priority, tags and click address in headers under any of their
//! documented aliases. Each accepted message is appended to a JSON-lines
//! file as ntfy would store it, and answered with ntfy's message JSON.

use std::io::Write;
use std::net::TcpListener;
use std::path::Path;

use serde_json::{Value, json};

use crate::{Request, read_request, respond_json};

const PRIORITIES: [(&str, u8); 10] = [
    ("1", 1),
    ("min", 1),
    ("2", 2),
    ("low", 2),
    ("3", 3),
    ("default", 3),
    ("4", 4),
    ("high", 4),
    ("5", 5),
    ("urgent", 5),
];

fn header<'a>(req: &'a Request, names: &[&str]) -> Option<&'a str> {
    names
        .iter()
        .find_map(|n| req.headers.get(*n).map(String::as_str))
}

/// RFC 2047's `=?UTF-8?B?...?=`, which ntfy accepts in any header.
fn decode_word(v: &str) -> Result<String, String> {
    use base64::Engine;
    match v
        .strip_prefix("=?UTF-8?B?")
        .or_else(|| v.strip_prefix("=?utf-8?b?"))
        .and_then(|r| r.strip_suffix("?="))
    {
        Some(b) => base64::engine::general_purpose::STANDARD
            .decode(b)
            .ok()
            .and_then(|d| String::from_utf8(d).ok())
            .ok_or_else(|| "invalid encoded header".into()),
        None => Ok(v.to_owned()),
    }
}

/// The message ntfy would publish, or its 400 error.
pub fn publish(req: &Request, now: u64, id: u64) -> Result<Value, (u16, String)> {
    if req.method != "POST" && req.method != "PUT" {
        return Err((405, "publish with POST or PUT".into()));
    }
    let topic = req.path.trim_start_matches('/');
    if topic.is_empty()
        || topic.len() > 64
        || !topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err((400, format!("invalid topic `{topic}`")));
    }
    let bad = |e: String| (400, e);
    let title = header(req, &["x-title", "title", "ti", "t"])
        .map(decode_word)
        .transpose()
        .map_err(bad)?;
    let priority = match header(req, &["x-priority", "priority", "prio", "p"]) {
        None => 3,
        Some(p) => PRIORITIES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(p))
            .map(|(_, v)| *v)
            .ok_or_else(|| (400, format!("invalid priority `{p}`")))?,
    };
    let tags: Vec<String> = header(req, &["x-tags", "tags", "tag", "ta"])
        .map(|t| t.split(',').map(|s| s.trim().to_owned()).collect())
        .unwrap_or_default();
    let click = header(req, &["x-click", "click"]).map(str::to_owned);
    let message = String::from_utf8(req.body.clone())
        .map_err(|_| (400, "the message is not UTF-8 text".to_owned()))?;
    Ok(json!({
        "id": format!("fake{id:08}"),
        "time": now,
        "expires": now + 43200,
        "event": "message",
        "topic": topic,
        "title": title,
        "message": message,
        "priority": priority,
        "tags": tags,
        "click": click,
    }))
}

/// Serves until killed, appending each published message to `log`.
pub fn serve(listen: &str, log: &Path) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    eprintln!(
        "fake ntfy: listening on {listen}, messages in {}",
        log.display()
    );
    serve_on(listener, log)
}

/// The same on a socket bound already (port 0 in tests).
pub fn serve_on(listener: TcpListener, log: &Path) -> std::io::Result<()> {
    let mut id = 0;
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let Ok(req) = read_request(&stream) else {
            continue;
        };
        id += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let (status, body) = match publish(&req, now, id) {
            Ok(m) => {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)?;
                writeln!(f, "{m}")?;
                (200, m)
            }
            Err((status, e)) => (status, json!({ "http": status, "error": e })),
        };
        let _ = respond_json(&mut stream, status, &body);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn req(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Request {
        Request {
            method: method.into(),
            path: path.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn publishes_as_ntfy_does() {
        let m = publish(
            &req(
                "POST",
                "/immich-x7",
                &[
                    ("title", "=?UTF-8?B?Zm90b3M6IDgwIMKwQw==?="),
                    ("p", "high"),
                    ("tags", "warning,locked"),
                ],
                "body",
            ),
            100,
            1,
        )
        .unwrap();
        assert_eq!(m["title"], "fotos: 80 °C");
        assert_eq!(m["priority"], 4);
        assert_eq!(m["tags"], json!(["warning", "locked"]));
        assert_eq!(m["message"], "body");
        assert_eq!(m["topic"], "immich-x7");
        let m = publish(&req("PUT", "/t", &[], "x"), 1, 2).unwrap();
        assert_eq!(m["priority"], 3);
        assert!(m["title"].is_null());
    }

    #[test]
    fn refuses_what_ntfy_refuses() {
        assert_eq!(
            publish(&req("GET", "/t", &[], ""), 0, 0).unwrap_err().0,
            405
        );
        assert_eq!(
            publish(&req("POST", "/a/b", &[], ""), 0, 0).unwrap_err().0,
            400
        );
        assert_eq!(
            publish(&req("POST", "/t", &[("priority", "loud")], ""), 0, 0)
                .unwrap_err()
                .0,
            400
        );
    }
}
