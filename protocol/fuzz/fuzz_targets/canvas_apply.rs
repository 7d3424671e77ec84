//! The reference canvas on arbitrary display messages (a small primary surface, small limits).
#![no_main]
use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use spice_proto::canvas::Canvas;
use spice_proto::codec::Limits;
use spice_proto::display::{SurfaceFlags, SurfaceFmt};
use spice_proto::messages::display::SurfaceCreate;
use spice_proto::messages::DisplayServer;

fuzz_target!(|data: &[u8]| {
    let mut c = Canvas::new(Limits { max_pixels: 1 << 16 });
    let _ = c.apply(&DisplayServer::SurfaceCreate(SurfaceCreate {
        surface_id: 0,
        width: 64,
        height: 48,
        format: SurfaceFmt::Xrgb32,
        flags: SurfaceFlags::PRIMARY,
    }));
    let mut u = Unstructured::new(data);
    for _ in 0..32 {
        let Ok(m) = DisplayServer::arbitrary(&mut u) else { break };
        let _ = c.apply(&m);
    }
});
