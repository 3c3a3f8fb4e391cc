//! The invariants every target asserts: a panic here is a finding.

use crate::gen::Request;
use palisade_core::fake::{ClientResponse, Outcome, SentResponse};
use palisade_core::headers::find;
use palisade_core::host::Headers;
use palisade_core::problem::CONTENT_TYPE;
use palisade_core::request_id::correlation_id;
use serde_json::Value;
use std::collections::HashSet;

/// The correlation id the request carries, as every control reads it.
pub fn request_id(headers: &Headers) -> Option<String> {
    correlation_id(find(headers, "x-request-id"), find(headers, "traceparent"))
}

/// A denial is RFC 9457 `application/problem+json` naming its own status
/// and carrying the request's correlation id, in the body and the header.
pub fn problem(status: u16, headers: &Headers, body: &[u8], id: Option<&str>) {
    let ct = find(headers, "content-type").map(|v| String::from_utf8_lossy(v).into_owned());
    assert_eq!(
        ct.as_deref(),
        Some(CONTENT_TYPE),
        "denial {status} is not problem+json"
    );
    let doc: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => panic!(
            "denial {status}: body is not JSON ({e}): {:?}",
            String::from_utf8_lossy(body)
        ),
    };
    assert!(doc["type"].is_string(), "problem without type: {doc}");
    assert!(doc["title"].is_string(), "problem without title: {doc}");
    assert_eq!(doc["status"], Value::from(status), "problem status: {doc}");
    if let Some(id) = id {
        assert_eq!(doc["request_id"].as_str(), Some(id), "problem id: {doc}");
        let echoed = find(headers, "x-request-id").map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(echoed.as_deref(), Some(id), "problem x-request-id header");
    } else if let Some(echoed) = doc.get("request_id") {
        panic!("a request without a usable id got request_id {echoed}");
    }
}

/// [`problem`] for a local reply the filter sent (before the exchange ran it).
pub fn sent(sent: &SentResponse, id: Option<&str>) {
    if sent.status < 400 {
        return;
    }
    let headers: Headers = sent
        .headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_bytes().to_vec()))
        .collect();
    problem(sent.status, &headers, &sent.body, id);
}

/// [`problem`] for what the client got, when a filter answered.
pub fn client(client: &ClientResponse, id: Option<&str>) {
    if client.local && client.status >= 400 {
        problem(client.status, &client.headers, &client.body, id);
    }
}

/// Text a request value may legitimately share with the outputs: the
/// config, the harness's dictionaries, what the upstream and the key
/// server sent, names and the path. Windows found there are not checked.
/// Held as a set of windows: comparing with `memcmp` would flood
/// libFuzzer's comparison hooks with the harness's own work.
#[derive(Clone, Default)]
pub struct Known {
    windows: HashSet<[u8; WINDOW]>,
}

impl Known {
    pub fn add(&mut self, bytes: &[u8]) {
        self.windows.extend(windows(bytes));
    }
    pub fn add_all(&mut self, words: &[&str]) {
        for w in words {
            self.add(w.as_bytes());
        }
    }
}

fn windows(bytes: &[u8]) -> impl Iterator<Item = [u8; WINDOW]> + '_ {
    bytes
        .windows(WINDOW)
        .filter_map(|w| <[u8; WINDOW]>::try_from(w).ok())
}

/// Length of the windows compared: "longer than 8 bytes".
const WINDOW: usize = 9;
/// Longest stretch of one value examined (the cost stays linear).
const SCAN: usize = 512;

/// A window with entropy enough that meeting it in an output is no
/// coincidence: six distinct bytes over three character classes.
fn telling(w: &[u8]) -> bool {
    let mut seen = [false; 256];
    let mut distinct = 0;
    let mut classes = [false; 4];
    for &b in w {
        if !seen[b as usize] {
            seen[b as usize] = true;
            distinct += 1;
        }
        let class = match b {
            b'a'..=b'z' => 0,
            b'A'..=b'Z' => 1,
            b'0'..=b'9' => 2,
            _ => 3,
        };
        classes[class] = true;
    }
    distinct >= 6 && classes.iter().filter(|c| **c).count() >= 3
}

/// No request value (a header value, token or body stretch over 8
/// bytes) shows in a problem body or a log line.
pub fn no_leak(values: &[&[u8]], known: &Known, outputs: &[&[u8]]) {
    let shown: HashSet<[u8; WINDOW]> = outputs.iter().flat_map(|o| windows(o)).collect();
    for value in values {
        let value = &value[..value.len().min(SCAN)];
        for w in windows(value) {
            if !shown.contains(&w) || !telling(&w) || known.windows.contains(&w) {
                continue;
            }
            let out = outputs
                .iter()
                .find(|o| windows(o).any(|x| x == w))
                .map(|o| String::from_utf8_lossy(o).into_owned());
            panic!(
                "request bytes {:?} (of {:?}) reflected in {:?}",
                String::from_utf8_lossy(&w),
                String::from_utf8_lossy(value),
                out
            );
        }
    }
}

/// The request values [`no_leak`] looks for: header values except the
/// correlation id (echoed by design), and the body.
pub fn request_values<'a>(req: &'a Request, body: &'a [u8]) -> Vec<&'a [u8]> {
    let mut values: Vec<&[u8]> = req
        .header_values()
        .filter(|(n, _)| !matches!(*n, "x-request-id" | "traceparent"))
        .map(|(_, v)| v)
        .collect();
    values.push(body);
    values
}

/// What a client-controlled value could show up in: every log line, and
/// the local reply's body.
pub fn outputs<'a>(logs: &'a [String], out: &'a Outcome) -> Vec<&'a [u8]> {
    let mut o: Vec<&[u8]> = logs.iter().map(|l| l.as_bytes()).collect();
    if let Some(c) = &out.client {
        if c.local {
            o.push(&c.body);
        }
    }
    o
}

/// No exchange hangs unless the input staged the host setting that makes
/// it hang: a held request or response without Envoy's
/// `allow_on_headers_stop_iteration` (the glue's watchdog answers it).
pub fn no_hang(out: &Outcome, staged: bool) {
    if let Some(why) = &out.hung {
        assert!(staged, "exchange hangs: {why}");
    }
}
