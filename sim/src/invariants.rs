//! The invariants every run must keep, checked after the run from what the devices logged,
//! what each client sent, and what the server host sampled after each step.
//!
//! - No panic anywhere (the server loop, its tasks, the clients): a panic hook records them.
//! - Inputs reach the devices once each and in order: for every client, the events attributed
//!   to it (by its own scancode range and tablet x range) are, in order, a subsequence of what
//!   it sent; for a client no fault of its own could cut off (see
//!   [`ClientPlan::lossless`](crate::plan::ClientPlan::lossless)) that ended cleanly, they
//!   are exactly what it sent.
//! - A faulty client does not stop another: a lossless client always ends cleanly.
//! - After quiescence a connected client's screen equals the device's framebuffer: a client
//!   with no fault of its own that stayed past the scene's settling has, pixel for pixel, the
//!   fake display's settled frame.
//! - The bytes queued for any one connection stay under the output cap plus one message.
//! - After every client leaves, the server holds no connection and no session.
//! - Sound ([`check_audio`]): every playback connection's messages decode (Opus packets to
//!   one 10 ms frame each), its mode follows the client's `OPUS` capability, every `start`
//!   is stereo S16 at the card's rate, and its `data` timestamps strictly increase. Raw audio
//!   is never invented or reordered: what a connection received is, in order, a subsequence
//!   of the frames the card played; while the client keeps up
//!   ([`ClientPlan::keeps_up`]) nothing is lost: it is one contiguous run of them. Whatever
//!   the clients do, the server's playback queues never hold more than
//!   `Budgets::playback_queue_frames`. Record data reaches the card in order and once: the
//!   card's frames are a subsequence of what the recording client sent (raw; Opus: no more
//!   frames than sent, whole 10 ms frames), and all of it for a client nothing could cut
//!   off.

use std::cell::RefCell;

use spice_fake_devices::input::{Device, InputEvent, Record};

use crate::audio::{PlaybackLog, RecordLog};
use crate::plan::{client_of_key, ClientPlan, Input};
use crate::world::{ClientReport, ServerStats};
use crate::Options;

/// The largest single message the server queues in these runs (the main channel's 256000-byte
/// bandwidth ping plus its header), which may go over the cap by itself.
pub const MAX_MESSAGE: usize = 256_000 + 64;

thread_local! {
    // A run happens on one thread (turmoil runs every host there), so its panics are that
    // thread's: runs on other threads (parallel tests) do not mix.
    static PANICS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Record panics (from any task) instead of only printing them.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let _ = PANICS.try_with(|p| p.borrow_mut().push(info.to_string()));
            prev(info);
        }));
    });
}

/// Panics recorded on this thread since the last call.
pub fn take_panics() -> Vec<String> {
    PANICS.with(|p| std::mem::take(&mut *p.borrow_mut()))
}

/// An event as a client input, if it is one a client can have caused.
fn as_input(r: &Record, clients: u32) -> Option<(u32, Input)> {
    match (&r.device, &r.event) {
        (Device::Keyboard, InputEvent::Scancode { byte }) if byte & 0x80 == 0 => {
            client_of_key(*byte, clients).map(|k| (k, Input::Key(*byte)))
        }
        (Device::Tablet, InputEvent::Position { x, y, .. }) => {
            let k = x / 1000;
            (k < clients).then_some((k, Input::Position { x: *x, y: *y }))
        }
        // A press in client mouse mode: the tablet's wheel(0) with the new button state, one
        // bit set, which names the client (see `plan::Input::Click`).
        (Device::Tablet, InputEvent::Wheel { dz: 0, buttons }) if buttons.count_ones() == 1 => {
            let k = buttons.trailing_zeros();
            (k < clients.min(3)).then_some((
                k,
                Input::Click {
                    button: k as u8 + 1,
                },
            ))
        }
        _ => None,
    }
}

/// Check a finished run.
pub fn check(
    opts: &Options,
    plans: &[ClientPlan],
    reports: &[ClientReport],
    log: &[Record],
    stats: &ServerStats,
) -> Vec<String> {
    let mut v = Vec::new();
    for (plan, rep) in plans.iter().zip(reports) {
        let k = plan.index;
        let got: Vec<Input> = log
            .iter()
            .filter_map(|r| as_input(r, opts.clients))
            .filter(|(c, _)| *c == k)
            .map(|(_, i)| i)
            .collect();
        // Resize requests go another way (main, to the display device): see check_resizes.
        let sent: Vec<Input> = rep
            .sent
            .iter()
            .copied()
            .filter(|i| !matches!(i, Input::Resize { .. }))
            .collect();
        let rep = &ClientReport {
            sent,
            ..rep.clone()
        };
        if !is_subsequence(&got, &rep.sent) {
            v.push(format!(
                "client {k}: the devices got inputs it did not send, or out of order: got {} events {:?}, sent {} {:?}",
                got.len(),
                head(&got),
                rep.sent.len(),
                head(&rep.sent)
            ));
        } else if plan.lossless() && rep.clean && got != rep.sent {
            let missing: Vec<Input> = rep
                .sent
                .iter()
                .filter(|i| !got.contains(i))
                .take(6)
                .copied()
                .collect();
            v.push(format!(
                "client {k}: {} of {} inputs reached the devices (no fault of its own could lose any); missing {missing:?}",
                got.len(),
                rep.sent.len()
            ));
        }
        // A client with no fault of its own that saw the scene settle has exactly the device's
        // screen (lossless compression), whatever the other clients did.
        if plan.lossless() && plan.stall.is_none() && plan.hold.is_none() && rep.clean {
            if let Some(false) = rep.screen_matches {
                v.push(format!(
                    "client {k}: its screen is not the device's framebuffer: {}",
                    rep.screen_note.as_deref().unwrap_or("?")
                ));
            }
        }
        if plan.lossless() && plan.stall.is_none() && !rep.clean {
            v.push(format!(
                "client {k} (no faults of its own) did not finish: {}",
                rep.error.as_deref().unwrap_or("?")
            ));
        }
    }
    let cap = opts.output_cap + MAX_MESSAGE;
    if stats.max_queued > cap {
        v.push(format!(
            "a connection had {} bytes queued (cap {} + one message)",
            stats.max_queued, opts.output_cap
        ));
    }
    if stats.connections != 0 || stats.sessions != 0 {
        v.push(format!(
            "after every client left the server still holds {} connections and {} sessions",
            stats.connections, stats.sessions
        ));
    }
    v
}

fn head(v: &[Input]) -> Vec<Input> {
    v.iter().take(6).copied().collect()
}

/// Whether `a` appears in `b` in order (not necessarily contiguous), each element used once.
fn is_subsequence(a: &[Input], b: &[Input]) -> bool {
    let mut it = b.iter();
    a.iter().all(|x| it.any(|y| y == x))
}

/// The QXL device's commands: each released exactly once, none left unreleased once the run is
/// quiet.
pub fn check_releases(a: &spice_fake_devices::qxl::Audit) -> Vec<String> {
    let mut v = Vec::new();
    for e in a.errors.iter().take(3) {
        v.push(format!("QXL: {e}"));
    }
    if a.outstanding > 0 {
        v.push(format!(
            "QXL: {} of {} commands never released ({} released)",
            a.outstanding, a.issued, a.released
        ));
    }
    v
}

/// Client monitor requests: each client's reach the QXL device once each and in order (all of
/// them for a client no fault of its own could cut off).
pub fn check_resizes(
    opts: &Options,
    plans: &[ClientPlan],
    reports: &[ClientReport],
    a: &spice_fake_devices::qxl::Audit,
) -> Vec<String> {
    let mut v = Vec::new();
    for (plan, rep) in plans.iter().zip(reports) {
        let k = plan.index;
        let got: Vec<Input> = a
            .monitor_requests
            .iter()
            .filter(|(w, _)| w.checked_sub(400).map(|d| d / 10) == Some(k) && k < opts.clients)
            .map(|&(width, height)| Input::Resize { width, height })
            .collect();
        let sent: Vec<Input> = rep
            .sent
            .iter()
            .copied()
            .filter(|i| matches!(i, Input::Resize { .. }))
            .collect();
        if !is_subsequence(&got, &sent) {
            v.push(format!(
                "client {k}: the display device got monitor requests it did not send, or out of order: got {got:?}, sent {sent:?}"
            ));
        } else if plan.lossless() && rep.clean && got != sent {
            v.push(format!(
                "client {k}: {} of {} monitor requests reached the display device (device saw {:?})",
                got.len(),
                sent.len(),
                a.monitor_requests
            ));
        }
    }
    v
}

/// What the sound invariants look at.
pub struct AudioRun<'a> {
    pub opts: &'a Options,
    pub plans: &'a [ClientPlan],
    pub playback: &'a [PlaybackLog],
    pub record: &'a [RecordLog],
    /// The frames the fake card played (handed to the server), in order.
    pub generated: &'a [u32],
    /// The frames the fake card's record side received, in order.
    pub received: &'a [u32],
    pub stats: &'a ServerStats,
}

/// The card's rate (the fake card's default).
const RATE: u32 = spice_fake_devices::audio::DEFAULT_RATE;
/// Frames per 10 ms packet at that rate.
const PACKET: usize = spice_server::vdi::AUDIO_FRAME_SAMPLES;

/// Whether `run` occurs in `all` as one contiguous run.
pub fn is_contiguous_run(run: &[u32], all: &[u32]) -> bool {
    let Some(&first) = run.first() else {
        return true;
    };
    if run.len() > all.len() {
        return false;
    }
    (0..=all.len() - run.len()).any(|p| all[p] == first && all[p..p + run.len()] == *run)
}

/// Whether `a` appears in `b` in order (not necessarily contiguous), each element used once.
pub fn is_subsequence_of<T: PartialEq>(a: &[T], b: &[T]) -> bool {
    let mut it = b.iter();
    a.iter().all(|x| it.any(|y| y == x))
}

/// The sound invariants.
pub fn check_audio(r: &AudioRun<'_>) -> Vec<String> {
    let mut v = Vec::new();
    let plan_of = |k: u32| r.plans.iter().find(|p| p.index == k);
    for l in r.playback {
        let who = format!("client {} playback (connection {})", l.client, l.conn);
        for e in l.errors.iter().take(3) {
            v.push(format!("{who}: {e}"));
        }
        let want = if l.opus_offered {
            spice_proto::messages::playback::AudioDataMode::Opus
        } else {
            spice_proto::messages::playback::AudioDataMode::Raw
        };
        if let Some(mode) = l.mode() {
            if mode != want {
                v.push(format!(
                    "{who}: mode {} where the client {} OPUS (compression on, {RATE} Hz)",
                    mode.name(),
                    if l.opus_offered {
                        "offered"
                    } else {
                        "did not offer"
                    }
                ));
            }
        } else if !l.packets.is_empty() {
            v.push(format!("{who}: data before any mode"));
        }
        for s in &l.starts {
            if (s.0, s.1, s.2) != (2, 1, RATE) {
                v.push(format!(
                    "{who}: start with {} channels, format {}, {} Hz (want 2, S16, {RATE})",
                    s.0, s.1, s.2
                ));
            }
        }
        if let Some(w) = l
            .packets
            .windows(2)
            .find(|w| (w[1].0.wrapping_sub(w[0].0) as i32) <= 0)
        {
            v.push(format!(
                "{who}: data timestamps do not strictly increase ({} then {})",
                w[0].0, w[1].0
            ));
        }
        match l.mode() {
            Some(spice_proto::messages::playback::AudioDataMode::Opus) => {
                if let Some((i, p)) = l.packets.iter().enumerate().find(|(_, p)| p.1 != PACKET) {
                    v.push(format!(
                        "{who}: Opus packet #{i} decoded to {} frames, not {PACKET}",
                        p.1
                    ));
                }
            }
            Some(spice_proto::messages::playback::AudioDataMode::Raw) => {
                let keeps_up = plan_of(l.client).is_some_and(|p| p.keeps_up()) && !l.stalled;
                if keeps_up && !is_contiguous_run(&l.frames, r.generated) {
                    v.push(format!(
                        "{who}: the client kept up but its {} frames ({} packets) are not one contiguous run of the card's {} frames: audio was lost",
                        l.frames.len(),
                        l.packets.len(),
                        r.generated.len()
                    ));
                } else if !is_subsequence_of(&l.frames, r.generated) {
                    v.push(format!(
                        "{who}: its {} frames are not, in order, frames the card played: audio invented or reordered",
                        l.frames.len()
                    ));
                }
            }
            _ => {}
        }
    }
    let cap = spice_server::Budgets::default()
        .playback_queue_frames
        .max(PACKET);
    if r.stats.max_playback_queued > cap {
        v.push(format!(
            "the server's playback queues held {} frames (budget playback_queue_frames {cap})",
            r.stats.max_playback_queued
        ));
    }
    // Record: one client records (see plan::AudioPlan::records); its connections in order.
    let sent: Vec<u32> = r
        .record
        .iter()
        .flat_map(|l| l.frames.iter().copied())
        .collect();
    for l in r.record {
        for e in l.errors.iter().take(3) {
            v.push(format!(
                "client {} record (connection {}): {e}",
                l.client, l.conn
            ));
        }
    }
    let opus = r
        .record
        .iter()
        .any(|l| l.mode == Some(spice_proto::messages::playback::AudioDataMode::Opus));
    let whole = r.record.first().is_some_and(|l| {
        plan_of(l.client).is_some_and(|p| p.lossless() && p.hold.is_none())
            && r.record
                .iter()
                .all(|l| !l.closed_by_server && l.stops == 0 && l.starts > 0)
    });
    if opus {
        if r.received.len() > sent.len() || r.received.len() % PACKET != 0 {
            v.push(format!(
                "record: the card received {} frames from {} Opus-encoded frames sent (want at most that many, whole {PACKET}-frame packets)",
                r.received.len(),
                sent.len()
            ));
        } else if whole && r.received.len() != sent.len() {
            v.push(format!(
                "record: the card received {} of the {} frames the client sent (nothing could cut it off)",
                r.received.len(),
                sent.len()
            ));
        }
    } else if !is_subsequence_of(r.received, &sent) {
        v.push(format!(
            "record: the card's {} frames are not, in order and once, frames the client sent ({})",
            r.received.len(),
            sent.len()
        ));
    } else if whole && r.received != sent.as_slice() {
        v.push(format!(
            "record: the card received {} of the {} frames the client sent (nothing could cut it off)",
            r.received.len(),
            sent.len()
        ));
    }
    let _ = r.opts;
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_runs() {
        let all = [0, 0, 1, 2, 0, 1, 3];
        assert!(is_contiguous_run(&[0, 1, 3], &all));
        assert!(is_contiguous_run(&[], &all));
        assert!(!is_contiguous_run(&[1, 2, 1], &all));
        assert!(!is_contiguous_run(&[2, 0, 3], &all));
        assert!(is_subsequence_of(&[2, 0, 3], &all));
    }

    #[test]
    fn subsequence_respects_order_and_multiplicity() {
        let k = |b| Input::Key(b);
        assert!(is_subsequence(&[k(1), k(3)], &[k(1), k(2), k(3)]));
        assert!(!is_subsequence(&[k(3), k(1)], &[k(1), k(2), k(3)]));
        assert!(!is_subsequence(&[k(1), k(1)], &[k(1), k(2)]));
        assert!(is_subsequence(&[], &[k(1)]));
    }
}
