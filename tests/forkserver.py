"""A fork server for the snippet tests: torch imported once, a forked child per command.

Every ``bitcl ...`` or ``python ...`` line of a README or docs snippet would otherwise start a new
interpreter and import torch again (about 2 CPU-seconds each, half of what the snippets cost).
:class:`ForkServer` starts one interpreter that imports torch and numpy and runs no torch op
(so no thread pool exists to be broken by ``fork``); the shims ``bitcl`` and ``python`` that the
snippets see are :data:`CLIENT`, which sends the command line, its working directory, its
environment and its standard streams (file descriptors, over a Unix socket) to the server and
exits with the command's status. For each command the server forks a waiter, which forks the
command's process and reports how it ended; so a command runs as in a fresh interpreter of the
same environment: its own process, cwd, environment, streams, ``sys.argv``, ``__main__`` and exit
status (signals included). What differs: modules the server imported are not re-imported, so an
environment variable that torch reads at import (``OMP_NUM_THREADS``) is the server's; the tests
start the server with the snippets' environment. Anything the shims do not understand (``python``
flags other than ``-c``, ``-m`` or a script) runs in a real interpreter.

    python -m tests.forkserver SOCKET       # the server (ForkServer starts it)
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

SOCKET_VARIABLE = "BITCL_TEST_FORKSERVER"
MAX_FDS = 3

# The shim: standard library only, no site packages, so that it starts in milliseconds.
CLIENT = r'''import json, os, socket, sys
argv = sys.argv[1:] if MODE == "python" else ["-m", "bitcl", *sys.argv[1:]]
if MODE == "python" and (not argv or argv[0].startswith("-") and argv[0] not in ("-c", "-m")):
    os.execv(EXECUTABLE, [EXECUTABLE, *argv])  # a flag the server does not emulate: a real interpreter
s = socket.socket(socket.AF_UNIX)
s.connect(os.environ["BITCL_TEST_FORKSERVER"])
request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
socket.send_fds(s, [len(request).to_bytes(8, "big") + request], [0, 1, 2])
status = b""
while len(status) < 8:
    chunk = s.recv(8 - len(status))
    if not chunk:
        sys.exit("fork server: connection lost")
    status += chunk
code = int.from_bytes(status, "big", signed=True)
sys.exit(128 - code if code < 0 else code)  # killed by signal N: 128 + N, as a shell reports it
'''


def write_shims(bin_dir: Path) -> None:
    """``bitcl`` and ``python`` (clients of the server) and ``torchrun`` (a real launcher) in ``bin_dir``."""
    bin_dir.mkdir(exist_ok=True)
    for name, mode in (("bitcl", "bitcl"), ("python", "python")):
        body = f"MODE = {mode!r}\nEXECUTABLE = {sys.executable!r}\n" + CLIENT
        (bin_dir / name).write_text(f"#!{sys.executable} -S\n{body}")
    (bin_dir / "torchrun").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m torch.distributed.run "$@"\n')
    for shim in bin_dir.iterdir():
        shim.chmod(0o755)


class ForkServer:
    """``with ForkServer(env) as server:`` a running server started with ``env``; ``server.env`` is
    ``env`` with the socket's path, for the shims."""

    def __init__(self, env: dict):
        import tempfile
        # a short path: a Unix socket's path is limited to 107 bytes, pytest's tmp_path can be longer
        self.folder = Path(tempfile.mkdtemp(prefix="bitcl-fs-"))
        self.path = self.folder / "socket"
        self.env = {**env, SOCKET_VARIABLE: str(self.path)}

    def __enter__(self) -> "ForkServer":
        self.process = subprocess.Popen([sys.executable, "-m", "tests.forkserver", str(self.path)], env=self.env,
                                        cwd=Path(__file__).resolve().parent.parent, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while not self.path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"fork server did not start (exit status {self.process.poll()})")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait()
        self.path.unlink(missing_ok=True)
        self.folder.rmdir()


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _, _ = socket.recv_fds(conn, 1 << 20, MAX_FDS)
    size = int.from_bytes(data[:8], "big")
    data = data[8:]
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("request cut short")
        data += chunk
    return json.loads(data), list(fds)


def _run_command(request: dict, fds: list[int]) -> None:
    """In the forked command process: become the requested interpreter, run, exit."""
    import atexit
    import runpy
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin, sys.stdout, sys.stderr = (open(n, mode, closefd=False, buffering=b) for n, mode, b in
                                         ((0, "r", -1), (1, "w", 1 if os.isatty(1) else -1), (2, "w", 1)))
    sys.path[:] = [p for p in sys.path if p not in ("", os.getcwd())]  # the server's own script entry
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    argv, code = request["argv"], 0
    try:
        if argv[0] == "-c":
            sys.argv = ["-c", *argv[2:]]
            sys.path.insert(0, "")
            exec(compile(argv[1], "<string>", "exec"), {"__name__": "__main__", "__builtins__": __builtins__})
        elif argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]
            sys.path.insert(0, os.getcwd())
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path.insert(0, str(Path(argv[0]).resolve().parent))
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        if stop.code is None:
            code = 0
        elif isinstance(stop.code, int):
            code = stop.code
        else:
            print(stop.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - reported as an interpreter reports it
        import traceback
        traceback.print_exc()
        code = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 0xFF)


def _wait_and_report(conn: socket.socket, request: dict, fds: list[int]) -> None:
    """In the forked waiter: fork the command, wait for it, send its status (-N: killed by signal N)."""
    pid = os.fork()
    if pid == 0:
        conn.close()
        _run_command(request, fds)
    for fd in fds:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    conn.sendall(code.to_bytes(8, "big", signed=True))
    os._exit(0)


def serve(path: str) -> None:
    import numpy  # noqa: F401 - imported once, here, for every command
    import scipy.special  # noqa: F401
    import torch  # noqa: F401
    import torch._dynamo  # noqa: F401 - torch imports it at the first optimiser a process builds (2 s)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path + ".tmp")
    listener.listen(16)
    os.rename(path + ".tmp", path)  # the path appears only once the server listens
    while True:
        conn, _ = listener.accept()
        request, fds = _receive(conn)
        if os.fork() == 0:
            listener.close()
            _wait_and_report(conn, request, fds)
        conn.close()
        for fd in fds:
            os.close(fd)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:  # reap finished waiters
                pass
        except ChildProcessError:
            pass


if __name__ == "__main__":
    serve(sys.argv[1])
