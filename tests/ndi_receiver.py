"""A second NDI peer for the tests and the benchmark: finds a source by name (through whatever
NDI_CONFIG_DIR says), receives its video for a while, and saves what came in.

    python tests/ndi_receiver.py NAME SECONDS OUT.npz [--block] [--frames K]

OUT.npz: `frames` [K, H, W, 3] uint8, `stamps` [K] (each frame's NDI timestamp: the wall time the
sender handed it over, POSIX seconds; `NdiSource.frame_at` names the frame), `times` [K]
(time.time() at arrival). With --block, `frames` is only the
mean of each frame's top-left 32x32 block [K] (the benchmark writes frame numbers there; long
1080p runs would not fit in memory). With --frames K it stops once K frames came in (a connection
takes a while on a busy machine: SECONDS is then only the limit). Prints "found" when connected (a test
may SIGSTOP it after that to stall it), "found-timeout" and exits 2 when the source never showed.
"""

import sys
import time

import numpy as np
from cyndilib import Finder, Receiver, RecvBandwidth, RecvColorFormat, VideoRecvFrame
from cyndilib.receiver import ReceiveFrameType


def main(name: str, seconds: float, out: str, block: bool = False, count: int | None = None) -> int:
    finder = Finder()
    finder.open()
    deadline = time.time() + 60
    found = None
    while time.time() < deadline and found is None:
        finder.wait_for_sources(0.2)
        finder.update_sources()
        found = next((n for n in finder.get_source_names() if n.endswith(f"({name})")), None)
    if found is None:
        print("found-timeout", finder.get_source_names(), flush=True)
        return 2
    receiver = Receiver(color_format=RecvColorFormat.RGBX_RGBA, bandwidth=RecvBandwidth.highest)
    video = VideoRecvFrame()
    receiver.set_video_frame(video)
    receiver.connect_to(finder.get_source(found))
    print("found", found, flush=True)
    frames, stamps, times = [], [], []
    end = time.time() + seconds
    while time.time() < end and (count is None or len(frames) < count):
        got = receiver.receive(ReceiveFrameType.recv_video | ReceiveFrameType.recv_metadata, 50)
        if got & ReceiveFrameType.recv_video:
            now = time.time()
            data = np.empty(video.get_data_size(), np.uint8)
            video.fill_p_data(data)
            rgb = data.reshape(video.yres, video.xres, 4)[..., :3]  # [H, W, 3]
            frames.append(float(rgb[:32, :32].mean()) if block else rgb.copy())
            stamps.append(video.get_timestamp_posix())
            times.append(now)
    np.savez(out, frames=np.array(frames, np.float64 if block else np.uint8), stamps=np.array(stamps),
             times=np.array(times))
    finder.close()
    return 0


if __name__ == "__main__":
    rest = sys.argv[4:]
    sys.exit(main(sys.argv[1], float(sys.argv[2]), sys.argv[3], "--block" in rest,
                  int(rest[rest.index("--frames") + 1]) if "--frames" in rest else None))
