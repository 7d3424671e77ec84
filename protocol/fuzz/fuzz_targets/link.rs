//! The link stage: header, link message, reply, auth selection, ticket and result decoders.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::link::*;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = LinkHeader::decode(data) {
        let _ = h.check();
    }
    if let Ok(m) = LinkMess::decode(data) {
        let mut b = vec![];
        m.encode(&mut b);
        assert_eq!(LinkMess::decode(&b).as_ref(), Ok(&m));
    }
    if let Ok(r) = LinkReply::decode(data) {
        let mut b = vec![];
        r.encode(&mut b);
        assert_eq!(LinkReply::decode(&b).as_ref(), Ok(&r));
    }
    let _ = decode_auth_mechanism(data);
    let _ = EncryptedTicket::decode(data);
    let _ = decode_link_result(data);
});
