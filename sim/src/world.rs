//! Building and running one simulated world.
//!
//! The server host binds port 5900 on turmoil's network and runs [`spice_server::net::serve`]
//! with fake keyboard, mouse and tablet logging into one [`EventLog`]; after every step of its
//! event loop it records what the invariants need (bytes queued per connection, connections
//! and sessions alive, audio queued). The server also has the fake sound card
//! ([`FakePlayback`] playing its seeded program, [`FakeRecord`] keeping what it gets). Each
//! client host links main, asks for client mouse mode, links inputs, display and playback
//! (flow-controlled, see [`crate::flow`]; with or without `OPUS` as its plan says) and, for
//! the one recording client, record; it sends its plan's inputs and faults, then leaves; the
//! world then runs until the network is quiet, and [`crate::invariants`] judges the run.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use spice_fake_devices::audio::{FakePlayback, FakeRecord};
use spice_fake_devices::input::{EventLog, FakeKeyboard, FakeMouse, FakeTablet};
use spice_proto::messages::display::DisplayInit;
use spice_proto::messages::main::MouseMode;
use spice_proto::messages::{
    ChannelType, DisplayClient, DisplayServer, InputsClient, MainClient, MainServer, Message,
};
use spice_server::link::Ticketing;
use spice_server::{Config, Server};

use crate::audio::{PlaybackLog, RecordLog, RecordSource};
use crate::client::{ClientError, Conn, LinkParams, Recorder};
use crate::flow::{Flow, FlowStream};
use crate::plan::{ClientPlan, HostileKind, Input};
use crate::Options;

pub const SERVER: &str = "server";
pub const PORT: u16 = 5900;
pub const PASSWORD: &str = "sim-secret";
/// The scene the QXL device plays.
pub const QXL_SCENE: &str = "qxl-desktop";

/// What the server host saw, sampled after every step of its event loop.
#[derive(Debug, Default, Clone)]
pub struct ServerStats {
    pub steps: u64,
    pub max_queued: usize,
    pub connections: usize,
    pub sessions: usize,
    /// The most audio frames the server's playback queues held after any step.
    pub max_playback_queued: usize,
    /// The server's audio counters at the end.
    pub audio: spice_server::channel::playback::AudioStats,
}

/// What one client did.
#[derive(Debug, Default, Clone)]
pub struct ClientReport {
    /// Inputs fully written to the inputs channel, in order.
    pub sent: Vec<Input>,
    /// Whether the client ended cleanly (it did not crash and its channels stayed up).
    pub clean: bool,
    /// Why it stopped early, if it did.
    pub error: Option<String>,
    /// Messages received on main after linking.
    pub main_messages: u64,
    /// Draws the display channel applied.
    pub draws: u64,
    /// Whether the client's screen equals the scene's settled frame when it left; None if it
    /// did not see the whole run (left before the scene settled, or had no display).
    pub screen_matches: Option<bool>,
    /// Why the screen could not be compared or differs.
    pub screen_note: Option<String>,
    /// The client left and came back as a new session (its plan's reconnect).
    pub reconnected: bool,
}

/// The result of one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub options: Options,
    pub hash: u64,
    pub violations: Vec<String>,
    pub sim_ms: u64,
    pub bytes: u64,
    pub events: usize,
    pub stats: ServerStats,
    pub reports: Vec<ClientReport>,
    /// Every byte each way, with simulated times (for `--pcap`).
    pub chunks: Vec<crate::client::Chunk>,
    /// What each playback connection received, and what each record connection sent.
    pub playback: Vec<PlaybackLog>,
    pub record: Vec<RecordLog>,
    /// Frames the fake sound card played (handed to the server) and the frames its record
    /// side received.
    pub generated_frames: usize,
    pub recorded_frames: usize,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The fake screen behind a device that, during its stall windows, reports no change and does
/// not advance; afterwards it catches up at once.
struct StallingScreen {
    inner: spice_fake_devices::screen::FakeScreen,
    stalls: Vec<(u64, u64)>,
    /// Set while stalled: when the device will service the server again.
    resume_at: Option<u64>,
}

impl StallingScreen {
    fn stalled_until(&self, t: u64) -> Option<u64> {
        self.stalls
            .iter()
            .find(|(at, len)| t >= *at && t < at + len)
            .map(|(at, len)| at + len)
    }
}

impl spice_server::vdi::Framebuffer for StallingScreen {
    fn size(&self) -> (u32, u32) {
        self.inner.size()
    }
    fn update(&mut self, now_ms: u64) -> Vec<spice_proto::types::Rect> {
        if let Some(end) = self.stalled_until(now_ms) {
            self.resume_at = Some(end);
            return Vec::new();
        }
        self.resume_at = None;
        self.inner.update(now_ms)
    }
    fn pixels(&self) -> &[u8] {
        self.inner.pixels()
    }
    fn next_wakeup(&self) -> Option<u64> {
        if let Some(r) = self.resume_at {
            return Some(r);
        }
        let t = self.inner.next_wakeup()?;
        Some(self.stalled_until(t).unwrap_or(t))
    }
}

/// The fake QXL device behind a device that, during its stall windows, does not service its
/// rings: the guest keeps drawing until the command ring is full, then waits; afterwards the
/// server drains the ring.
struct StallingQxl {
    inner: spice_fake_devices::qxl::FakeQxl,
    stalls: Vec<(u64, u64)>,
    now: u64,
}

impl StallingQxl {
    fn stalled_until(&self, t: u64) -> Option<u64> {
        self.stalls
            .iter()
            .find(|(at, len)| t >= *at && t < at + len)
            .map(|(at, len)| at + len)
    }
}

impl spice_server::vdi::QxlDevice for StallingQxl {
    fn init_info(&self) -> spice_server::vdi::QxlInitInfo {
        self.inner.init_info()
    }
    fn memory(&self) -> &dyn spice_server::vdi::GuestMemory {
        self.inner.memory()
    }
    fn run(&mut self, now_ms: u64) -> Vec<spice_server::vdi::QxlEvent> {
        self.now = now_ms;
        self.inner.run(now_ms)
    }
    fn get_command(&mut self) -> Option<spice_server::vdi::QxlCommandExt> {
        if self.stalled_until(self.now).is_some() {
            return None;
        }
        self.inner.get_command()
    }
    fn get_cursor_command(&mut self) -> Option<spice_server::vdi::QxlCommandExt> {
        if self.stalled_until(self.now).is_some() {
            return None;
        }
        self.inner.get_cursor_command()
    }
    fn release(&mut self, id: u64, group_id: u32) {
        self.inner.release(id, group_id)
    }
    fn client_monitors_config(&mut self, m: &[spice_server::vdi::ClientMonitor]) -> bool {
        self.inner.client_monitors_config(m)
    }
    fn next_wakeup(&self) -> Option<u64> {
        if let Some(end) = self.stalled_until(self.now) {
            return Some(end);
        }
        let t = self.inner.next_wakeup()?;
        Some(self.stalled_until(t).unwrap_or(t))
    }
}

struct TurmoilListener(turmoil::net::TcpListener, Flow);

impl spice_server::net::Listener for TurmoilListener {
    type Stream = FlowStream;
    async fn accept(&mut self) -> std::io::Result<FlowStream> {
        Ok(FlowStream::new(self.0.accept().await?.0, self.1.clone()))
    }
}

/// The sound card's two sides, kept by the world to judge the run (the server owns clones).
#[derive(Default)]
struct Card {
    playback: Option<FakePlayback>,
    record: Option<FakeRecord>,
}

/// Every audio connection's log, in the order they were made.
#[derive(Default)]
pub struct AudioLogs {
    pub playback: Vec<Rc<RefCell<PlaybackLog>>>,
    pub record: Vec<Rc<RefCell<RecordLog>>>,
}

fn client_name(k: u32) -> String {
    format!("client{k}")
}

/// Run one world to the end and judge it.
pub fn run(opts: &Options) -> Outcome {
    crate::invariants::install_panic_hook();
    crate::invariants::take_panics();
    let plans = crate::plan::generate(opts);
    let mut world_rng = ChaCha20Rng::seed_from_u64(opts.seed);
    let mut b = turmoil::Builder::new();
    b.simulation_duration(Duration::from_secs(opts.duration_s + 300))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_millis(0))
        .max_message_latency(Duration::from_millis(1))
        // A stalled playback reader leaves up to a flow window of small segments (Opus
        // packets) in its socket: more than turmoil's default of 64.
        .tcp_capacity(1 << 14);
    let turmoil_rng = ChaCha20Rng::seed_from_u64(world_rng.next_u64());
    let mut sim = b.build_with_rng(Box::new(turmoil_rng));

    let log = EventLog::new();
    let stats = Rc::new(RefCell::new(ServerStats::default()));
    let rec = Rc::new(RefCell::new(Recorder::default()));
    let cfg = Config {
        ticketing: Ticketing::Password {
            password: PASSWORD.into(),
            expires_at_ms: None,
        },
        name: Some("sim".into()),
        uuid: Some([7; 16]),
        seed: Some(world_rng.next_u64()),
        output_cap: opts.output_cap,
        fresh_key_per_link: false,
        breakage: opts.breakage,
        ..Config::default()
    };
    let screen_size = opts.screen;
    // The display device stops servicing the server for these (start, length) windows.
    let device_stalls: Vec<(u64, u64)> = if opts.faults.device {
        let n = 1 + world_rng.next_u64() % 2;
        (0..n)
            .map(|_| {
                (
                    world_rng.next_u64() % (opts.duration_s * 1000).max(1),
                    200 + world_rng.next_u64() % 2800,
                )
            })
            .collect()
    } else {
        Vec::new()
    };
    // The QXL device's audit outlives the server host (which owns the device).
    let audit: Rc<RefCell<Option<Rc<RefCell<spice_fake_devices::qxl::Audit>>>>> =
        Rc::new(RefCell::new(None));
    let device = opts.device;
    let flow = Flow::default();
    let card: Rc<RefCell<Card>> = Rc::new(RefCell::new(Card::default()));
    let audio_logs: Rc<RefCell<AudioLogs>> = Rc::new(RefCell::new(AudioLogs::default()));
    // The sound card's program comes from the seed, apart from the other draws.
    let card_seed = opts.seed ^ 0x50_1a7b_ac4d;
    {
        let flow = flow.clone();
        let card = card.clone();
        let log = log.clone();
        let stats = stats.clone();
        let device_stalls = device_stalls.clone();
        let audit = audit.clone();
        sim.host(SERVER, move || {
            let audit = audit.clone();
            let log = log.clone();
            let stats = stats.clone();
            let cfg = cfg.clone();
            let device_stalls = device_stalls.clone();
            let flow = flow.clone();
            let card = card.clone();
            async move {
                let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
                let mut server = Server::new(cfg);
                server.set_link_key(spice_server::testing::fixed_key());
                let (w, h) = screen_size;
                match device {
                    crate::Device::Qxl => {
                        if let Some(q) = spice_fake_devices::qxl::FakeQxl::new(QXL_SCENE, w, h) {
                            // A restarted host (none today) would get a fresh device and audit.
                            *audit.borrow_mut() = Some(q.audit());
                            server.display().set_qxl(Box::new(StallingQxl {
                                inner: q,
                                stalls: device_stalls.clone(),
                                now: 0,
                            }));
                        }
                    }
                    crate::Device::Framebuffer => {
                        if let Some(fb) =
                            spice_fake_devices::screen::FakeScreen::new("desktop", w, h)
                        {
                            server.display().set_framebuffer(Box::new(StallingScreen {
                                inner: fb,
                                stalls: device_stalls.clone(),
                                resume_at: None,
                            }));
                        }
                    }
                }
                server.set_keyboard(Box::new(FakeKeyboard::new(log.clone())));
                server.set_mouse(Box::new(FakeMouse::new(log.clone())));
                server.set_tablet(Box::new(FakeTablet::new(log.clone())));
                let playback = FakePlayback::new(card_seed, log.clone());
                let record = FakeRecord::new(log.clone());
                server.set_playback_device(Box::new(playback.clone()));
                server.set_record_device(Box::new(record.clone()));
                *card.borrow_mut() = Card {
                    playback: Some(playback),
                    record: Some(record),
                };
                let start = tokio::time::Instant::now();
                spice_server::net::serve(
                    &mut server,
                    TurmoilListener(listener, flow),
                    std::future::pending(),
                    |s| {
                        log.set_now(start.elapsed().as_millis() as u64);
                        let mut st = stats.borrow_mut();
                        st.steps += 1;
                        st.max_queued = st.max_queued.max(s.max_queued_bytes());
                        st.connections = s.connection_count();
                        st.sessions = s.session_count();
                        st.max_playback_queued =
                            st.max_playback_queued.max(s.playback_queued_frames());
                        st.audio = s.audio_stats();
                    },
                )
                .await?;
                Ok(())
            }
        });
    }

    let reports: Vec<Rc<RefCell<ClientReport>>> = plans
        .iter()
        .map(|_| Rc::new(RefCell::new(ClientReport::default())))
        .collect();
    for (plan, report) in plans.iter().zip(&reports) {
        let plan = plan.clone();
        let report = report.clone();
        let rec = rec.clone();
        let seed = world_rng.next_u64();
        let audio = (flow.clone(), audio_logs.clone());
        sim.client(client_name(plan.index), async move {
            let mut rng = ChaCha20Rng::seed_from_u64(seed);
            tokio::time::sleep(Duration::from_millis(plan.start_ms)).await;
            // A client gives up if its whole plan has not finished long after it should have
            // (a held or partitioned link can leave it waiting for bytes that never come).
            let limit = Duration::from_millis(plan.end_ms) + Duration::from_secs(60);
            let r = match tokio::time::timeout(
                limit,
                run_client(&plan, &mut rng, rec, &report, (screen_size, device), &audio),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(ClientError::Protocol("gave up: no progress".into())),
            };
            match r {
                Ok(()) => report.borrow_mut().clean = plan.crash.is_none(),
                Err(e) => report.borrow_mut().error = Some(e.to_string()),
            }
            // Linger so the server sees the close before the world ends.
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok(())
        });
    }

    // Network faults are applied between steps, at the times the plans say.
    let mut schedule: Vec<(u64, Fault)> = Vec::new();
    for p in &plans {
        if let Some((lo, hi)) = p.latency {
            sim.set_link_latency(SERVER, client_name(p.index), Duration::from_millis(lo));
            sim.set_link_max_message_latency(
                SERVER,
                client_name(p.index),
                Duration::from_millis(hi),
            );
        }
        if let Some((at, len)) = p.hold {
            schedule.push((p.start_ms + at, Fault::Hold(p.index)));
            schedule.push((p.start_ms + at + len, Fault::Release(p.index)));
        }
        if let Some((at, len)) = p.partition {
            schedule.push((p.start_ms + at, Fault::Partition(p.index)));
            schedule.push((p.start_ms + at + len, Fault::Repair(p.index)));
        }
    }
    schedule.sort_by_key(|(t, f)| (*t, f.order()));
    let mut next = 0;
    let mut error = None;
    loop {
        let now = sim.elapsed().as_millis() as u64;
        while next < schedule.len() && schedule[next].0 <= now {
            let c = |k: u32| client_name(k);
            match schedule[next].1 {
                Fault::Hold(k) => sim.hold(SERVER, c(k)),
                Fault::Release(k) => sim.release(SERVER, c(k)),
                Fault::Partition(k) => sim.partition(SERVER, c(k)),
                Fault::Repair(k) => sim.repair(SERVER, c(k)),
            }
            next += 1;
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step())) {
            Ok(Ok(true)) => break,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                error = Some(format!("simulation error: {e}"));
                break;
            }
            Err(_) => {
                error = Some("the simulation panicked".to_string());
                break;
            }
        }
    }
    // Let the server finish closing what the clients left: a connection whose close was lost
    // in a partition is found dead by its missed pongs (PONG_TIMEOUT_MS after the next ping).
    let drain_steps = (spice_server::channel::core::PING_INTERVAL_MS
        + spice_server::channel::core::PONG_TIMEOUT_MS
        + spice_server::server::LINK_TIMEOUT_MS
        + 5_000) as usize;
    for _ in 0..drain_steps {
        if stats.borrow().connections == 0 {
            break;
        }
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| sim.step())).is_err() {
            error = Some("the simulation panicked while draining".to_string());
            break;
        }
    }
    let sim_ms = sim.elapsed().as_millis() as u64;
    drop(sim);

    let reports: Vec<ClientReport> = reports.iter().map(|r| r.borrow().clone()).collect();
    let stats = stats.borrow().clone();
    let rec = rec.borrow();
    let mut violations = crate::invariants::check(opts, &plans, &reports, &log.records(), &stats);
    let card = card.borrow();
    let generated = card
        .playback
        .as_ref()
        .map(FakePlayback::generated)
        .unwrap_or_default();
    let received = card
        .record
        .as_ref()
        .map(FakeRecord::received)
        .unwrap_or_default();
    let logs = audio_logs.borrow();
    let playback: Vec<PlaybackLog> = logs.playback.iter().map(|l| l.borrow().clone()).collect();
    let record: Vec<RecordLog> = logs.record.iter().map(|l| l.borrow().clone()).collect();
    violations.extend(crate::invariants::check_audio(
        &crate::invariants::AudioRun {
            opts,
            plans: &plans,
            playback: &playback,
            record: &record,
            generated: &generated,
            received: &received,
            stats: &stats,
        },
    ));
    if let Some(a) = audit.borrow().as_ref() {
        violations.extend(crate::invariants::check_releases(&a.borrow()));
        violations.extend(crate::invariants::check_resizes(
            opts,
            &plans,
            &reports,
            &a.borrow(),
        ));
    }
    if let Some(e) = error {
        violations.insert(0, e);
    }
    for p in crate::invariants::take_panics() {
        violations.insert(0, format!("panic: {p}"));
    }
    Outcome {
        options: opts.clone(),
        hash: rec.hash(),
        violations,
        sim_ms,
        bytes: rec.total_bytes(),
        events: log.len(),
        stats,
        reports,
        chunks: if opts.keep_traffic {
            rec.chunks.clone()
        } else {
            Vec::new()
        },
        generated_frames: generated.len(),
        recorded_frames: received.len(),
        playback,
        record,
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    Hold(u32),
    Release(u32),
    Partition(u32),
    Repair(u32),
}

impl Fault {
    fn order(&self) -> u8 {
        match self {
            Fault::Release(_) | Fault::Repair(_) => 0,
            Fault::Hold(_) | Fault::Partition(_) => 1,
        }
    }
}

/// A client's linked session: its inputs connection, and the tasks reading main and display.
struct Live {
    inputs: Conn,
    main_task: tokio::task::JoinHandle<Conn>,
    main_tx: tokio::sync::oneshot::Sender<()>,
    /// Agent data to send on main.
    main_out: tokio::sync::mpsc::UnboundedSender<Vec<u8>>,
    display_task: tokio::task::JoinHandle<()>,
    display_tx: tokio::sync::oneshot::Sender<()>,
    screen: Rc<RefCell<crate::screen::Screen>>,
    /// The sound channels' tasks (playback always, record if the plan says) and their stops.
    audio_tasks: Vec<(
        tokio::task::JoinHandle<()>,
        tokio::sync::oneshot::Sender<()>,
    )>,
}

impl Live {
    /// Vanish: every connection dropped where it is.
    fn crash(self) {
        self.main_task.abort();
        self.display_task.abort();
        for (t, _) in &self.audio_tasks {
            t.abort();
        }
    }

    /// Leave in an orderly way.
    async fn close(self) {
        // Record first, and a moment for its last data to arrive (latency and jitter reorder
        // connections, and main closing ends the session), then playback.
        let records = self.audio_tasks.len() > 1;
        for (t, tx) in self.audio_tasks {
            let _ = tx.send(());
            let _ = t.await;
            if records {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        let _ = self.display_tx.send(());
        let _ = self.display_task.await;
        let _ = self.main_tx.send(());
        let _ = self.main_task.await;
        drop(self.inputs);
    }
}

/// Link main, ask for client mouse mode, link inputs and display; `conn_base` numbers the
/// connections in the recorder (a reconnect uses new numbers).
async fn connect_session(
    plan: &ClientPlan,
    rng: &mut ChaCha20Rng,
    rec: &Rc<RefCell<Recorder>>,
    report: &Rc<RefCell<ClientReport>>,
    conn_base: u32,
    audio: &(Flow, Rc<RefCell<AudioLogs>>),
) -> Result<Live, ClientError> {
    let k = plan.index;
    let params = |channel, connection_id| LinkParams {
        server: SERVER,
        port: PORT,
        channel,
        channel_id: 0,
        connection_id,
        password: PASSWORD,
        extra_caps: &[],
        flow: None,
    };
    let mut main = Conn::link(params(ChannelType::Main, 0), k, conn_base, rng, rec.clone()).await?;
    // init, then the rest of what main sends at start.
    let init = loop {
        let m = main.recv().await?;
        report.borrow_mut().main_messages += 1;
        if let Ok(MainServer::Init(init)) = MainServer::decode(m.header.msg_type, &m.body) {
            break init;
        }
    };
    main.send(&MainClient::AttachChannels).await?;
    main.send(&MainClient::MouseModeRequest(MouseMode::CLIENT))
        .await?;
    // Wait until client mode is on (init may already say so).
    let mut client_mode = init.current_mouse_mode == u32::from(MouseMode::CLIENT.bits());
    while !client_mode {
        let m = main.recv().await?;
        report.borrow_mut().main_messages += 1;
        if let Ok(MainServer::MouseMode(mm)) = MainServer::decode(m.header.msg_type, &m.body) {
            client_mode = mm.current_mode == MouseMode::CLIENT;
        }
    }
    let inputs = Conn::link(
        params(ChannelType::Inputs, init.session_id),
        k,
        conn_base + 1,
        rng,
        rec.clone(),
    )
    .await?;
    // The display: init, then every message applied to the client's screen in the background.
    let mut display = Conn::link(
        params(ChannelType::Display, init.session_id),
        k,
        conn_base + 2,
        rng,
        rec.clone(),
    )
    .await?;
    display
        .send(&DisplayClient::Init(DisplayInit {
            pixmap_cache_id: 1,
            pixmap_cache_size: 20 << 20,
            glz_dictionary_id: 1,
            glz_dictionary_window_size: 1 << 22,
        }))
        .await?;
    let screen = Rc::new(RefCell::new(crate::screen::Screen::default()));
    let (display_tx, mut display_stop) = tokio::sync::oneshot::channel::<()>();
    let display_screen = screen.clone();
    let display_task = tokio::task::spawn_local(async move {
        loop {
            tokio::select! {
            biased;
                _ = &mut display_stop => return,
                r = display.recv() => {
                    let Ok(m) = r else { return };
                    match DisplayServer::decode(m.header.msg_type, &m.body) {
                        Ok(msg) => display_screen.borrow_mut().apply(&msg),
                        Err(e) => {
                            let mut s = display_screen.borrow_mut();
                            s.unsupported.push(format!("undecodable display message: {e}"));
                        }
                    }
                }
            }
        }
    });
    // Keep main read in the background, as a real client does (or stall it, per the plan).
    let main_report = report.clone();
    let stall = plan.stall;
    let (main_tx, mut main_stop) = tokio::sync::oneshot::channel::<()>();
    // Agent data the client sends on main (resize requests). Turmoil's writes complete at
    // once, so a `recv` the select drops is only ever dropped while reading (cancel-safe).
    let (main_out, mut main_out_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
    let main_task = tokio::task::spawn_local(async move {
        let mut n = 0usize;
        loop {
            tokio::select! {
            biased;
                // What the client queued is written before it stops.
                Some(body) = main_out_rx.recv() => {
                    let m = MainClient::AgentData(spice_proto::wire::Bytes(body));
                    if main.send(&m).await.is_err() {
                        return main;
                    }
                }
                _ = &mut main_stop => return main,
                r = main.recv() => {
                    if r.is_err() {
                        return main;
                    }
                    main_report.borrow_mut().main_messages += 1;
                    n += 1;
                    if let Some((_, ms)) = stall {
                        if n == 3 {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                    }
                }
            }
        }
    });
    let audio_tasks = link_audio(plan, rng, rec, conn_base, init.session_id, audio).await?;
    Ok(Live {
        inputs,
        main_task,
        main_tx,
        main_out,
        display_task,
        display_tx,
        screen,
        audio_tasks,
    })
}

type AudioTask = (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Sender<()>,
);

/// Link the sound channels: record (if the plan says) and playback (always, flow-controlled),
/// each read or fed by its own task.
async fn link_audio(
    plan: &ClientPlan,
    rng: &mut ChaCha20Rng,
    rec: &Rc<RefCell<Recorder>>,
    conn_base: u32,
    session_id: u32,
    (flow, logs): &(Flow, Rc<RefCell<AudioLogs>>),
) -> Result<Vec<AudioTask>, ClientError> {
    let k = plan.index;
    let a = &plan.audio;
    let mut tasks = Vec::new();
    if a.records {
        let caps = crate::audio::record_caps(a.opus_record);
        let conn = Conn::link(
            LinkParams {
                server: SERVER,
                port: PORT,
                channel: ChannelType::Record,
                channel_id: 0,
                connection_id: session_id,
                password: PASSWORD,
                extra_caps: &caps,
                flow: None,
            },
            k,
            conn_base + 4,
            rng,
            rec.clone(),
        )
        .await?;
        let log = Rc::new(RefCell::new(RecordLog {
            client: k,
            conn: conn_base + 4,
            opus_offered: a.opus_record,
            ..RecordLog::default()
        }));
        logs.borrow_mut().record.push(log.clone());
        // A reconnected client's source goes on where it was: its frames stay unique.
        let source = RecordSource::new(a.record_seed.wrapping_add(u64::from(conn_base) << 24));
        let (tx, stop) = tokio::sync::oneshot::channel();
        let t = tokio::task::spawn_local(crate::audio::record_sender(conn, log, source, stop));
        tasks.push((t, tx));
    }
    let caps = crate::audio::playback_caps(a.opus_playback);
    let conn = Conn::link(
        LinkParams {
            server: SERVER,
            port: PORT,
            channel: ChannelType::Playback,
            channel_id: 0,
            connection_id: session_id,
            password: PASSWORD,
            extra_caps: &caps,
            flow: Some(flow.clone()),
        },
        k,
        conn_base + 3,
        rng,
        rec.clone(),
    )
    .await?;
    let log = Rc::new(RefCell::new(PlaybackLog {
        client: k,
        conn: conn_base + 3,
        opus_offered: a.opus_playback,
        ..PlaybackLog::default()
    }));
    logs.borrow_mut().playback.push(log.clone());
    let (tx, stop) = tokio::sync::oneshot::channel();
    let t = tokio::task::spawn_local(crate::audio::playback_reader(
        conn,
        log,
        a.playback_stall,
        stop,
    ));
    tasks.push((t, tx));
    Ok(tasks)
}

/// One client's life: connect, send the plan's inputs (reconnecting once if the plan says so),
/// then stay until the end of the run and leave.
async fn run_client(
    plan: &ClientPlan,
    rng: &mut ChaCha20Rng,
    rec: Rc<RefCell<Recorder>>,
    report: &Rc<RefCell<ClientReport>>,
    screen: ((u32, u32), crate::Device),
    audio: &(Flow, Rc<RefCell<AudioLogs>>),
) -> Result<(), ClientError> {
    let crash_mid_link = plan.crash == Some((0, true));
    if crash_mid_link {
        // Vanish in the middle of the link stage: half a link message, then gone.
        let mut s = turmoil::net::TcpStream::connect((SERVER, PORT)).await?;
        use tokio::io::AsyncWriteExt;
        s.write_all(b"REDQ\x02\x00\x00\x00").await?;
        return Ok(());
    }
    let mut live = connect_session(plan, rng, &rec, report, 0, audio).await?;
    let mut result = Ok(());
    for (i, (delay, input)) in plan.inputs.iter().enumerate() {
        if let Some((at, mid)) = plan.crash {
            if at == i {
                if mid {
                    // Half a key_down message (mini header claims 4 bytes, 2 arrive).
                    let _ = live.inputs.write_raw(&[101, 0, 4, 0, 0, 0, 0x10]).await;
                }
                live.crash();
                return Ok(());
            }
        }
        if plan.reconnect == Some(i) {
            // Let what was sent arrive, leave, and come back as a new session.
            tokio::time::sleep(Duration::from_millis(500)).await;
            live.close().await;
            live = connect_session(plan, rng, &rec, report, 5, audio).await?;
            report.borrow_mut().reconnected = true;
        }
        if let Some((at, target, bytes)) = &plan.hostile {
            if *at == i {
                let _ = send_hostile(*target, bytes, &mut live.inputs).await;
                // The server closes this inputs channel (or waits forever for the rest of a
                // message that never comes): nothing more goes through it.
                result = Err(ClientError::Protocol("sent hostile bytes on inputs".into()));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(*delay)).await;
        let inputs = &mut live.inputs;
        let r = match *input {
            Input::Key(sc) => {
                let r = inputs.send(&InputsClient::KeyDown(u32::from(sc))).await;
                match r {
                    Ok(()) => {
                        inputs
                            .send(&InputsClient::KeyUp(u32::from(sc | 0x80)))
                            .await
                    }
                    e => e,
                }
            }
            Input::Resize { width, height } => {
                use spice_proto::agent::{
                    AgentBody, MonConfig, Monitors, MonitorsConfig, MonitorsConfigFlags,
                    VdAgentMessage,
                };
                let body = AgentBody::MonitorsConfig(MonitorsConfig {
                    flags: MonitorsConfigFlags::EMPTY,
                    monitors: Monitors::Plain(vec![MonConfig {
                        height,
                        width,
                        depth: 32,
                        x: 0,
                        y: 0,
                    }]),
                });
                let mut r = Ok(());
                for chunk in VdAgentMessage::from_body(&body).to_agent_data() {
                    if live.main_out.send(chunk).is_err() {
                        r = Err(ClientError::Protocol("main channel gone".into()));
                    }
                }
                r
            }
            Input::Click { button } => {
                use spice_proto::messages::inputs::{
                    MouseButton, MouseButtonEvent, MouseButtonMask,
                };
                let mask = MouseButtonMask(1 << (button - 1));
                let ev = |state| MouseButtonEvent {
                    button: MouseButton::from_raw(button),
                    buttons_state: state,
                };
                match inputs.send(&InputsClient::MousePress(ev(mask))).await {
                    Ok(()) => {
                        inputs
                            .send(&InputsClient::MouseRelease(ev(MouseButtonMask(0))))
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
            Input::Position { x, y } => {
                inputs
                    .send(&InputsClient::MousePosition(
                        spice_proto::messages::inputs::MousePosition {
                            x,
                            y,
                            buttons_state: Default::default(),
                            display_id: 0,
                        },
                    ))
                    .await
            }
        };
        if let Err(e) = r {
            result = Err(e);
            break;
        }
        report.borrow_mut().sent.push(*input);
    }
    // Stay until the end of the run (at least a second after the last input, so the last
    // inputs and frames arrive), then leave in an orderly way.
    let now_ms = crate::client::now_us() / 1000;
    let stay = plan.end_ms.saturating_sub(now_ms).max(1000);
    tokio::time::sleep(Duration::from_millis(stay)).await;
    judge_screen(&live.screen.borrow(), report, screen);
    live.close().await;
    result
}

/// Record whether the client's screen is the scene's settled frame.
fn judge_screen(
    s: &crate::screen::Screen,
    report: &Rc<RefCell<ClientReport>>,
    screen: ((u32, u32), crate::Device),
) {
    let mut rep = report.borrow_mut();
    rep.draws = s.draws;
    let settled = spice_fake_devices::screen::SETTLE_MS;
    if !s.unsupported.is_empty() {
        rep.screen_note = Some(format!("unsupported: {:?}", s.unsupported));
        rep.screen_matches = Some(false);
    } else if crate::client::now_us() / 1000 >= settled + 500 {
        let ((w, h), device) = screen;
        let want = match device {
            crate::Device::Qxl => {
                spice_fake_devices::qxl::FakeQxl::rgba_at(QXL_SCENE, w, h, settled)
            }
            crate::Device::Framebuffer => {
                spice_fake_devices::screen::FakeScreen::rgba_at("desktop", w, h, settled)
            }
        };
        let got = s.rgba();
        let ok = want.as_deref() == Some(&got[..]);
        if !ok {
            let differing = want.as_ref().map_or(0, |w| {
                w.chunks(4)
                    .zip(got.chunks(4))
                    .filter(|(a, b)| a != b)
                    .count()
            });
            rep.screen_note = Some(format!(
                "{differing} pixels differ ({}x{} surface, {} draws)",
                s.width, s.height, s.draws
            ));
        }
        rep.screen_matches = Some(ok);
    }
}

/// Send hostile bytes on the inputs connection.
async fn send_hostile(
    kind: HostileKind,
    bytes: &[u8],
    inputs: &mut Conn,
) -> Result<(), ClientError> {
    match kind {
        HostileKind::Garbage => inputs.write_raw(bytes).await,
        HostileKind::Arbitrary => {
            let mut u = arbitrary::Unstructured::new(bytes);
            // At most 16 messages (arbitrary may consume nothing once the bytes run out).
            for _ in 0..16 {
                if u.is_empty() {
                    break;
                }
                let Ok(m) = <InputsClient as arbitrary::Arbitrary>::arbitrary(&mut u) else {
                    break;
                };
                let m = match m {
                    InputsClient::KeyDown(c) | InputsClient::KeyUp(c) => {
                        InputsClient::KeyModifiers(
                            spice_proto::messages::inputs::KeyboardModifiers(c as u16),
                        )
                    }
                    InputsClient::KeyScancode(_)
                    | InputsClient::MousePosition(_)
                    | InputsClient::MousePress(_) => InputsClient::KeyModifiers(Default::default()),
                    InputsClient::Base(_) => continue,
                    m => m,
                };
                inputs.send(&m).await?;
            }
            Ok(())
        }
        HostileKind::UnknownType => {
            let mut out = Vec::new();
            spice_proto::header::frame(
                spice_proto::header::HeaderKind::Mini,
                0,
                9000 + u16::from(bytes.first().copied().unwrap_or(0)),
                bytes,
                &mut out,
            );
            inputs.write_raw(&out).await
        }
    }
}
