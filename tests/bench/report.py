#!/usr/bin/env python3
"""Turn the raw figures gathered by run.sh into a table (stdout) and out/results.md.

Reads the wrk outputs out/wrk-{gatehouse,ceiling}-N.txt and the environment variables run.sh
exports. Medians over the rounds; ratio = gatehouse median req/s / ceiling median req/s.
"""

import datetime
import glob
import json
import os
import re
import statistics
import subprocess

OUT = os.environ["OUT"]
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}

TARGET_RATIO = 0.7
TARGET_RSS_MB = 25.0
TARGET_READY_MS = 200.0


def parse_wrk(path):
    text = open(path).read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
    p99 = float(m.group(1)) * UNIT_MS[m.group(2)]
    return rps, p99


def runs(name):
    files = sorted(glob.glob(os.path.join(OUT, "wrk-%s-*.txt" % name)), key=lambda p: int(re.findall(r"-(\d+)\.txt$", p)[0]))
    return [parse_wrk(f) for f in files]


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main():
    gh, ce = runs("gatehouse"), runs("ceiling")
    gh_rps = statistics.median(r for r, _ in gh)
    ce_rps = statistics.median(r for r, _ in ce)
    gh_p99 = statistics.median(p for _, p in gh)
    ce_p99 = statistics.median(p for _, p in ce)
    ratio = gh_rps / ce_rps
    idle_mb = int(os.environ["IDLE_RSS_KB"]) / 1024
    loaded_mb = int(os.environ["LOADED_RSS_KB"]) / 1024
    ready = json.loads(os.environ["READY_JSON"])
    bin_mb = int(os.environ["BIN_BYTES"]) / 1024 / 1024
    ceil_mb = int(os.environ["CEIL_BYTES"]) / 1024 / 1024
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[0].split(" [")[0]

    def verdict(ok):
        return "met" if ok else "**missed**"

    rows = [
        ("/healthz req/s, gatehouse (median)", "%.0f" % gh_rps, "", ""),
        ("/healthz req/s, ceiling (median)", "%.0f" % ce_rps, "", ""),
        ("ratio gatehouse / ceiling", "%.2f" % ratio, ">= %.1f" % TARGET_RATIO, verdict(ratio >= TARGET_RATIO)),
        ("/healthz p99, gatehouse (median)", "%.2f ms" % gh_p99, "", ""),
        ("/healthz p99, ceiling (median)", "%.2f ms" % ce_p99, "", ""),
        ("idle RSS, gatehouse", "%.1f MB" % idle_mb, "<= %.0f MB" % TARGET_RSS_MB, verdict(idle_mb <= TARGET_RSS_MB)),
        ("RSS after the load rounds (info)", "%.1f MB" % loaded_mb, "", ""),
        ("start to READY=1, existing folder (median)", "%.0f ms" % ready["median_ms"], "<= %.0f ms" % TARGET_READY_MS,
         verdict(ready["median_ms"] <= TARGET_READY_MS)),
        ("release binary size, gatehouse", "%.1f MiB" % bin_mb, "", ""),
        ("release binary size, ceiling (info)", "%.1f MiB" % ceil_mb, "", ""),
    ]

    width = max(len(r[0]) for r in rows)
    print()
    print("%-*s  %12s  %10s  %s" % (width, "figure", "value", "target", "verdict"))
    for name, value, target, v in rows:
        print("%-*s  %12s  %10s  %s" % (width, name, value, target, v.replace("*", "")))
    print()

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = []
    md.append("# Gatehouse benchmark results\n")
    md.append("- date: %s" % now)
    md.append("- source: %s" % os.environ.get("GIT_REV", "unknown"))
    md.append("- machine: %s cores, %s" % (os.cpu_count(), cpu_model()))
    md.append("- load average (1/5/15 min) before: %s; after the wrk rounds: %s"
              % (os.environ["LOAD_BEFORE"], os.environ["LOAD_AFTER"]))
    md.append("- load: `%s` over HTTPS keep-alive, %s rounds per server, alternating, never concurrent; %s"
              % (os.environ["WRK_LINE"], os.environ["ROUNDS"], wrk_version))
    md.append("- gatehouse logged %s lines to a file during the run (one access line per request)"
              % os.environ["LOG_LINES"])
    md.append("")
    md.append("| figure | value | target | verdict |")
    md.append("| --- | ---: | --- | --- |")
    for name, value, target, v in rows:
        md.append("| %s | %s | %s | %s |" % (name, value, target, v))
    md.append("")
    md.append("Per round (req/s, p99 ms):\n")
    md.append("| round | gatehouse req/s | gatehouse p99 | ceiling req/s | ceiling p99 |")
    md.append("| ---: | ---: | ---: | ---: | ---: |")
    for i, ((gr, gp), (cr, cp)) in enumerate(zip(gh, ce), 1):
        md.append("| %d | %.0f | %.2f | %.0f | %.2f |" % (i, gr, gp, cr, cp))
    md.append("")
    md.append("Start to READY=1, each run (ms): %s" % ", ".join("%.1f" % x for x in ready["runs_ms"]))
    md.append("")
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write("\n".join(md))
    print("written to %s" % os.path.join(OUT, "results.md"))


if __name__ == "__main__":
    main()
