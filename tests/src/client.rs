//! HTTP clients for tests: a well-behaved one (`request`, `get`) and a raw socket one
//! (`raw_http`) for the hostile inputs real clients refuse to send.

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a client call may take before it is abandoned.
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// A complete HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers: lowercase names, every value in order (decoded lossily as UTF-8).
    pub headers: BTreeMap<String, Vec<String>>,
    /// Body bytes.
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// All values of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> &[String] {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; panics with the body when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body: {}",
                self.status,
                self.text()
            )
        })
    }
}

fn client() -> &'static reqwest::blocking::Client {
    static CLIENT: OnceLock<reqwest::blocking::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::blocking::Client::builder()
            // Tests talk to 127.0.0.1 only: never through an environment proxy.
            .no_proxy()
            // Show redirects as they are, they may be what a test checks.
            .redirect(reqwest::redirect::Policy::none())
            // A fresh connection per request: no stale connection to a stopped Envoy.
            .pool_max_idle_per_host(0)
            .timeout(CLIENT_TIMEOUT)
            .build()
            .expect("build the HTTP client")
    })
}

/// GET `url` with extra `headers`; panics on a transport error.
pub fn get(url: &str, headers: &[(&str, &str)]) -> Response {
    request("GET", url, headers, b"")
}

/// Sends a request; panics on a transport error (use `try_request` to expect one).
///
/// The URL goes through the `url` crate, which resolves `.`/`..` segments: use
/// `raw_http` to send paths exactly.
pub fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    try_request(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url} failed: {e}"))
}

/// Sends a request; `Err` describes a transport failure (refused, reset, timeout).
pub fn try_request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
    let sends_body = !body.is_empty()
        || matches!(
            method,
            reqwest::Method::POST | reqwest::Method::PUT | reqwest::Method::PATCH
        );
    let mut builder = client().request(method, url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if sends_body {
        builder = builder.body(body.to_vec());
    }
    let response = builder.send().map_err(|e| format!("{e:?}"))?;
    let status = response.status().as_u16();
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in response.headers() {
        map.entry(name.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let body = response.bytes().map_err(|e| format!("{e:?}"))?.to_vec();
    Ok(Response {
        status,
        headers: map,
        body,
    })
}

/// What came back on a raw connection.
#[derive(Clone, Debug, Default)]
pub struct RawResponse {
    /// Every byte read.
    pub raw: Vec<u8>,
    /// Status of the first final (non-1xx) response, `None` if none could be parsed
    /// (e.g. the connection was closed without an answer).
    pub status: Option<u16>,
    /// Headers of that response: lowercase names, values lossy UTF-8.
    pub headers: BTreeMap<String, Vec<String>>,
    /// Its body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Builds the bytes of an HTTP/1.1 request with `Host: test` and `Connection: close`,
/// without any validation, for `raw_http`.
pub fn raw_request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: test\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() {
        out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Writes `bytes` as-is to a TCP connection to `addr` and reads one response: until
/// its framing says it is complete, the peer closes, or 10 s pass. For inputs no real
/// client sends (control characters, non-UTF-8 header bytes, 200 headers, `/a/../b`).
pub fn raw_http(addr: impl ToSocketAddrs, bytes: &[u8]) -> RawResponse {
    let is_head = bytes.starts_with(b"HEAD ");
    let mut stream = TcpStream::connect(addr).expect("connect for raw_http");
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("set read timeout");
    // The peer may answer and close before reading everything (e.g. 431): not an error.
    let _ = stream.write_all(bytes);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if let Some(parsed) = parse_response(&raw, is_head, false) {
            return parsed;
        }
        if Instant::now() > deadline {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break, // reset
        }
    }
    parse_response(&raw, is_head, true).unwrap_or(RawResponse {
        raw,
        ..RawResponse::default()
    })
}

/// Parses a complete response from `raw`; `eof` means no more bytes will come (a body
/// without framing then ends here). `None` while incomplete.
pub(crate) fn parse_response(raw: &[u8], is_head: bool, eof: bool) -> Option<RawResponse> {
    let mut offset = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 256];
        let mut response = httparse::Response::new(&mut headers);
        let head_len = match response.parse(&raw[offset..]) {
            Ok(httparse::Status::Complete(n)) => n,
            _ => return None,
        };
        let status = response.code?;
        let start = offset + head_len;
        if (100..200).contains(&status) && status != 101 {
            offset = start;
            continue;
        }
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for h in response.headers.iter() {
            map.entry(h.name.to_ascii_lowercase())
                .or_default()
                .push(String::from_utf8_lossy(h.value).into_owned());
        }
        let rest = &raw[start..];
        let first = |name: &str| map.get(name).and_then(|v| v.first()).cloned();
        let body = if is_head || status == 204 || status == 304 {
            Some(Vec::new())
        } else if first("transfer-encoding")
            .is_some_and(|t| t.to_ascii_lowercase().contains("chunked"))
        {
            dechunk(rest)
        } else if let Some(len) =
            first("content-length").and_then(|l| l.trim().parse::<usize>().ok())
        {
            (rest.len() >= len).then(|| rest[..len].to_vec())
        } else if eof {
            Some(rest.to_vec())
        } else {
            None
        };
        let body = match body {
            Some(b) => b,
            None if eof => rest.to_vec(),
            None => return None,
        };
        return Some(RawResponse {
            raw: raw.to_vec(),
            status: Some(status),
            headers: map,
            body,
        });
    }
}

/// Decodes a chunked body; `None` until the last chunk has arrived.
fn dechunk(mut rest: &[u8]) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&rest[..line_end]).ok()?;
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let size = usize::from_str_radix(size_text, 16).ok()?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Some(body);
        }
        if rest.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked_and_skips_100() {
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
            false,
            false,
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (Some(200), &b"hi"[..]));
        let chunked = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n";
        let r = parse_response(chunked, false, false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (Some(201), &b"abc"[..]));
        assert!(parse_response(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhi",
            false,
            false
        )
        .is_none());
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\nuntil-eof", false, true)
                .unwrap()
                .body,
            b"until-eof"
        );
    }
}
