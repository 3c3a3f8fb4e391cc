//! Biased generation: most values come from what the controls give meaning
//! to (configured header names, pre-signed tokens, JSON near the schema),
//! mutated a little, so coverage gets past the first check; the rest is raw.

use arbitrary::{Arbitrary, Result, Unstructured};
use palisade_core::fake::Exchange;
use palisade_core::host::Headers;
use serde_json::{Map, Number, Value};

/// Characters parsers care about, inserted by mutations.
const SPECIAL: &[u8] = b"\0\r\n \t\"\\%./,;=:{}[]*?#&+-_'<>@\x7f\xff";

/// A dictionary entry (often), a mutated one, or raw bytes up to `max`.
pub fn bytes_like(u: &mut Unstructured, dict: &[&str], max: usize) -> Result<Vec<u8>> {
    let mode = u.int_in_range(0u8..=9)?;
    if dict.is_empty() || mode >= 8 {
        let n = u.int_in_range(0..=max)?;
        return Ok(u.bytes(n.min(u.len()))?.to_vec());
    }
    let base = u.choose(dict)?.as_bytes().to_vec();
    if mode < 5 {
        return Ok(base);
    }
    mutate(u, base)
}

/// [`bytes_like`] as text (invalid UTF-8 replaced).
pub fn text_like(u: &mut Unstructured, dict: &[&str], max: usize) -> Result<String> {
    Ok(String::from_utf8_lossy(&bytes_like(u, dict, max)?).into_owned())
}

/// One to three small edits: flip, cut, insert, double, splice a special byte.
pub fn mutate(u: &mut Unstructured, mut v: Vec<u8>) -> Result<Vec<u8>> {
    for _ in 0..u.int_in_range(1u8..=3)? {
        let at = u.int_in_range(0..=v.len())?;
        match u.int_in_range(0u8..=5)? {
            0 if at < v.len() => v[at] ^= 1 << u.int_in_range(0u8..=7)?,
            1 => v.truncate(at),
            2 => v.insert(at, u8::arbitrary(u)?),
            3 if v.len() < 4096 => v.extend_from_within(..),
            4 => v.insert(at, *u.choose(SPECIAL)?),
            _ => {
                let n = u.int_in_range(0..=v.len() - at)?;
                v.drain(at..at + n);
            }
        }
    }
    Ok(v)
}

/// `body` cut into one to four chunks (none when empty).
pub fn chunks(u: &mut Unstructured, body: &[u8]) -> Result<Vec<Vec<u8>>> {
    if body.is_empty() {
        return Ok(Vec::new());
    }
    let mut cuts: Vec<usize> = Vec::new();
    for _ in 0..u.int_in_range(0u8..=3)? {
        cuts.push(u.int_in_range(0..=body.len())?);
    }
    cuts.push(0);
    cuts.push(body.len());
    cuts.sort_unstable();
    cuts.dedup();
    Ok(cuts.windows(2).map(|w| body[w[0]..w[1]].to_vec()).collect())
}

/// What a request of one target may carry: the words it gives meaning to.
pub struct Vocab<'a> {
    pub methods: &'a [&'a str],
    pub paths: &'a [&'a str],
    pub header_names: &'a [&'a str],
    pub header_values: &'a [&'a str],
}

pub const METHODS: &[&str] = &[
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "get", "TRACE", "CONNECT",
];

/// Headers every control reads one way or another.
pub const COMMON_HEADERS: &[&str] = &[
    "x-request-id",
    "traceparent",
    "content-type",
    "content-length",
    "content-encoding",
    "authorization",
    "x-forwarded-for",
    "x-api-key",
    "cookie",
    "accept",
    "user-agent",
    "x-http-method-override",
    "x-palisade-jwt",
    "transfer-encoding",
    "te",
    "host",
];

pub const COMMON_VALUES: &[&str] = &[
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/problem+json",
    "gzip",
    "deflate",
    "identity",
    "*/*",
    "203.0.113.7, 10.0.0.1",
    "1",
    "0",
    "-1",
    "chunked",
    "trailers",
    "k1",
    "k2",
];

/// Request ids: safe ones, a traceparent, ones that must not be echoed.
pub const REQUEST_IDS: &[&str] = &[
    "req-7f3a9c",
    "6f1c2a4e-1b2c-4d5e-8f90-a1b2c3d4e5f6",
    "<script>",
    "a b",
    "",
];
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A client request: method, path and headers (body chunks separate).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Headers,
}

impl Request {
    /// Every value the client sent in headers, with each header's name.
    pub fn header_values(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

/// A request from `vocab`, with extra headers `more` prepended (a token, say).
pub fn request(u: &mut Unstructured, vocab: &Vocab, more: Headers) -> Result<Request> {
    let method = text_like(u, vocab.methods, 12)?;
    let path = text_like(u, vocab.paths, 64)?;
    let mut headers = more;
    match u.int_in_range(0u8..=4)? {
        0 => {}
        1 => headers.push(("traceparent".into(), TRACEPARENT.as_bytes().to_vec())),
        _ => headers.push(("x-request-id".into(), bytes_like(u, REQUEST_IDS, 140)?)),
    }
    for _ in 0..u.int_in_range(0u8..=6)? {
        let name = if bool::arbitrary(u)? {
            text_like(u, vocab.header_names, 24)?
        } else {
            text_like(u, COMMON_HEADERS, 24)?
        };
        let value = if bool::arbitrary(u)? {
            bytes_like(u, vocab.header_values, 200)?
        } else {
            bytes_like(u, COMMON_VALUES, 64)?
        };
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(Request {
        method,
        path,
        headers,
    })
}

/// The host's headers for `req`: pseudo-headers first, as hosts present them.
pub fn request_headers(req: &Request) -> Headers {
    let mut h: Headers = vec![
        (":method".into(), req.method.as_bytes().to_vec()),
        (":path".into(), req.path.as_bytes().to_vec()),
        (":authority".into(), b"api.example.com".to_vec()),
    ];
    h.extend(req.headers.iter().cloned());
    h
}

/// Response statuses worth trying.
pub const STATUSES: &[u16] = &[200, 201, 204, 304, 400, 401, 404, 429, 500, 502, 503, 504];

/// The rest of an exchange: request body and trailers, the upstream's
/// answer, and the host settings that change callbacks. The upstream's
/// `content-length`, when sent, is right: a wrong one would hang the
/// client whatever the filter does.
pub fn exchange(
    u: &mut Unstructured,
    body: &[u8],
    response_bodies: &[&str],
    response_headers: &[&str],
) -> Result<Exchange> {
    let mut ex = Exchange::new().body(body);
    ex.request_body = chunks(u, body)?;
    if u.ratio(1u8, 6)? {
        ex.request_trailers = vec![("grpc-status".into(), b"0".to_vec())];
    }
    ex.response_status = if u.ratio(1u8, 8)? {
        u.int_in_range(100..=999)?
    } else {
        *u.choose(STATUSES)?
    };
    let resp_body = bytes_like(u, response_bodies, 300)?;
    for _ in 0..u.int_in_range(0u8..=3)? {
        let name = text_like(u, response_headers, 24)?.to_ascii_lowercase();
        if name == "content-length" || name.starts_with(':') {
            continue;
        }
        ex.response_headers
            .push((name, bytes_like(u, COMMON_VALUES, 40)?));
    }
    // An empty body is declared: Kong calls no body callback for one and
    // knows it only from `content-length` (README, Kong's host facts).
    if resp_body.is_empty() || bool::arbitrary(u)? {
        ex.response_headers.push((
            "content-length".into(),
            resp_body.len().to_string().into_bytes(),
        ));
    }
    ex.response_body = chunks(u, &resp_body)?;
    ex.allow_on_headers_stop_iteration = u.ratio(3u8, 4)?;
    ex.kong_client_body_buffer_size = *u.choose(&[8 * 1024, 16, 1 << 20])?;
    ex.kong_response_body_buffers = *u.choose(&[4 * 4096, 32])?;
    Ok(ex)
}

/// A JSON value whose object keys come from `names` and strings from
/// `strings`: config documents and bodies that look like the real ones.
pub fn json(u: &mut Unstructured, names: &[&str], strings: &[&str], depth: u8) -> Result<Value> {
    let pick = u.int_in_range(0u8..=9)?;
    Ok(match pick {
        0 => Value::Null,
        1 => Value::Bool(bool::arbitrary(u)?),
        2 => Value::Number(Number::from(*u.choose(&[
            0i64,
            1,
            -1,
            2,
            5,
            60,
            100,
            1024,
            65_536,
            i64::MAX,
            i64::MIN,
            4_294_967_296,
        ])?)),
        3 => Number::from_f64(f64::arbitrary(u)?).map_or(Value::Null, Value::Number),
        4 | 5 => Value::String(text_like(u, strings, 40)?),
        6 | 7 if depth > 0 => {
            let mut map = Map::new();
            for _ in 0..u.int_in_range(0u8..=5)? {
                let key = text_like(u, names, 20)?;
                map.insert(key, json(u, names, strings, depth - 1)?);
            }
            Value::Object(map)
        }
        8 if depth > 0 => {
            let n = u.int_in_range(0u8..=4)?;
            Value::Array(
                (0..n)
                    .map(|_| json(u, names, strings, depth - 1))
                    .collect::<Result<_>>()?,
            )
        }
        _ => Value::String(text_like(u, names, 20)?),
    })
}

/// `base` with one to four edits at random places: a member replaced by a
/// generated value, removed, or added; an array item replaced.
pub fn mutate_json(
    u: &mut Unstructured,
    base: &Value,
    names: &[&str],
    strings: &[&str],
) -> Result<Value> {
    let mut doc = base.clone();
    for _ in 0..u.int_in_range(1u8..=4)? {
        edit(u, &mut doc, names, strings, 0)?;
    }
    Ok(doc)
}

fn edit(
    u: &mut Unstructured,
    v: &mut Value,
    names: &[&str],
    strings: &[&str],
    level: u8,
) -> Result<()> {
    let descend = level < 8 && u.ratio(2u8, 3)?;
    match v {
        Value::Object(map) if !map.is_empty() && descend => {
            let keys: Vec<String> = map.keys().cloned().collect();
            let key = u.choose(&keys)?;
            if let Some(child) = map.get_mut(key) {
                edit(u, child, names, strings, level + 1)?;
            }
        }
        Value::Array(items) if !items.is_empty() && descend => {
            let i = u.choose_index(items.len())?;
            edit(u, &mut items[i], names, strings, level + 1)?;
        }
        Value::Object(map) => match u.int_in_range(0u8..=2)? {
            0 if !map.is_empty() => {
                let keys: Vec<String> = map.keys().cloned().collect();
                let key = u.choose(&keys)?.clone();
                map.remove(&key);
            }
            _ => {
                let key = text_like(u, names, 20)?;
                map.insert(key, json(u, names, strings, 2)?);
            }
        },
        _ => *v = json(u, names, strings, 2)?,
    }
    Ok(())
}
