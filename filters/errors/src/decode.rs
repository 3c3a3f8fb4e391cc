//! Compressed leak candidates: `content-encoding` read, bodies inflated
//! within a bound, and a problem encoded back in the body's own coding.
//!
//! An upstream that compresses its error pages whenever the client sends
//! `accept-encoding: gzip` would otherwise let any client switch leak
//! detection off. Inflation never goes past `limit` bytes of output (a zip
//! bomb costs at most that much memory and time), and a body that does not
//! inflate completely within it gets no verdict from its content: the
//! config's `undecodable` rule decides.

use flate2::bufread::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use flate2::write::{DeflateEncoder, GzEncoder, ZlibEncoder};
use flate2::Compression;
use std::io::{Read, Write};

/// A response body's `content-encoding`, as far as the filter can read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coding {
    /// None, or only `identity`.
    Identity,
    /// `gzip` / `x-gzip` (every member of a multi-member body is read).
    Gzip,
    /// `deflate`: zlib-wrapped as RFC 9110 says, or raw as some servers send it.
    Deflate,
    /// Anything else, or codings stacked on each other: not inflated here.
    Other(String),
}

impl Coding {
    /// From the `content-encoding` header value(s).
    pub fn parse(header: Option<&[u8]>) -> Coding {
        let Some(raw) = header else {
            return Coding::Identity;
        };
        let text = String::from_utf8_lossy(raw).to_ascii_lowercase();
        let codings: Vec<&str> = text
            .split(',')
            .map(str::trim)
            .filter(|c| !c.is_empty() && *c != "identity")
            .collect();
        match codings.as_slice() {
            [] => Coding::Identity,
            ["gzip" | "x-gzip"] => Coding::Gzip,
            ["deflate"] => Coding::Deflate,
            _ => Coding::Other(codings.join(", ")),
        }
    }

    /// The name used in logs.
    pub fn name(&self) -> &str {
        match self {
            Coding::Identity => "identity",
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Other(name) => name,
        }
    }
}

/// How `deflate` bodies are framed; the replacement uses the same framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Gzip,
    Zlib,
    RawDeflate,
}

/// What inflating a body prefix gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inflated {
    /// At most `limit` bytes of the decoded body.
    pub bytes: Vec<u8>,
    /// Why `bytes` is not the whole body; `None` when the compressed stream
    /// ended cleanly within `limit` bytes of output and consumed every input byte.
    pub incomplete: Option<&'static str>,
    /// The framing that was read (for the replacement).
    pub framing: Framing,
}

/// Inflates `input` (the buffered body, `whole`: nothing follows it) into
/// at most `limit` bytes. Corrupt data, a truncated stream, bytes after the
/// stream's end or more than `limit` bytes of output each set `incomplete`;
/// what was decoded before that is kept, so a leak in it is still found.
pub fn inflate(coding: &Coding, input: &[u8], whole: bool, limit: usize) -> Option<Inflated> {
    match coding {
        Coding::Gzip => Some(read_bounded(
            MultiGzDecoder::new(input),
            whole,
            limit,
            Framing::Gzip,
        )),
        Coding::Deflate => {
            let zlib = read_bounded(ZlibDecoder::new(input), whole, limit, Framing::Zlib);
            if zlib.incomplete.is_none() {
                return Some(zlib);
            }
            // Servers that send raw deflate (as old IIS did) instead of zlib.
            let raw = read_bounded(
                DeflateDecoder::new(input),
                whole,
                limit,
                Framing::RawDeflate,
            );
            Some(
                if raw.incomplete.is_none() || raw.bytes.len() > zlib.bytes.len() {
                    raw
                } else {
                    zlib
                },
            )
        }
        Coding::Identity | Coding::Other(_) => None,
    }
}

/// Reads at most `limit + 1` bytes, so "more than `limit`" is seen without
/// inflating further. The `bufread` decoders advance the input slice only
/// past what they consumed, so bytes after the stream's end stay visible.
fn read_bounded<R: Read + Remaining>(
    decoder: R,
    whole: bool,
    limit: usize,
    framing: Framing,
) -> Inflated {
    let bound = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    let mut taken = decoder.take(bound);
    let mut bytes = Vec::new();
    let ended = taken.read_to_end(&mut bytes).is_ok();
    let incomplete = if bytes.len() > limit {
        Some("inflates past scan_bytes")
    } else if !whole {
        Some("was not buffered whole")
    } else if !ended {
        Some("is corrupt or truncated")
    } else if taken.get_ref().remaining() > 0 {
        Some("has bytes after the compressed stream")
    } else {
        None
    };
    bytes.truncate(limit);
    Inflated {
        bytes,
        incomplete,
        framing,
    }
}

/// Input bytes a decoder has not consumed.
trait Remaining {
    fn remaining(&self) -> usize;
}

impl Remaining for MultiGzDecoder<&[u8]> {
    fn remaining(&self) -> usize {
        self.get_ref().len()
    }
}

impl Remaining for ZlibDecoder<&[u8]> {
    fn remaining(&self) -> usize {
        self.get_ref().len()
    }
}

impl Remaining for DeflateDecoder<&[u8]> {
    fn remaining(&self) -> usize {
        self.get_ref().len()
    }
}

/// `data` compressed with `framing`: the problem that replaces a body whose
/// headers (`content-encoding` included) have already left. Writing to a
/// `Vec` cannot fail; an empty result would only mean the impossible.
pub fn encode(framing: Framing, data: &[u8]) -> Vec<u8> {
    let level = Compression::fast();
    let encoded = match framing {
        Framing::Gzip => {
            let mut e = GzEncoder::new(Vec::new(), level);
            e.write_all(data).and_then(|()| e.finish())
        }
        Framing::Zlib => {
            let mut e = ZlibEncoder::new(Vec::new(), level);
            e.write_all(data).and_then(|()| e.finish())
        }
        Framing::RawDeflate => {
            let mut e = DeflateEncoder::new(Vec::new(), level);
            e.write_all(data).and_then(|()| e.finish())
        }
    };
    encoded.unwrap_or_default()
}
