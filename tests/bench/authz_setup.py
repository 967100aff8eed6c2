#!/usr/bin/env python3
"""Set up the authorization benchmark (issue 4) on a running Gatehouse.

Usage: authz_setup.py BASE_URL ACCESS_TOKEN OUT_DIR

Creates a workspace (the signed-in bench account is its owner), 50 custom roles of 20 rules each
(allow and deny, with conditions, on backend subjects), a second member holding all 50, and an
API key of the owner's. Writes to OUT_DIR:
  authorize.lua  a wrk script POSTing one batch of CHECKS decisions to /v1/workspaces/{ws}/authorize
  setup.json     {"ws": ..., "key": ..., "checks": CHECKS}
Loopback only; the certificate is the server's self-signed one.
"""

import json
import os
import ssl
import sys
import urllib.request

CHECKS = 100
ROLES = 50
RULES = 20


def main():
    base, token, out = sys.argv[1], sys.argv[2], sys.argv[3]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE

    def call(method, path, body=None, expect=(200, 201)):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(base + path, data=data, method=method)
        req.add_header("authorization", "Bearer " + token)
        if data is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, context=ctx) as resp:
            if resp.status not in expect:
                raise SystemExit("%s %s answered %s" % (method, path, resp.status))
            return json.loads(resp.read() or b"null")

    me = call("GET", "/v1/me")
    ws = call("POST", "/v1/workspaces", {"slug": "bench", "name": "Authorization benchmark"})["id"]
    names = []
    for r in range(ROLES):
        rules = []
        for i in range(RULES):
            subject = "svc%d" % ((r * RULES + i) % 40)
            if i % 5 == 4:
                rules.append({"effect": "deny", "actions": ["delete"], "subjects": [subject],
                              "conditions": {"locked": True, "tier": {"in": ["gold", "silver"]}}})
            else:
                rules.append({"effect": "allow", "actions": ["read", "edit", "act%d" % i], "subjects": [subject],
                              "conditions": {"owner": "${user.id}", "path": {"prefix": "/team%d/" % (i % 3)}}})
        name = "role-%02d" % r
        call("POST", "/v1/workspaces/%s/roles" % ws, {"name": name, "rules": rules})
        names.append(name)
    # The questions are about a member holding all 50 custom roles (1000 rules), asked by the
    # owner (the bench account) or by an API key of the owner.
    other = call("POST", "/v1/users", {"email": "bench-member@example.com", "password": "bench member passphrase 42"})
    call("PUT", "/v1/workspaces/%s/members/%s" % (ws, other["id"]), {"roles": names})
    key = call("POST", "/v1/workspaces/%s/api-keys" % ws,
               {"name": "bench", "rules": [{"effect": "allow", "actions": ["*"], "subjects": ["*"]}]})["key"]

    checks = []
    for n in range(CHECKS):
        p = other["id"]
        checks.append({
            "principal": p,
            "action": ["read", "edit", "delete", "act3"][n % 4],
            "subject": "svc%d" % (n % 40),
            "resource": {"owner": p if n % 2 == 0 else "someone", "path": "/team%d/doc%d" % (n % 3, n),
                         "locked": n % 7 == 0, "tier": "gold"},
        })
    body = json.dumps({"checks": checks})
    with open(os.path.join(out, "authorize.lua"), "w") as f:
        f.write('wrk.method = "POST"\n')
        f.write("wrk.body = %s\n" % json.dumps(body))
        f.write('wrk.headers["Content-Type"] = "application/json"\n')
    answer = call("POST", "/v1/workspaces/%s/authorize" % ws, {"checks": checks})
    allowed = sum(1 for r in answer["results"] if r["allowed"])
    with open(os.path.join(out, "setup.json"), "w") as f:
        json.dump({"ws": ws, "key": key, "checks": CHECKS, "allowed_in_batch": allowed}, f)
    print(json.dumps({"ws": ws, "key": key, "allowed": allowed}))


if __name__ == "__main__":
    main()
