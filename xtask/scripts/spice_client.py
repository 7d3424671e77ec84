#!/usr/bin/python3
"""A scripted real SPICE client (spice-gtk's SpiceClientGLib) for `cargo xtask capture`.

Usage: /usr/bin/python3 spice_client.py PLAN.json

PLAN is a JSON object:
  uri            "spice://127.0.0.1:PORT"
  password       ticket to send, or null
  preferred_compression  SpiceImageCompression number to ask the display channel for (7 = LZ4), or null
  mouse_mode     "server" or "client": mouse mode to request once the main channel is up, or null
  sessions       list of sessions run one after the other (more than one = disconnect and
                 reconnect); each is {"settle": seconds to wait for the screen before the steps,
                 "steps": [...], "linger": seconds to stay connected after the steps}
  screenshot     path of a PPM file to write the last session's primary surface to, or null
  timeout        overall limit in seconds

Steps (each waits "delay" seconds first, default 0.05):
  {"wait": s}
  {"key": scancode}                      press and release (PC AT set 1 scancode, 0xe0xx extended)
  {"key_press": sc} / {"key_release": sc}
  {"text": "abc"}                        typed with a US layout, shift for capitals and symbols
  {"motion": [dx, dy]}                   relative motion (server mouse mode)
  {"position": [x, y]}                   absolute position (client mouse mode)
  {"button_press": b} / {"button_release": b}   1 left, 2 middle, 3 right, 4 wheel up, 5 wheel down
  {"click": b}                           press and release
  {"wheel": "up" | "down"}               one wheel notch (button 4/5 press and release)

Prints one JSON object on stdout at the end: channels opened, mouse mode, playback events,
primary surface size and whether the screenshot was written. Exits non-zero on failure.
"""
import ctypes
import json
import sys

import gi

gi.require_version("SpiceClientGLib", "2.0")
from gi.repository import GLib, GObject, SpiceClientGLib  # noqa: E402

# PC AT set 1 scancodes of a US keyboard.
_ROWS = {
    0x02: "1!", 0x03: "2@", 0x04: "3#", 0x05: "4$", 0x06: "5%", 0x07: "6^", 0x08: "7&",
    0x09: "8*", 0x0A: "9(", 0x0B: "0)", 0x0C: "-_", 0x0D: "=+",
    0x10: "qQ", 0x11: "wW", 0x12: "eE", 0x13: "rR", 0x14: "tT", 0x15: "yY", 0x16: "uU",
    0x17: "iI", 0x18: "oO", 0x19: "pP", 0x1A: "[{", 0x1B: "]}",
    0x1E: "aA", 0x1F: "sS", 0x20: "dD", 0x21: "fF", 0x22: "gG", 0x23: "hH", 0x24: "jJ",
    0x25: "kK", 0x26: "lL", 0x27: ";:", 0x28: "'\"", 0x29: "`~", 0x2B: "\\|",
    0x2C: "zZ", 0x2D: "xX", 0x2E: "cC", 0x2F: "vV", 0x30: "bB", 0x31: "nN", 0x32: "mM",
    0x33: ",<", 0x34: ".>", 0x35: "/?", 0x39: "  ",
}
KEYMAP = {}
for _sc, _chars in _ROWS.items():
    KEYMAP.setdefault(_chars[0], (_sc, False))
    KEYMAP.setdefault(_chars[1], (_sc, True))
KEYMAP["\n"] = (0x1C, False)
SHIFT = 0x2A

BUTTON_MASK = {1: 1, 2: 2, 3: 4}

CHANNEL_NAMES = {
    SpiceClientGLib.MainChannel: "main",
    SpiceClientGLib.DisplayChannel: "display",
    SpiceClientGLib.InputsChannel: "inputs",
    SpiceClientGLib.CursorChannel: "cursor",
    SpiceClientGLib.PlaybackChannel: "playback",
    SpiceClientGLib.RecordChannel: "record",
    SpiceClientGLib.UsbredirChannel: "usbredir",
    SpiceClientGLib.PortChannel: "port",
    SpiceClientGLib.WebdavChannel: "webdav",
}


def log(msg):
    print(f"spice_client: {msg}", file=sys.stderr, flush=True)


class Client:
    def __init__(self, plan):
        self.plan = plan
        self.loop = GLib.MainLoop()
        self.report = {"sessions": [], "errors": []}
        self.session = None
        self.inputs = None
        self.display = None
        self.primary = None
        self.buttons = 0
        self.cur = None
        self.failed = False

    # --- session lifecycle ------------------------------------------------------------------
    def start_session(self, idx):
        self.inputs = None
        self.display = None
        self.primary = None
        self.buttons = 0
        self.cur = {"channels": [], "mouse_modes": [], "playback": {}, "primary": None,
                    "cursor": {"set": 0, "move": 0, "hide": 0}}
        self.report["sessions"].append(self.cur)
        s = SpiceClientGLib.Session()
        s.props.uri = self.plan["uri"]
        if self.plan.get("password"):
            s.props.password = self.plan["password"]
        GObject.GObject.connect(s, "channel-new", self.on_channel_new)
        self.session = s
        spec = self.plan["sessions"][idx]
        log(f"session {idx}: connecting to {self.plan['uri']}")
        if not s.connect():
            self.fail("session connect failed")
            return False
        GLib.timeout_add(int(spec.get("settle", 2.0) * 1000), self.run_steps, idx)
        return False

    def on_channel_new(self, session, ch):
        name = next((n for t, n in CHANNEL_NAMES.items() if isinstance(ch, t)), type(ch).__name__)
        self.cur["channels"].append(name)
        log(f"channel {name} (id {ch.props.channel_id})")
        if isinstance(ch, SpiceClientGLib.MainChannel):
            GObject.GObject.connect(ch, "channel-event", self.on_main_event)
            GObject.GObject.connect(ch, "notify::mouse-mode", self.on_mouse_mode)
            return
        if isinstance(ch, SpiceClientGLib.DisplayChannel):
            self.display = ch
            GObject.GObject.connect(ch, "display-primary-create", self.on_primary)
            GObject.GObject.connect(ch, "channel-event", self.on_display_event)
        elif isinstance(ch, SpiceClientGLib.InputsChannel):
            self.inputs = ch
        elif isinstance(ch, SpiceClientGLib.CursorChannel):
            GObject.GObject.connect(ch, "cursor-set", lambda *a: self.count_cursor("set"))
            GObject.GObject.connect(ch, "cursor-move", lambda *a: self.count_cursor("move"))
            GObject.GObject.connect(ch, "cursor-hide", lambda *a: self.count_cursor("hide"))
        elif isinstance(ch, SpiceClientGLib.PlaybackChannel):
            GObject.GObject.connect(ch, "playback-start", self.on_playback_start)
            GObject.GObject.connect(ch, "playback-data", self.on_playback_data)
            GObject.GObject.connect(ch, "playback-stop", self.on_playback_stop)
        elif isinstance(ch, SpiceClientGLib.RecordChannel):
            GObject.GObject.connect(ch, "record-start", self.on_record_start)
        SpiceClientGLib.Channel.connect(ch)

    def on_main_event(self, ch, event):
        log(f"main channel event {event.value_nick}")
        if event == SpiceClientGLib.ChannelEvent.OPENED and self.plan.get("mouse_mode"):
            mode = {"server": 1, "client": 2}[self.plan["mouse_mode"]]
            log(f"requesting {self.plan['mouse_mode']} mouse mode")
            SpiceClientGLib.MainChannel.request_mouse_mode(ch, mode)
        if event in (SpiceClientGLib.ChannelEvent.ERROR_CONNECT,
                     SpiceClientGLib.ChannelEvent.ERROR_AUTH,
                     SpiceClientGLib.ChannelEvent.ERROR_LINK,
                     SpiceClientGLib.ChannelEvent.ERROR_IO,
                     SpiceClientGLib.ChannelEvent.ERROR_TLS):
            self.fail(f"main channel: {event.value_nick}")

    def on_display_event(self, ch, event):
        if event == SpiceClientGLib.ChannelEvent.OPENED:
            pc = self.plan.get("preferred_compression")
            if pc is not None:
                log(f"asking for preferred compression {pc}")
                # The typelib names spice_display_channel_change_preferred_compression oddly.
                fn = (getattr(SpiceClientGLib.DisplayChannel,
                              "display_channel_change_preferred_compression", None)
                      or SpiceClientGLib.DisplayChannel.display_change_preferred_compression)
                fn(ch, pc)
                self.cur["preferred_compression_sent"] = pc

    def on_mouse_mode(self, ch, _pspec):
        mode = ch.props.mouse_mode
        self.cur["mouse_modes"].append({1: "server", 2: "client"}.get(mode, mode))

    def on_primary(self, ch, fmt, width, height, stride, shmid, imgdata):
        self.primary = (fmt, width, height, stride, imgdata)
        self.cur["primary"] = [width, height]

    def count_cursor(self, what):
        self.cur["cursor"][what] += 1

    def on_playback_start(self, ch, fmt, channels, rate):
        self.cur["playback"]["start"] = {"format": fmt, "channels": channels, "rate": rate}

    def on_playback_data(self, ch, data, size):
        pb = self.cur["playback"]
        pb["data_messages"] = pb.get("data_messages", 0) + 1
        pb["bytes"] = pb.get("bytes", 0) + size

    def on_playback_stop(self, ch):
        self.cur["playback"]["stopped"] = True

    def on_record_start(self, ch, fmt, channels, rate):
        self.cur["record_start"] = {"format": fmt, "channels": channels, "rate": rate}

    # --- steps ------------------------------------------------------------------------------
    def run_steps(self, idx):
        steps = list(self.plan["sessions"][idx].get("steps", []))
        if steps and self.inputs is None:
            self.fail("no inputs channel")
            return False
        self.next_step(idx, steps)
        return False

    def next_step(self, idx, steps):
        if not steps:
            linger = self.plan["sessions"][idx].get("linger", 1.0)
            GLib.timeout_add(int(linger * 1000), self.end_session, idx)
            return
        step = steps.pop(0)
        delay = step.get("delay", 0.05)

        def go():
            try:
                self.do_step(step)
            except Exception as e:  # report and stop: a broken plan must not hang
                self.fail(f"step {step}: {e}")
                return False
            self.next_step(idx, steps)
            return False

        GLib.timeout_add(max(int(delay * 1000), 1), go)

    def key(self, sc, press=True, release=True):
        if press:
            SpiceClientGLib.InputsChannel.key_press(self.inputs, sc)
        if release:
            SpiceClientGLib.InputsChannel.key_release(self.inputs, sc)

    def do_step(self, st):
        i = self.inputs
        if "wait" in st:
            pass
        elif "key" in st:
            self.key(st["key"])
        elif "key_press" in st:
            self.key(st["key_press"], release=False)
        elif "key_release" in st:
            self.key(st["key_release"], press=False)
        elif "text" in st:
            for c in st["text"]:
                sc, shift = KEYMAP[c]
                if shift:
                    self.key(SHIFT, release=False)
                self.key(sc)
                if shift:
                    self.key(SHIFT, press=False)
        elif "motion" in st:
            dx, dy = st["motion"]
            SpiceClientGLib.InputsChannel.motion(i, dx, dy, self.buttons)
        elif "position" in st:
            x, y = st["position"]
            SpiceClientGLib.InputsChannel.position(i, x, y, 0, self.buttons)
        elif "button_press" in st:
            b = st["button_press"]
            self.buttons |= BUTTON_MASK.get(b, 0)
            SpiceClientGLib.InputsChannel.button_press(i, b, self.buttons)
        elif "button_release" in st:
            b = st["button_release"]
            self.buttons &= ~BUTTON_MASK.get(b, 0)
            SpiceClientGLib.InputsChannel.button_release(i, b, self.buttons)
        elif "click" in st:
            b = st["click"]
            SpiceClientGLib.InputsChannel.button_press(i, b, self.buttons | BUTTON_MASK.get(b, 0))
            SpiceClientGLib.InputsChannel.button_release(i, b, self.buttons)
        elif "wheel" in st:
            b = 4 if st["wheel"] == "up" else 5
            SpiceClientGLib.InputsChannel.button_press(i, b, self.buttons)
            SpiceClientGLib.InputsChannel.button_release(i, b, self.buttons)
        else:
            raise ValueError("unknown step")

    def end_session(self, idx):
        last = idx + 1 == len(self.plan["sessions"])
        if last and self.plan.get("screenshot"):
            self.write_screenshot(self.plan["screenshot"])
        log(f"session {idx}: disconnecting")
        self.session.disconnect()
        if last:
            GLib.timeout_add(500, self.loop.quit)
        else:
            GLib.timeout_add(int(self.plan.get("reconnect_after", 1.0) * 1000),
                             self.start_session, idx + 1)
        return False

    def write_screenshot(self, path):
        if self.primary is None:
            self.fail("no primary surface to screenshot")
            return
        fmt, w, h, stride, addr = self.primary
        if fmt != 32:  # SPICE_SURFACE_FMT_32_xRGB
            self.fail(f"unsupported surface format {fmt}")
            return
        raw = ctypes.string_at(addr, stride * h)
        out = bytearray()
        for y in range(h):
            row = raw[y * stride: y * stride + w * 4]
            px = bytearray(w * 3)
            px[0::3] = row[2::4]
            px[1::3] = row[1::4]
            px[2::3] = row[0::4]
            out += px
        with open(path, "wb") as f:
            f.write(b"P6\n%d %d\n255\n" % (w, h))
            f.write(out)
        self.report["screenshot"] = [w, h]
        log(f"wrote {path} ({w}x{h})")

    def fail(self, msg):
        log(f"error: {msg}")
        self.report["errors"].append(msg)
        self.failed = True
        if self.session is not None:
            self.session.disconnect()
        GLib.timeout_add(200, self.loop.quit)

    def run(self):
        GLib.idle_add(self.start_session, 0)
        GLib.timeout_add(int(self.plan.get("timeout", 60) * 1000), self.on_timeout)
        self.loop.run()
        print(json.dumps(self.report))
        return 1 if self.failed else 0

    def on_timeout(self):
        self.fail("timed out")
        return False


def main():
    with open(sys.argv[1]) as f:
        plan = json.load(f)
    return Client(plan).run()


if __name__ == "__main__":
    sys.exit(main())
