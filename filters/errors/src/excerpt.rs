//! The first bytes of a masked body, made safe for a log line.
//!
//! Operators still need to see what the upstream said, but a body may hold
//! anything (control characters, ANSI escapes, invalid UTF-8, fake log
//! lines), so everything outside printable ASCII is escaped.

/// Escapes `bytes` to printable ASCII: `\n`, `\r`, `\t`, `\"`, `\\` and `\xNN`.
pub fn printable(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + bytes.len() / 4);
    for &b in bytes {
        match b {
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}
