#!/usr/bin/python3
"""Draw a deterministic picture into an X window, for `cargo xtask capture`.

A window at a fixed place shows a colour gradient with a few bands (photo-like content that the
SPICE server compresses with QUIC/LZ/GLZ/JPEG as configured). With --fps it redraws a moving
version of the picture that many times a second (PutImage of a whole changing bitmap, like a
video player), which makes the SPICE server detect a video stream and send MJPEG stream
messages. With --frames the animation stops after that many frames and the last frame stays.

Needs Debian's python3-xlib; run with /usr/bin/python3 and DISPLAY set.
"""
import argparse
import sys
import time

from Xlib import X, display


def frame(w, h, t):
    """One 32-bit BGRX frame as bytes: a smooth gradient with moving diagonal bands."""
    out = bytearray(w * h * 4)
    i = 0
    for y in range(h):
        for x in range(w):
            band = ((x + y + 3 * t) // 12) % 4
            r = (x * 255) // max(w - 1, 1)
            g = (y * 255) // max(h - 1, 1)
            b = ((x + y + 5 * t) * 2) & 0xFF
            if band == 0:
                r, g, b = 255 - r, g, 255 - b
            elif band == 2:
                r, g, b = g, b, r
            out[i] = b
            out[i + 1] = g
            out[i + 2] = r
            out[i + 3] = 0
            i += 4
    return bytes(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--geometry", default="160x120+20+20", help="WxH+X+Y")
    ap.add_argument("--fps", type=float, default=0.0, help="animate at this rate (0: still)")
    ap.add_argument("--frames", type=int, default=0, help="stop animating after this many frames")
    ap.add_argument("--delay", type=float, default=0.0, help="seconds to show the still frame first")
    a = ap.parse_args()
    size, _, pos = a.geometry.partition("+")
    w, h = (int(v) for v in size.split("x"))
    x, y = (int(v) for v in pos.split("+"))

    d = display.Display()
    s = d.screen()
    win = s.root.create_window(x, y, w, h, 0, s.root_depth, X.InputOutput, X.CopyFromParent,
                               background_pixel=s.black_pixel, override_redirect=True,
                               event_mask=X.ExposureMask)
    gc = win.create_gc()
    win.map()
    d.sync()

    # Precompute a loop of frames so drawing keeps up with the rate in pure Python.
    nloop = 16 if a.fps > 0 else 1
    frames = [frame(w, h, t) for t in range(nloop)]

    def draw(t):
        win.put_image(gc, 0, 0, w, h, X.ZPixmap, s.root_depth, 0, frames[t % nloop])
        d.sync()

    draw(0)
    t = 0
    if a.fps > 0:
        time.sleep(a.delay)
        period = 1.0 / a.fps
        next_at = time.monotonic()
        while a.frames == 0 or t < a.frames:
            t += 1
            draw(t)
            next_at += period
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        print(f"pattern: drew {t} frames", file=sys.stderr)
    # Keep the window (and its last frame) until killed, redrawing on expose.
    while True:
        ev = d.next_event()
        if ev.type == X.Expose:
            draw(t)


if __name__ == "__main__":
    main()
