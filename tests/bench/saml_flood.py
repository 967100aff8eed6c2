#!/usr/bin/env python3
"""Junk bodies at a running Gatehouse, and its resident memory meanwhile (issue 8).

Usage: saml_flood.py BASE PATH PID MODE [SECONDS] [CLIENTS] [BYTES]

BASE is https://127.0.0.1:PORT (loopback only), PATH the route to POST at, PID the server's
process id. CLIENTS threads (64) each POST, for SECONDS (10), BYTES (1,000,000) of junk
(`SAMLResponse=` then random base64 letters), one TLS connection per request (`Connection:
close`: a refused body ends its connection anyway), MODE `length` (a Content-Length header, the
body sent whole) or `chunked` (Transfer-Encoding: chunked, 64 KiB chunks, no length). Meanwhile
the server's VmRSS is read from /proc/PID/status every 50 ms.

Prints one JSON object: idle_kb (before), peak_kb (the largest sample), hwm_kb (VmHWM at the
end: the process's peak since it started), after_kb (2 s after the last client stopped),
requests (answered with a status line), statuses, failures (requests without a status line, by
error), cut_sends (requests whose body could not be sent whole because the server had closed:
it answered before reading it all) and sent_mb (body bytes the clients managed to send).
"""

import base64
import collections
import json
import os
import socket
import ssl
import sys
import threading
import time
import urllib.parse


def status_kb(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main():
    base, path, pid, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 10.0
    clients = int(sys.argv[6]) if len(sys.argv) > 6 else 64
    size = int(sys.argv[7]) if len(sys.argv) > 7 else 1_000_000
    if mode not in ("length", "chunked"):
        sys.exit("MODE: length or chunked")
    url = urllib.parse.urlsplit(base)
    host, port = url.hostname, url.port
    if host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("loopback addresses only")
    prefix = b"SAMLResponse="
    junk = prefix + base64.b64encode(os.urandom(size))[: size - len(prefix)]
    ctype = "application/x-www-form-urlencoded" if path.endswith("/acs") else "application/json"
    head = "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: %s\r\nConnection: close\r\n" % (path, host, port, ctype)
    if mode == "length":
        head += "Content-Length: %d\r\n\r\n" % len(junk)
    else:
        head += "Transfer-Encoding: chunked\r\n\r\n"
    head = head.encode()
    chunk = 64 * 1024

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    lock = threading.Lock()
    statuses = collections.Counter()
    failures = collections.Counter()
    totals = {"cut": 0, "sent": 0}
    stop = time.monotonic() + seconds

    def one():
        sent, cut = 0, False
        try:
            sock = ctx.wrap_socket(socket.create_connection((host, port), timeout=30), server_hostname=host)
        except OSError as e:
            return None, type(e).__name__, 0, False
        try:
            try:
                sock.sendall(head)
                if mode == "length":
                    for i in range(0, len(junk), chunk):
                        sock.sendall(junk[i : i + chunk])
                        sent += min(chunk, len(junk) - i)
                else:
                    for i in range(0, len(junk), chunk):
                        piece = junk[i : i + chunk]
                        sock.sendall(b"%x\r\n" % len(piece) + piece + b"\r\n")
                        sent += len(piece)
                    sock.sendall(b"0\r\n\r\n")
            except (OSError, ssl.SSLError):
                cut = True
            buf = b""
            try:
                while b"\r\n" not in buf and len(buf) < 4096:
                    data = sock.recv(4096)
                    if not data:
                        break
                    buf += data
            except (OSError, ssl.SSLError) as e:
                if not buf:
                    return None, type(e).__name__, sent, cut
            parts = buf.split(b" ", 2)
            if len(parts) >= 2 and parts[0].startswith(b"HTTP/"):
                return int(parts[1]), None, sent, cut
            return None, "no status line", sent, cut
        finally:
            sock.close()

    def client():
        while time.monotonic() < stop:
            status, failure, sent, cut = one()
            with lock:
                totals["sent"] += sent
                totals["cut"] += cut
                if status is not None:
                    statuses[status] += 1
                else:
                    failures[failure] += 1

    idle_kb = status_kb(pid, "VmRSS")
    peak = [idle_kb]
    sampling = threading.Event()

    def sampler():
        while not sampling.is_set():
            try:
                peak[0] = max(peak[0], status_kb(pid, "VmRSS"))
            except OSError:
                return
            time.sleep(0.05)

    s = threading.Thread(target=sampler)
    s.start()
    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    time.sleep(0.2)
    sampling.set()
    s.join()
    hwm_kb = status_kb(pid, "VmHWM")
    time.sleep(2)
    after_kb = status_kb(pid, "VmRSS")
    print(json.dumps({
        "path": path,
        "mode": mode,
        "clients": clients,
        "body_bytes": len(junk),
        "seconds": round(elapsed, 2),
        "idle_kb": idle_kb,
        "peak_kb": peak[0],
        "hwm_kb": hwm_kb,
        "after_kb": after_kb,
        "requests": sum(statuses.values()),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "failures": dict(failures),
        "cut_sends": totals["cut"],
        "sent_mb": round(totals["sent"] / 1e6, 1),
    }))


if __name__ == "__main__":
    main()
