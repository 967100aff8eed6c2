#!/usr/bin/env python3
"""Set up the vault benchmark (issue 5) on a running Gatehouse.

Usage: vault_setup.py BASE_URL ACCESS_TOKEN OUT_DIR WORKSPACES

Creates a workspace `vault-bench` with one secret and writes OUT_DIR/put.lua (PUT a new version
of it) and OUT_DIR/reveal.lua (reveal it); then creates WORKSPACES more workspaces (each gets its
own data key), 8 requests at a time, for the master-key rotation figure. Prints the workspace id.
Loopback only; the certificate is the server's self-signed one.
"""

import concurrent.futures
import json
import os
import ssl
import sys
import urllib.request


def main():
    base, token, out, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def call(method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(base + path, data=data, method=method)
        req.add_header("authorization", "Bearer " + token)
        if data is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, context=ctx) as resp:
            return json.loads(resp.read() or b"null")

    ws = call("POST", "/v1/workspaces", {"slug": "vault-bench", "name": "Vault benchmark"})["id"]
    value = "s3cr3t-" + "x" * 57  # a 64-byte value
    call("PUT", "/v1/workspaces/%s/secrets/BENCH_SECRET" % ws, {"value": value})
    with open(os.path.join(out, "put.lua"), "w") as f:
        f.write('wrk.method = "PUT"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n'
                % json.dumps(json.dumps({"value": value})))
    with open(os.path.join(out, "reveal.lua"), "w") as f:
        f.write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "application/json"\n'
                % json.dumps(json.dumps({"reason": "benchmark"})))

    def make(i):
        call("POST", "/v1/workspaces", {"slug": "bench-ws-%05d" % i, "name": "w%d" % i})

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(make, range(count)))
    print(ws)


if __name__ == "__main__":
    main()
