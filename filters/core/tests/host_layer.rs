//! Every Envoy/Kong difference the host layer absorbs (see shared/NOTES.md).
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use palisade_core::fake::FakeHost;
use palisade_core::{Host, HostKind};

#[test]
fn kong_is_detected_by_its_nginx_properties() {
    assert_eq!(HostKind::detect(Some(b"1.25.3")), HostKind::Kong);
    assert_eq!(HostKind::detect(None), HostKind::Envoy);
    assert_eq!(HostKind::detect(Some(b"")), HostKind::Envoy);
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
        kong.request_headers(),
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
