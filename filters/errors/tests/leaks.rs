//! The default leak patterns: each fires on a real-world sample, none fires
//! on ordinary error bodies, and scanning hostile bytes is fast and safe.
mod common;

use common::noise;
use palisade_errors::leaks::{LeakDetector, DEFAULT_PATTERNS};

fn detector() -> LeakDetector {
    LeakDetector::defaults().unwrap()
}

const SAMPLES: &[(&str, &str)] = &[
    ("java_stack", "java.lang.IllegalStateException: boom\n\tat com.acme.Foo.bar(Foo.java:12)\n"),
    ("java_stack", "\tat sun.reflect.NativeMethodAccessorImpl.invoke0(Native Method)"),
    ("java_stack", "Exception in thread \"main\" kotlin.KotlinNullPointerException"),
    ("python_stack", "Traceback (most recent call last):\n  File \"app.py\", line 3, in <module>"),
    ("python_stack", "  File \"/usr/lib/python3.11/json/decoder.py\", line 355, in raw_decode"),
    ("node_stack", "TypeError: x is undefined\n    at Object.<anonymous> (/usr/src/app/index.js:10:15)"),
    ("node_stack", "    at Module._compile (node:internal/modules/cjs/loader:1105:14)"),
    ("node_stack", "    at async handler (file:///app/dist/server.mjs:88:3)"),
    ("go_stack", "panic: runtime error: invalid memory address or nil pointer dereference"),
    ("go_stack", "goroutine 1 [running]:\nmain.main()\n\t/build/main.go:12 +0x1d"),
    ("dotnet_stack", "System.NullReferenceException: Object reference not set to an instance of an object."),
    ("dotnet_stack", "   at Shop.Api.OrdersController.Get(Int32 id) in C:\\build\\Shop\\OrdersController.cs:line 42"),
    ("dotnet_stack", "   --- End of stack trace from previous location ---"),
    ("ruby_stack", "app/controllers/orders_controller.rb:12:in `show'"),
    ("ruby_stack", "NoMethodError (undefined method `x' for nil)\n  from /app/lib/x.rb:4"),
    ("php_error", "PHP Fatal error:  Uncaught Error: Call to undefined function foo()"),
    ("php_error", "Stack trace:\n#0 {main}"),
    ("sqlstate", "SQLSTATE[42S02]: Base table or view not found"),
    ("sqlstate", "ERROR: relation \"users\" does not exist (SQLSTATE 42P01)"),
    ("oracle_error", "ORA-00942: table or view does not exist"),
    ("mysql_error", "You have an error in your SQL syntax; check the manual that corresponds to your MySQL server version"),
    ("mysql_error", "Unknown column 'emial' in 'where clause'"),
    ("postgres_error", "PG::UndefinedTable: ERROR:  relation \"orders\" does not exist"),
    ("postgres_error", "psycopg2.errors.UniqueViolation: duplicate key value"),
    ("postgres_error", "pq: password authentication failed for user \"app\""),
    ("sqlite_error", "sqlite3.OperationalError: no such table: users"),
    ("sqlite_error", "SQLITE_CONSTRAINT: UNIQUE constraint failed"),
    ("mssql_error", "Unclosed quotation mark after the character string 'abc'."),
    ("file_path", "could not open /home/deploy/app/config.yml"),
    ("file_path", "include(/var/www/html/config.php): failed"),
    ("file_path", "Error in /usr/src/app/server.js"),
    ("file_path", "C:\\Users\\svc_app\\AppData\\Local\\Temp\\x.tmp"),
    ("aws_key", "aws_access_key_id=AKIAIOSFODNN7EXAMPLE"),
    ("google_api_key", "key=AIzaSyA1234567890abcdefghijklmnopqrstuv"),
    ("github_token", "token ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
    ("slack_token", "xoxb-123456789012-abcdefghijkl"),
    ("private_key", "-----BEGIN RSA PRIVATE KEY-----\nMIIE..."),
    ("private_key", "-----BEGIN PRIVATE KEY-----"),
    ("private_key", "-----BEGIN OPENSSH PRIVATE KEY-----"),
];

#[test]
fn each_default_pattern_fires_on_its_samples() {
    let d = detector();
    for (name, sample) in SAMPLES {
        let found = d.find(sample.as_bytes());
        assert!(
            found.contains(name),
            "{name} missed {sample:?} (found {found:?})"
        );
    }
    for (name, _) in DEFAULT_PATTERNS {
        assert!(
            SAMPLES.iter().any(|(n, _)| n == name),
            "no sample for {name}"
        );
    }
}

#[test]
fn ordinary_error_bodies_are_not_leaks() {
    let d = detector();
    let clean = [
        r#"{"error":"not_found","message":"Order 42 does not exist"}"#,
        r#"{"type":"https://example.com/probs/out-of-credit","title":"You do not have enough credit.","status":403}"#,
        "<html><head><title>404 Not Found</title></head><body><h1>Not Found</h1><p>The requested URL /orders/42 was not found on this server.</p><hr><address>Apache Server at example.com Port 80</address></body></html>",
        "Bad Request: field 'email' must be a valid address",
        r#"{"errors":[{"field":"at","message":"at must be a date (File format: YYYY-MM-DD, line 3)"}]}"#,
        "Rate limit exceeded. Try again at 12:30:00.",
        "Cannot GET /api/v1/orders",
        "upstream connect error or disconnect/reset before headers. reset reason: connection failure",
        "Unauthorized: token expired at 2024-01-01T00:00:00Z",
        r#"{"detail":"Method \"DELETE\" not allowed."}"#,
        "ERROR: invalid input",
        "The key AKIA is too short; AIza also",
        "see https://docs.example.com/errors#E1234 or call +1 555 0100",
    ];
    for body in clean {
        assert!(
            d.find(body.as_bytes()).is_empty(),
            "false positive {:?} on {body:?}",
            d.find(body.as_bytes())
        );
    }
}

#[test]
fn hostile_bytes_scan_quickly_and_safely() {
    let d = detector();
    for seed in 0..200 {
        let _ = d.find(&noise(seed, (seed as usize * 331) % 5000));
    }
    let worst = [
        noise(7, 64 * 1024),
        vec![b'a'; 64 * 1024],
        b"at ".repeat(20_000),
        b"at a.".repeat(13_000),
        b"\xff\xfe".repeat(32_000),
        b"-----BEGIN ".repeat(6_000),
        b"File \"".repeat(11_000),
    ];
    let start = std::time::Instant::now();
    for body in &worst {
        let _ = d.find(body);
    }
    let per_scan = start.elapsed() / worst.len() as u32;
    // Native debug build; release and V8 are faster. Generous bound: linear time.
    assert!(per_scan.as_millis() < 500, "{per_scan:?} per 64 KiB scan");
}

#[test]
fn leaks_in_non_utf8_bodies_are_found() {
    let mut body = noise(3, 1000);
    body.extend_from_slice(b"\xffORA-12154: TNS:could not resolve\xfe");
    assert_eq!(detector().find(&body), ["oracle_error"]);
}
