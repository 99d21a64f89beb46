//! Malformed incoming headers never panic an extractor, and never let an untrusted peer
//! choose its key.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::{HeaderName, HeaderValue, Request};
use proptest::prelude::*;
use sluice_tower::{ForwardedHeader, Header, KeyExtractor, MethodAndPath, PeerIp, TrustedProxies};

fn request(peer: IpAddr, headers: &[(&'static str, Vec<u8>)]) -> Request<()> {
    let mut req = Request::new(());
    req.extensions_mut().insert(SocketAddr::new(peer, 1));
    for (name, value) in headers {
        // Bytes a header value cannot hold are dropped, as a server would refuse them.
        if let Ok(value) = HeaderValue::from_bytes(value) {
            req.headers_mut()
                .append(HeaderName::from_static(name), value);
        }
    }
    req
}

fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..80),
        "[0-9a-f:.,\\[\\] ;=\"forFOR]{0,60}".prop_map(String::into_bytes),
    ]
}

proptest! {
    #[test]
    fn extractors_never_panic(
        peer in any::<[u8; 4]>(),
        trusted_peer in any::<bool>(),
        xff in header_bytes(),
        fwd in header_bytes(),
        key in header_bytes(),
    ) {
        let peer = if trusted_peer {
            IpAddr::V4(Ipv4Addr::new(10, peer[1], peer[2], peer[3]))
        } else {
            IpAddr::V4(Ipv4Addr::from(peer))
        };
        let req = request(peer, &[("x-forwarded-for", xff), ("forwarded", fwd), ("x-api-key", key)]);
        let trusted = TrustedProxies::parse(["10.0.0.0/8"]).expect("valid");
        for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
            let extractor = PeerIp::behind(trusted.clone(), header);
            let ip = extractor.client_ip(&req);
            prop_assert!(ip.is_some());
            if !trusted.contains(peer) {
                prop_assert_eq!(ip, Some(peer));
            }
            let _ = KeyExtractor::<()>::extract(&extractor, "per-ip", &req);
        }
        let _ = KeyExtractor::<()>::extract(&Header(HeaderName::from_static("x-api-key")), "k", &req);
        let _ = KeyExtractor::<()>::extract(&MethodAndPath::new(), "r", &req);
    }
}
