"""`unstable demo` / `make run` on a machine where another program holds the demo's ports: the demo
takes free ones and says which; a port asked for that is taken is one line and exit status 2.
Real sockets on loopback hold the ports; the demo show is a tiny one written in a fresh folder."""

import re
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from test_show import write_show
from unstable.cli import main
from unstable.ports import choose_ports, free_port, is_free

ROOT = Path(__file__).resolve().parents[1]

DEMO = """\
name = "demo"
size = [64, 32]
fps = 10
[pieces.eq]
piece = "../pieces/eq.toml"
[layout]
panels = ["eq/g0", "eq/g1"]
[osc]
port = {osc}
[web]
port = {web}
advertise = false
"""


@contextmanager
def held_ports():
    """A UDP and a TCP socket on loopback, bound and (TCP) listening: as another program holding them."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", 0))
        tcp.bind(("127.0.0.1", 0))
        tcp.listen()
        yield udp.getsockname()[1], tcp.getsockname()[1]


def demo_folder(tmp_path: Path, osc: int, web: int) -> Path:
    """shows/demo.toml (what `unstable demo` plays, relative to the working folder) with these ports."""
    write_show(tmp_path, text="", name="unused.toml")
    (tmp_path / "shows").mkdir()
    (tmp_path / "shows" / "demo.toml").write_text(DEMO.format(osc=osc, web=web))
    return tmp_path


def test_a_taken_port_is_seen_as_taken_and_a_free_one_is_found():
    with held_ports() as (udp, tcp):
        assert not is_free("127.0.0.1", udp, "udp") and not is_free("127.0.0.1", tcp, "tcp")
        other = free_port("127.0.0.1", "udp")
        assert other != udp and is_free("127.0.0.1", other, "udp")
    assert is_free("127.0.0.1", udp, "udp") and is_free("127.0.0.1", tcp, "tcp")  # let go: free again


def test_the_demo_takes_free_ports_when_its_own_are_taken(tmp_cwd, monkeypatch, one_torch_thread):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with held_ports() as (udp, tcp):
        demo_folder(tmp_cwd, udp, tcp)
        r = CliRunner().invoke(main, ["demo", "--seconds", "0.3", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert f"demo: OSC port {udp} on 127.0.0.1 is taken; using " in r.output
    assert f"demo: control page port {tcp} on 127.0.0.1 is taken; using " in r.output
    osc_now = int(re.search(rf"OSC port {udp} on 127.0.0.1 is taken; using (\d+)", r.output)[1])
    web_now = int(re.search(rf"control page port {tcp} on 127.0.0.1 is taken; using (\d+)", r.output)[1])
    # The ports said are the ones the show listened on.
    assert f"OSC on 127.0.0.1:{osc_now}," in r.output
    assert f"live: control page and OSCQuery at http://127.0.0.1:{web_now}/control" in r.output
    assert (tmp_cwd / "runs" / "demo" / "demo.mp4").is_file()


@pytest.mark.parametrize("option", ["--osc-port", "--web-port"])
def test_a_port_asked_for_that_is_taken_stays_an_error(tmp_cwd, monkeypatch, option):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with held_ports() as (udp, tcp):
        demo_folder(tmp_cwd, 0, 0)
        port = udp if option == "--osc-port" else tcp
        r = CliRunner().invoke(main, ["demo", "--seconds", "0.3", "--device", "cpu", option, str(port)])
    assert r.exit_code == 2, r.output
    what = "cannot listen for OSC" if option == "--osc-port" else "cannot serve the control page"
    assert f"error: {what} on 127.0.0.1:{port}: address already in use ({option} {port})" in r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
    assert not (tmp_cwd / "runs").exists()  # refused before anything was built or written


def test_live_refuses_the_show_files_own_port_when_it_is_taken(tmp_path):
    # `unstable live` plays a show someone configured: its port taken is an error naming the file and
    # key (no silent move: the controllers are set up for that port), before any piece is built.
    from unstable.show import load_show
    with held_ports() as (udp, tcp):
        show = load_show(demo_folder(tmp_path, udp, 0) / "shows" / "demo.toml")
        with pytest.raises(Exception) as e:
            choose_ports(show, None, None, web=True, fallback=False, echo=print)
        assert f"cannot listen for OSC on 127.0.0.1:{udp}: address already in use" in str(e.value)
        assert f"demo.toml: [osc] port = {udp}; or give --osc-port" in str(e.value)
        # The same show through the demo's rules: a free port instead, said once.
        said = []
        osc, web = choose_ports(show, None, None, web=True, fallback=True, echo=said.append)
        assert osc not in (None, udp) and web is None and len(said) == 1


def test_make_run_passes_args_to_the_demo_and_survives_a_taken_port(tmp_cwd):
    # `make run` stays the one command: ARGS reach `unstable demo`. The venv is this test's own
    # (-o: its stamp is taken as made, so nothing is installed).
    venv = Path(sys.executable).parent.parent
    with held_ports() as (udp, tcp):
        demo_folder(tmp_cwd, udp, tcp)
        env = {k: v for k, v in __import__("os").environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        proc = subprocess.run(["make", "-f", str(ROOT / "Makefile"), "-o", str(venv / ".installed"), "run",
                               f"VENV={venv}", "ARGS=--seconds 0.3 --device cpu --record runs/m.mp4"],
                              cwd=tmp_cwd, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"demo: OSC port {udp} on 127.0.0.1 is taken; using " in out
    assert (tmp_cwd / "runs" / "m.mp4").is_file()
