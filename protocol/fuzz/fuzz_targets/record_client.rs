//! record channel, client to server: decoding arbitrary bodies never panics, and what decodes re-encodes to bytes
//! that decode to the same message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use spice_proto::messages::RecordClient;
use spice_proto::Message;

fuzz_target!(|input: (u16, &[u8])| {
    let (msg_type, body) = input;
    if let Ok(m) = RecordClient::decode(msg_type, body) {
        let again = m.to_body();
        assert_eq!(RecordClient::decode(m.msg_type(), &again).as_ref(), Ok(&m));
    }
});
