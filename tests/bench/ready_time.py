#!/usr/bin/env python3
"""Time from process start to sd_notify READY=1, as systemd (Type=notify) sees it.

Usage: ready_time.py RUNS LOGFILE -- COMMAND [ARG...]

For each run: bind a fresh unix datagram socket, set NOTIFY_SOCKET to it, spawn COMMAND, and
time from just before the spawn until a datagram containing the line READY=1 arrives. Then stop
the process with SIGTERM and wait for it to exit (it holds the data folder's lock) before the next
run. The command's stdout and stderr are appended to LOGFILE. Prints one JSON object:
{"runs_ms": [...], "median_ms": M}. Exits non-zero when a run fails to become ready in 30 s or the
process exits first.
"""

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

TIMEOUT_S = 30.0


def one_run(cmd, log):
    with tempfile.TemporaryDirectory(prefix="gh-notify-") as tmp:
        path = os.path.join(tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        env = dict(os.environ, NOTIFY_SOCKET=path)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        elapsed = None
        try:
            deadline = start + TIMEOUT_S
            while elapsed is None:
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise RuntimeError("no READY=1 within %.0f s" % TIMEOUT_S)
                sock.settimeout(min(left, 0.05))
                try:
                    data = sock.recv(4096)
                except socket.timeout:
                    if proc.poll() is not None:
                        raise RuntimeError("process exited with %s before READY=1" % proc.returncode)
                    continue
                if b"READY=1" in data.split(b"\n"):
                    elapsed = time.perf_counter() - start
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            sock.close()
        return elapsed * 1000.0


def main():
    if len(sys.argv) < 5 or sys.argv[3] != "--":
        sys.exit(__doc__)
    runs = int(sys.argv[1])
    cmd = sys.argv[4:]
    results = []
    with open(sys.argv[2], "ab") as log:
        for _ in range(runs):
            results.append(round(one_run(cmd, log), 1))
    print(json.dumps({"runs_ms": results, "median_ms": round(statistics.median(results), 1)}))


if __name__ == "__main__":
    try:
        main()
    except RuntimeError as e:
        sys.exit("ready_time.py: %s" % e)
