//! Every Envoy/Kong difference the host layer absorbs (see shared/NOTES.md).
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use palisade_core::fake::FakeHost;
use palisade_core::{Host, HostKind};

#[test]
fn kong_is_detected_by_its_nginx_properties_inside_a_request() {
    assert_eq!(HostKind::detect_in_request(Some(b"1.25.3")), HostKind::Kong);
    assert_eq!(HostKind::detect_in_request(None), HostKind::Envoy);
    assert_eq!(HostKind::detect_in_request(Some(b"")), HostKind::Envoy);
}

#[test]
fn integers_are_binary_on_envoy_and_decimal_on_kong() {
    assert_eq!(HostKind::Envoy.decode_u64(&443u64.to_le_bytes()), Some(443));
    assert_eq!(HostKind::Envoy.decode_u64(b"443"), None);
    assert_eq!(HostKind::Kong.decode_u64(b"443"), Some(443));
    assert_eq!(HostKind::Kong.decode_u64(&443u64.to_le_bytes()), None);
}

#[test]
fn route_name_comes_from_each_hosts_own_property() {
    let mut envoy = FakeHost::new();
    envoy
        .properties
        .insert("xds.route_name".into(), b"orders".to_vec());
    envoy
        .properties
        .insert("kong.route_name".into(), b"wrong".to_vec());
    assert_eq!(envoy.route_name().as_deref(), Some("orders"));

    let mut kong = FakeHost::kong();
    kong.properties
        .insert("kong.route_name".into(), b"orders\0".to_vec());
    assert_eq!(kong.route_name().as_deref(), Some("orders"));
}

#[test]
fn kong_strips_request_headers_by_overwriting_them() {
    let mut envoy = FakeHost::request("GET", "/").with_request_header("x-palisade-jwt", "forged");
    envoy.remove_request_header("x-palisade-jwt");
    assert_eq!(envoy.req_header("x-palisade-jwt"), None);

    let mut kong = FakeHost::request("GET", "/").with_request_header("X-Palisade-Jwt", "forged");
    kong.kind = HostKind::Kong;
    kong.remove_request_header("x-palisade-jwt");
    assert_eq!(kong.req_header("x-palisade-jwt").as_deref(), Some(""));
    kong.remove_request_header("absent");
    assert_eq!(kong.req_header("absent"), None);
}

#[test]
fn header_names_are_lowercased_whatever_case_the_host_keeps() {
    let kong = {
        let mut h = FakeHost::kong();
        h.request_headers = vec![("X-Api-Key".into(), b"k".to_vec())];
        h
    };
    assert_eq!(
        *kong.request_headers(),
        vec![("x-api-key".to_string(), b"k".to_vec())]
    );
    assert_eq!(kong.request_header("x-api-key"), Some(b"k".to_vec()));
}

#[test]
fn response_capabilities_differ() {
    assert!(HostKind::Envoy.local_reply_from_response_headers());
    assert!(!HostKind::Kong.local_reply_from_response_headers());
    assert!(HostKind::Envoy.honours_pause_in_response_headers());
    assert!(!HostKind::Kong.honours_pause_in_response_headers());
    assert!(HostKind::Envoy.trusts_end_of_stream_in_headers());
    assert!(!HostKind::Kong.trusts_end_of_stream_in_headers());
    assert_eq!(HostKind::Kong.authority_header(), "host");
    assert_eq!(HostKind::Envoy.authority_header(), ":authority");
}

#[test]
fn kong_local_replies_gain_a_newline() {
    let mut kong = FakeHost::kong();
    kong.send_response(503, &[], b"{}");
    assert_eq!(kong.sent.unwrap().body, b"{}\n");
    let mut envoy = FakeHost::new();
    envoy.send_response(503, &[], b"{}");
    assert_eq!(envoy.sent.unwrap().body, b"{}");
}

#[test]
fn response_status_is_parsed_defensively() {
    assert_eq!(
        FakeHost::new()
            .with_response(503, &[], b"")
            .response_status(),
        503
    );
    let mut h = FakeHost::new();
    h.response_headers = vec![(":status".into(), b"5x3".to_vec())];
    assert_eq!(h.response_status(), 0);
    assert_eq!(FakeHost::new().response_status(), 0);
}

#[test]
fn header_maps_and_bodies_are_only_touched_in_their_own_phase() {
    use palisade_core::host::{Phase, Resource};
    assert!(Phase::RequestHeaders.allows(Resource::RequestHeaders));
    assert!(Phase::RequestBody.allows(Resource::RequestHeaders));
    assert!(!Phase::ResponseHeaders.allows(Resource::RequestHeaders));
    assert!(!Phase::ResponseBody.allows(Resource::RequestHeaders));
    assert!(!Phase::Root.allows(Resource::RequestHeaders));
    assert!(!Phase::RequestHeaders.allows(Resource::ResponseHeaders));
    assert!(Phase::ResponseBody.allows(Resource::ResponseHeaders));
    assert!(!Phase::ResponseHeaders.allows(Resource::ResponseBody));
    assert!(Phase::ResponseBody.allows(Resource::ResponseBody));
    assert!(Phase::ResponseTrailers.allows(Resource::ResponseBody));
    assert!(!Phase::RequestBody.allows(Resource::ResponseBody));
    assert!(!Phase::ResponseBody.allows(Resource::ResponseTrailers));
    assert!(Phase::ResponseTrailers.allows(Resource::ResponseTrailers));
}

#[test]
fn shared_data_keys_are_per_filter_and_carry_no_kong_zone_separator() {
    // On Kong `zone/key` would select a zone named `palisade.jwt.jwks`;
    // keys are the same on every host, as they are made before it is known.
    for kind in [HostKind::Envoy, HostKind::Kong, HostKind::Unknown] {
        assert_eq!(
            kind.shared_key("jwt", "jwks/corp"),
            "palisade.jwt.jwks_corp"
        );
    }
    assert_ne!(
        HostKind::Envoy.shared_key("jwt", "k"),
        HostKind::Envoy.shared_key("ratelimit", "k")
    );
}

#[test]
fn http_calls_target_a_cluster_on_envoy_and_host_port_on_kong() {
    assert_eq!(
        HostKind::Envoy.http_call_upstream("idp", "id.example.com:443"),
        Some("idp")
    );
    assert_eq!(
        HostKind::Kong.http_call_upstream("idp", "id.example.com:443"),
        Some("id.example.com:443")
    );
    assert_eq!(
        HostKind::Unknown.http_call_upstream("idp", "id.example.com:443"),
        None
    );
}

#[test]
fn features_kong_lacks_are_known_before_any_call() {
    assert!(HostKind::Envoy.supports_grpc_calls());
    assert!(!HostKind::Kong.supports_grpc_calls());
    assert!(HostKind::Envoy.has_verify_signature());
    assert!(!HostKind::Kong.has_verify_signature());
    assert!(HostKind::Envoy.has_trailers());
    assert!(!HostKind::Kong.has_trailers());
    assert!(HostKind::Kong.shared_data_may_evict());
    assert!(!HostKind::Envoy.shared_data_may_evict());
}

#[test]
fn kong_is_never_asked_for_grpc_or_foreign_functions() {
    use palisade_core::fake::ForeignFunctions;
    use palisade_core::host::CallError;
    let mut kong = FakeHost::kong();
    kong.foreign = ForeignFunctions::new(|_, _| Some(vec![8, 1]));
    assert_eq!(
        kong.grpc_call("rls", "svc", "M", &[], b"", 100),
        Err(CallError::Unsupported)
    );
    assert!(kong.foreign_calls.is_empty());

    let mut envoy = FakeHost::new();
    envoy.foreign = ForeignFunctions::new(|_, _| Some(vec![8, 1]));
    assert_eq!(
        envoy.foreign_function("verify_signature", b"x"),
        Some(vec![8, 1])
    );
    assert!(envoy.grpc_call("rls", "svc", "M", &[], b"", 100).is_ok());
}

#[test]
fn shared_data_writes_with_a_stale_version_fail_across_workers() {
    use palisade_core::host::SharedError;
    let mut a = FakeHost::new();
    let mut b = a.sibling();
    assert_eq!(a.shared_get("k").value, None);
    a.shared_set("k", b"1", None).unwrap();
    let seen_a = a.shared_get("k");
    let seen_b = b.shared_get("k");
    assert_eq!(seen_b.value.as_deref(), Some(&b"1"[..]));
    b.shared_set("k", b"2", seen_b.cas).unwrap();
    assert_eq!(
        a.shared_set("k", b"3", seen_a.cas),
        Err(SharedError::CasMismatch)
    );
    let fresh = a.shared_get("k");
    a.shared_set("k", b"3", fresh.cas).unwrap();
    assert_eq!(b.shared_get("k").value.as_deref(), Some(&b"3"[..]));
}

#[test]
fn properties_set_by_one_filter_are_read_back_by_the_next() {
    let mut h = FakeHost::new();
    h.set_property(&["palisade", "jwt", "sub"], b"alice");
    assert_eq!(
        h.property(&["palisade", "jwt", "sub"]).as_deref(),
        Some(&b"alice"[..])
    );
}

#[test]
fn the_request_body_is_readable_only_in_its_own_phase() {
    use palisade_core::host::{Phase, Resource};
    assert!(Phase::RequestBody.allows(Resource::RequestBody));
    // Trailers end an HTTP/2 request: its buffered body must still be judged.
    assert!(Phase::RequestTrailers.allows(Resource::RequestBody));
    assert!(Phase::RequestTrailers.allows(Resource::RequestHeaders));
    assert!(!Phase::RequestHeaders.allows(Resource::RequestBody));
    assert!(!Phase::ResponseBody.allows(Resource::RequestBody));
}

// --- Kong's real host, as NOTES' "Seen on the real host" records it -------

#[test]
fn a_kong_root_context_reads_no_property_so_the_root_probe_is_another_call() {
    use palisade_core::host::{Phase, KONG_PROBE};
    let mut kong = FakeHost::kong();
    kong.properties
        .insert("ngx.nginx_version".into(), b"1.25.3".to_vec());
    kong.phase = Phase::Configure;
    // The old probe: `ngx.*` from `on_configure` answers nothing on Kong,
    // so it concluded Envoy there.
    assert_eq!(kong.property(KONG_PROBE), None);
    assert!(kong.logged(palisade_core::Level::Error, "outside of a request"));
    assert_eq!(
        HostKind::detect_in_request(kong.property(KONG_PROBE).as_deref()),
        HostKind::Envoy
    );
    // The root probe both hosts answer, differently.
    assert_eq!(FakeHost::configuring(HostKind::Kong).kind(), HostKind::Kong);
    assert_eq!(
        FakeHost::configuring(HostKind::Envoy).kind(),
        HostKind::Envoy
    );
    // Inside a request, the first one confirms it.
    kong.phase = Phase::RequestHeaders;
    assert_eq!(
        HostKind::detect_in_request(kong.property(KONG_PROBE).as_deref()),
        HostKind::Kong
    );
    let envoy = FakeHost::new();
    assert_eq!(
        HostKind::detect_in_request(envoy.property(KONG_PROBE).as_deref()),
        HostKind::Envoy
    );
}

#[test]
fn nothing_host_specific_runs_while_the_host_is_unknown() {
    use palisade_core::host::CallError;
    let mut root = FakeHost::configuring(HostKind::Kong);
    root.believed = Some(HostKind::Unknown);
    assert_eq!(
        root.http_call("idp", &[(":path", "/")], None, 100),
        Err(CallError::Unsupported)
    );
    assert!(root.calls.is_empty());
    assert!(!HostKind::Unknown.has_verify_signature());
    assert!(!HostKind::Unknown.supports_grpc_calls());
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
#[should_panic(expected = "trap on kong: dispatch_http_call from Configure")]
fn kong_traps_an_http_call_from_on_configure() {
    use palisade_core::host::Phase;
    let mut kong = FakeHost::kong();
    kong.phase = Phase::Configure;
    let _ = kong.http_call("id.example.com:443", &[(":path", "/")], None, 100);
}

#[test]
fn kong_allows_http_calls_from_requests_ticks_and_call_answers() {
    use palisade_core::host::Phase;
    for phase in [
        Phase::RequestHeaders,
        Phase::RequestBody,
        Phase::Tick,
        Phase::CallResponse,
    ] {
        let mut kong = FakeHost::kong();
        kong.phase = phase;
        assert!(kong.http_call("id.example.com:443", &[], None, 100).is_ok());
    }
    for phase in [
        Phase::Configure,
        Phase::ResponseHeaders,
        Phase::ResponseBody,
    ] {
        assert!(!phase.kong_allows_dispatch(), "{phase:?}");
    }
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
#[should_panic(expected = "proxy_call_foreign_function(verify_signature) is not implemented")]
fn kong_traps_a_foreign_function_call() {
    let mut kong = FakeHost::kong();
    let _ = kong.foreign_function("verify_signature", b"x");
}

#[test]
fn a_header_removed_on_kong_still_reaches_the_upstream_and_a_later_set_duplicates_it() {
    // The module believed it ran on Envoy (the old detection): a real removal.
    let mut misdetected = FakeHost::kong().with_request_header("x-jwt-sub", "mallory");
    misdetected.believed = Some(HostKind::Envoy);
    misdetected.remove_request_header("x-jwt-sub");
    misdetected.set_request_header("x-jwt-sub", b"alice");
    assert_eq!(
        misdetected.upstream_header_values("x-jwt-sub"),
        ["mallory", "alice"]
    );
    // Detected as Kong: overwritten in place, one header, the verified value.
    let mut kong = FakeHost::kong().with_request_header("x-jwt-sub", "mallory");
    kong.remove_request_header("x-jwt-sub");
    assert_eq!(kong.upstream_header_values("x-jwt-sub"), [""]);
    kong.set_request_header("x-jwt-sub", b"alice");
    assert_eq!(kong.upstream_header_values("x-jwt-sub"), ["alice"]);
}

#[test]
fn kong_cuts_a_body_replacement_to_the_size_given() {
    let mut kong = FakeHost::kong().with_response(500, &[], b"oops");
    kong.set_response_body(0, 4, b"{\"replaced\": true}");
    assert_eq!(kong.response_body, b"{\"re");
    let mut envoy = FakeHost::new().with_response(500, &[], b"oops");
    envoy.set_response_body(0, 4, b"{\"replaced\": true}");
    assert_eq!(envoy.response_body, b"{\"replaced\": true}");
}

#[test]
fn kong_overwrites_only_the_first_copy_of_a_repeated_request_header() {
    let mut kong = FakeHost::kong()
        .with_request_header("x-jwt-sub", "mallory")
        .with_request_header("X-Jwt-Sub", "mallory2");
    kong.remove_request_header("x-jwt-sub");
    kong.set_request_header("x-jwt-sub", b"alice");
    assert_eq!(
        kong.upstream_header_values("x-jwt-sub"),
        ["mallory2", "alice"]
    );
    let headers = FakeHost::new()
        .with_request_header("x-jwt-sub", "a")
        .with_request_header("X-Jwt-Sub", "b")
        .request_headers();
    assert!(palisade_core::headers::repeated(&headers, |n| n == "x-jwt-sub"));
    assert!(!palisade_core::headers::repeated(&headers, |n| n == "accept"));
}
