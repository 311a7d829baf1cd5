"""Nothing a local run opens listens beyond this machine.

The main job runs (small) in a child process, streaming (on Prism: its job service, built to
listen on 127.0.0.1 by scripts/prism.sh, and the LOOPBACK worker pool of pipelines/prism.py)
and batch (the in-process FnApiRunner: no listener at all); the listening TCP sockets of its
process tree are sampled from /proc while it runs, and each must be on a loopback address.
"""
import ipaddress
import os
import pathlib
import socket
import subprocess
import sys
import time

from tests.conftest import ROOT


def _children(pid: int) -> set[int]:
    """`pid` and its descendants."""
    parents = {}
    for entry in pathlib.Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, grew = {pid}, True
    while grew:
        new = {p for p, parent in parents.items() if parent in tree} - tree
        tree |= new
        grew = bool(new)
    return tree


def _address(hex_address: str) -> str:
    """An address of /proc/net/tcp{,6} (little-endian words) as text."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def _listening() -> dict[int, str]:
    """Socket inode -> "address:port" of every listening TCP socket in this network namespace."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                address, port = fields[1].split(":")
                ip = _address(address)
                found[int(fields[9])] = f"{f'[{ip}]' if ':' in ip else ip}:{int(port, 16)}"
    return found


def listeners_of(pid: int) -> set[tuple[str, str]]:
    """(process name, "address:port") of the sockets on which `pid` or a descendant listens."""
    listening, out = _listening(), set()
    for p in _children(pid):
        try:
            name = pathlib.Path(f"/proc/{p}/comm").read_text().strip()
            fds = list(pathlib.Path(f"/proc/{p}/fd").iterdir())
        except OSError:  # gone meanwhile
            continue
        links = []
        for fd in fds:
            try:
                links.append(os.readlink(fd))
            except OSError:  # closed meanwhile
                pass
        for link in links:
            if link.startswith("socket:[") and int(link[8:-1]) in listening:
                out.add((name, listening[int(link[8:-1])]))
    return out


def is_loopback(address_port: str) -> bool:
    ip = ipaddress.ip_address(address_port.rsplit(":", 1)[0].strip("[]"))
    return ip.is_loopback or bool(getattr(ip, "ipv4_mapped", None) and ip.ipv4_mapped.is_loopback)


def _sample_run(args: list[str], timeout: float = 300) -> tuple[subprocess.CompletedProcess, set]:
    """Runs `python -m ...args`, sampling its listeners every 0.2 s until it ends."""
    proc = subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen, deadline = set(), time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            seen |= listeners_of(proc.pid)
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.kill()
    output = proc.communicate()[0]
    return subprocess.CompletedProcess(args, proc.returncode, output), seen


def test_the_sampler_sees_a_socket_that_listens_on_every_interface():
    child = subprocess.Popen([sys.executable, "-c", "import socket, time; s = socket.socket(); "
                              "s.bind(('0.0.0.0', 0)); s.listen(); print(s.getsockname()[1], flush=True); "
                              "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(child.stdout.readline())
        seen = listeners_of(child.pid)
    finally:
        child.kill()
        child.wait()
    assert (("python", f"0.0.0.0:{port}") in seen or ("python3", f"0.0.0.0:{port}") in seen), seen
    assert not is_loopback(f"0.0.0.0:{port}") and not is_loopback("[::]:5")
    assert is_loopback("127.0.0.1:1") and is_loopback("[::1]:1") and is_loopback("[::ffff:127.0.0.1]:1")
    with socket.socket() as mine:  # and this process's own sockets
        mine.bind(("127.0.0.1", 0))
        mine.listen()
        assert any(a == f"127.0.0.1:{mine.getsockname()[1]}" for _, a in listeners_of(os.getpid()))


def test_a_streaming_run_listens_on_loopback_only(tmp_path):
    run, seen = _sample_run(["pipelines.recommend", "--streaming", "--impressions", "400",
                             "--output", str(tmp_path / "out")])
    assert run.returncode == 0, run.stdout[-3000:]
    names = {name for name, _ in seen}
    assert "prism" in names and any(n.startswith("python") for n in names), seen  # job service, worker pool
    assert all(is_loopback(address) for _, address in seen), f"listening beyond this machine: {sorted(seen)}"


def test_a_batch_run_listens_on_loopback_only(tmp_path):
    run, seen = _sample_run(["pipelines.recommend", "--impressions", "400", "--output", str(tmp_path / "out")])
    assert run.returncode == 0, run.stdout[-3000:]
    assert all(is_loopback(address) for _, address in seen), f"listening beyond this machine: {sorted(seen)}"


def test_the_prism_binary_listens_on_loopback_only():
    from transforms.runners import prism_binary

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    prism = subprocess.Popen([prism_binary(), f"--job_port={port}", "--serve_http=true", "--web_port=0"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, seen = time.monotonic() + 30, set()
        while time.monotonic() < deadline and not any(a.endswith(f":{port}") for _, a in seen):
            time.sleep(0.2)
            seen = listeners_of(prism.pid)
    finally:
        prism.kill()
        prism.wait()
    assert any(a.endswith(f":{port}") for _, a in seen), seen  # the job service (and the web UI)
    assert all(is_loopback(address) for _, address in seen), f"Prism listens beyond this machine: {sorted(seen)}"
