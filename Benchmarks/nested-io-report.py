#!/usr/bin/env python3
"""The report of Benchmarks/nested-io-vs-qemu.sh: reads OUT/runs/VMM-ROUND.log (the guest's "AVMIO STEP ..."
lines, stamped by Tests/Nested/stamp.py), prints a table of medians over the rounds with the ratio
ActorVMM / QEMU, and writes it with every round's values to RESULTS/nested-io-<UTC>.{json,txt} and
RESULTS/nested-io-latest.{json,txt}.

    nested-io-report.py OUT RESULTS [MORE-OUT...]

With more than one OUT (runs of the same steps), their rounds are pooled: round r of the k-th OUT counts
as round 1000·k + r, so the pairs stay within a round.

fio: terse v3 (fields 1-based: 5 error, 7/48 read/write KiB/s, 8/49 IOPS, 18-19/59-60 completion latency
p50/p99 in µs, with --percentile_list=50:99). iperf3: the receiver's Mbit/s. sockperf ping-pong: its
percentiles are half the round trip, so they are doubled here; transactions/s = received / valid run time.
"""
import glob, json, os, re, statistics, sys, time

if len(sys.argv) < 3:
    sys.exit("usage: nested-io-report.py OUT RESULTS [MORE-OUT...]")
out, results, pooled = sys.argv[1], sys.argv[2], sys.argv[3:]

# (step, metric key, label, unit, better): better is "higher" or "lower".
METRICS = [
    ("randread-qd1", "iops", "4 KiB random read, QD 1", "IOPS", "higher"),
    ("randread-qd1", "p50", "  latency p50", "µs", "lower"),
    ("randread-qd1", "p99", "  latency p99", "µs", "lower"),
    ("randwrite-qd1", "iops", "4 KiB random write, QD 1", "IOPS", "higher"),
    ("randwrite-qd1", "p50", "  latency p50", "µs", "lower"),
    ("randwrite-qd1", "p99", "  latency p99", "µs", "lower"),
    ("randread-qd32", "iops", "4 KiB random read, QD 32", "IOPS", "higher"),
    ("randread-qd32", "p50", "  latency p50", "µs", "lower"),
    ("randread-qd32", "p99", "  latency p99", "µs", "lower"),
    ("randwrite-qd32", "iops", "4 KiB random write, QD 32", "IOPS", "higher"),
    ("randwrite-qd32", "p50", "  latency p50", "µs", "lower"),
    ("randwrite-qd32", "p99", "  latency p99", "µs", "lower"),
    ("seqread", "mibs", "sequential read, 1 MiB, QD 8", "MiB/s", "higher"),
    ("seqwrite", "mibs", "sequential write, 1 MiB, QD 8", "MiB/s", "higher"),
    ("net-tx", "mbits", "TCP guest → L1 (iperf3)", "Mbit/s", "higher"),
    ("net-rx", "mbits", "TCP L1 → guest (iperf3 -R)", "Mbit/s", "higher"),
    ("net-rr", "tps", "TCP request/response, 64 B (sockperf)", "trans/s", "higher"),
    ("net-rr", "p50", "  round trip p50", "µs", "lower"),
    ("net-rr", "p99", "  round trip p99", "µs", "lower"),
]


def percentile_field(text):
    """'50.000000%=123' → 123.0"""
    return float(text.split("=", 1)[1])


def parse_fio(text, step):
    fields = text.strip().split(";")
    if len(fields) < 60 or fields[0] != "3":
        return {"error": text.strip()[:200]}
    if fields[4] != "0":
        return {"error": "fio error %s" % fields[4]}
    write = "write" in step
    base = 47 if write else 6  # 1-based position of the direction's first field (KiB done)
    f = lambda n: fields[n - 1]
    kib_per_s, iops = float(f(base + 1)), float(f(base + 2))
    return {"iops": iops, "mibs": kib_per_s / 1024, "p50": percentile_field(f(base + 12)),
            "p99": percentile_field(f(base + 13))}


def parse_iperf(text):
    match = re.search(r"([\d.]+) Mbits/sec\s+(?:\d+\s+)?receiver", text)
    return {"mbits": float(match.group(1))} if match else {"error": text.strip()[:200]}


def parse_sockperf(text):
    valid = re.search(r"\[Valid Duration\] RunTime=([\d.]+) sec; SentMessages=\d+; ReceivedMessages=(\d+)", text)
    p50 = re.search(r"percentile 50\.000 =\s*([\d.]+)", text)
    p99 = re.search(r"percentile 99\.000 =\s*([\d.]+)", text)
    if not (valid and p50 and p99) or float(valid.group(1)) == 0:
        return {"error": text.strip()[:200]}
    return {"tps": int(valid.group(2)) / float(valid.group(1)), "p50": 2 * float(p50.group(1)),
            "p99": 2 * float(p99.group(1))}


def parse_log(path):
    """{step: {metric: value, "window": (from, to)} or {"error": ...}}, plus "_ready" and "_done" (the guest's
    lines). The window of a step: from the guest's previous line to its own, in seconds since the run began
    (Tests/Nested/stamp.py's stamps)."""
    steps = {}
    previous = None
    with open(path, errors="replace") as log:
        for line in log:
            at = line.find("AVMIO ")
            if at < 0:
                continue
            stamp = re.match(r"\[\s*([\d.]+)\]", line)
            now = float(stamp.group(1)) if stamp else None
            window, previous = (previous, now), now
            words = line[at + 6:].rstrip("\n").split(" ", 1)
            step, rest = words[0], words[1] if len(words) > 1 else ""
            if step == "ready":
                steps["_ready"] = rest
            elif step == "done":
                steps["_done"] = rest
            elif step.startswith(("rand", "seq")):
                steps[step] = parse_fio(rest, step)
            elif step in ("net-tx", "net-rx"):
                steps[step] = parse_iperf(rest)
            elif step == "net-rr":
                steps[step] = parse_sockperf(rest)
            if step in steps and isinstance(steps[step], dict) and None not in window:
                steps[step]["window"] = window
    return steps


def l1_cpu_share(out, runs):
    """Sets "share" on every step: the share of one host CPU the L1 QEMU had during the step (CPU time over
    wall time, from OUT/l1-cpu.txt, sampled on the host every 0.2 s). L1's clock is put on the host's with
    the moment the host first saw OUT/l1-clock (±0.2 s); a run began at its .end time minus its .seconds."""
    path = os.path.join(out, "l1-cpu.txt")
    if not os.path.exists(path):
        return
    ticks = float(read_kv(os.path.join(out, "host-info.txt")).get("clock_ticks", 100))
    samples, offset = [], None
    for line in open(path):
        words = line.split()
        if words[0] == "clock" and len(words) == 3:
            offset = float(words[1]) - float(words[2])
        elif len(words) == 2:
            samples.append((float(words[0]), int(words[1]) / ticks))
    if offset is None or len(samples) < 2:
        return

    def cpu_at(t):  # linear interpolation between samples
        for (t0, c0), (t1, c1) in zip(samples, samples[1:]):
            if t0 <= t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c0
        return None

    for vmm in runs:
        for round_, steps in runs[vmm]:
            end = os.path.join(out, "runs", "%s-%d.end" % (vmm, round_))
            if not os.path.exists(end) or steps.get("_seconds") is None:
                continue
            began = float(open(end).read()) - steps["_seconds"] + offset
            for step, values in steps.items():
                if not isinstance(values, dict) or "window" not in values:
                    continue
                a, b = began + values["window"][0], began + values["window"][1]
                ca, cb = cpu_at(a), cpu_at(b)
                if ca is not None and cb is not None and b > a:
                    values["share"] = (cb - ca) / (b - a)


def read_kv(path):
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def load_runs(out):
    """vmm → [(round, steps)] from OUT/runs, with each step's L1 CPU share where OUT has the samples."""
    runs = {}
    for log in sorted(glob.glob(os.path.join(out, "runs", "*.log"))):
        name = os.path.basename(log)[:-4]
        vmm, round_ = name.rsplit("-", 1)
        steps = parse_log(log)
        status_path = log[:-4] + ".status"
        steps["_status"] = open(status_path).read().strip() if os.path.exists(status_path) else "missing"
        steps["_seconds"] = float(open(log[:-4] + ".seconds").read()) if os.path.exists(log[:-4] + ".seconds") else None
        runs.setdefault(vmm, []).append((int(round_), steps))
    for vmm in runs:
        runs[vmm].sort()
    l1_cpu_share(out, runs)
    return runs


runs = load_runs(out)
for k, more in enumerate(pooled, start=1):
    for vmm, rounds in load_runs(more).items():
        runs.setdefault(vmm, []).extend((1000 * k + r, steps) for r, steps in rounds)

env = read_kv(os.path.join(out, "env"))
host = read_kv(os.path.join(out, "host-info.txt"))
vmms = env.get("VMMS", "actor-vmm qemu").strip('"').split()
wanted = env.get("STEPS", "").split(",")
# The reference is QEMU (the first QEMU variant); every other VMM gets a ratio to it. The ratio is the
# median of the per-round ratios (round r's two runs were back to back, so a change in the host's load
# between rounds cancels out), with their range.
reference = next((v for v in vmms if v.startswith("qemu")), None)
compared = [v for v in vmms if v != reference] if reference else []

rows = []
for step, key, label, unit, better in METRICS:
    if step not in wanted:
        continue
    row = {"step": step, "metric": key, "label": label.strip(), "unit": unit, "better": better, "rounds": {},
           "median": {}, "ratio": {}, "ratio_range": {}, "reference": reference, "l1_cpu_share": {},
           "cpu_normalised_ratio": {}}
    by_round, normalised = {}, {}
    for vmm in vmms:
        values = {r: s[step][key] for r, s in runs.get(vmm, []) if key in s.get(step, {})}
        shares = {r: s[step]["share"] for r, s in runs.get(vmm, []) if "share" in s.get(step, {}) and s[step]["share"] > 0}
        by_round[vmm] = values
        row["l1_cpu_share"][vmm] = [shares.get(r) for r, _ in runs.get(vmm, [])]
        # A rate scales with the CPU L1 had, a latency inversely: per unit of L1 CPU.
        normalised[vmm] = {r: v / shares[r] if better == "higher" else v * shares[r] for r, v in values.items() if r in shares}
        row["rounds"][vmm] = [values.get(r) for r, _ in runs.get(vmm, [])]
        row["median"][vmm] = statistics.median(values.values()) if values else None
    for vmm in compared:
        pairs = [by_round[vmm][r] / by_round[reference][r] for r in by_round[vmm]
                 if r in by_round[reference] and by_round[reference][r]]
        row["ratio"][vmm] = statistics.median(pairs) if pairs else None
        row["ratio_range"][vmm] = [min(pairs), max(pairs)] if pairs else None
        pairs = [normalised[vmm][r] / normalised[reference][r] for r in normalised[vmm]
                 if r in normalised[reference] and normalised[reference][r]]
        row["cpu_normalised_ratio"][vmm] = statistics.median(pairs) if pairs else None
    row["label_indented"] = label
    rows.append(row)

errors = [(vmm, r, step, s[step]["error"]) for vmm in runs for r, s in runs[vmm]
          for step in s if not step.startswith("_") and "error" in s[step]]
failed_runs = [(vmm, r, s["_status"]) for vmm in runs for r, s in runs[vmm] if s["_status"] != "0" or "_done" not in s]


def fmt(value):
    if value is None:
        return "-"
    return "%.0f" % value if value >= 100 else "%.1f" % value if value >= 10 else "%.2f" % value


lines = []
header = ["metric", "unit"] + vmms + ["%s / %s (range)" % (v, reference) for v in compared] + \
    ["per L1 CPU" for v in compared] + (["better"] if compared else [])
lines.append("| " + " | ".join(header) + " |")
lines.append("|" + " --- |" * len(header))
for row in rows:
    label = row["label_indented"]
    cells = ["… " + label.strip() if label.startswith("  ") else label, row["unit"]] + [fmt(row["median"][v]) for v in vmms]
    for vmm in compared:
        ratio, spread = row["ratio"][vmm], row["ratio_range"][vmm]
        cells.append("-" if ratio is None else "%.2f× (%.2f–%.2f)" % (ratio, spread[0], spread[1]))
    for vmm in compared:
        ratio = row["cpu_normalised_ratio"][vmm]
        cells.append("-" if ratio is None else "%.2f×" % ratio)
    if compared:
        cells.append("≥ 1" if row["better"] == "higher" else "≤ 1")
    lines.append("| " + " | ".join(cells) + " |")
l1_info = open(os.path.join(out, "l1-info.txt")).read().split("\n") if os.path.exists(os.path.join(out, "l1-info.txt")) else []
summary = [
    "Medians over %s interleaved rounds of %s s per step; whole run %s s, L1 ready after %s s, L1 run %s s%s." % (
        len(runs.get(reference, [])) if reference else env.get("ROUNDS"), env.get("SECONDS_PER_STEP"),
        host.get("run_seconds", "?"),
        open(os.path.join(out, "l1-ready-seconds")).read().strip() if os.path.exists(os.path.join(out, "l1-ready-seconds")) else "?",
        open(os.path.join(out, "l1-seconds")).read().strip() if os.path.exists(os.path.join(out, "l1-seconds")) else "?",
        " (the first of the pooled runs)" if pooled else ""),
    "Host: %s, %s CPUs, Linux %s, load %s at start; commit %s; actor-vmm %s." % (
        host.get("host_cpu"), host.get("host_cpus"), host.get("host_kernel"), host.get("load_at_start"),
        host.get("commit"), host.get("vmm_binary")),
]
all_shares = {vmm: [v["share"] for _, st in runs.get(vmm, []) for v in st.values() if isinstance(v, dict) and "share" in v]
              for vmm in vmms}
if pooled:
    summary.append("Pooled: %d rounds from %s." % (len(runs.get(reference, [])) if reference else 0,
                                                  ", ".join([out] + pooled)))
if any(all_shares.values()):
    summary.append("L1's share of one host CPU during the steps (median, min–max): " + ", ".join(
        "%s %.2f (%.2f–%.2f)" % (v, statistics.median(x), min(x), max(x)) for v, x in all_shares.items() if x) +
        "; 'per L1 CPU' divides rates by it and multiplies latencies by it before the ratio.")
if l1_info:
    summary.append("L1: Linux %s, %s." % (l1_info[0], l1_info[1] if len(l1_info) > 1 else "?"))
for vmm, r, status in failed_runs:
    summary.append("WARNING: %s round %d exited %s%s" % (vmm, r, status, "" if status == "0" else "") +
                   ("" if any(s.get("_done") for rr, s in runs[vmm] if rr == r) else " before the guest's last step"))
for vmm, r, step, error in errors:
    summary.append("WARNING: %s round %d %s: %s" % (vmm, r, step, error))
text = "\n".join(lines + [""] + summary) + "\n"
sys.stdout.write(text)

stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
document = {
    "benchmark": "nested-io-vs-qemu",
    "method": "Benchmarks/nested-io-vs-qemu.sh; docs/benchmarks.md, 'Block and network I/O against QEMU'",
    "ratio": "VMM / %s, the median of the per-round ratios (range: their min and max); >= 1 is better for rows"
             " where higher is better, <= 1 where lower is better" % reference,
    "env": env, "host": host, "l1": l1_info, "records": [out] + pooled,
    "rows": [{k: v for k, v in row.items() if k != "label_indented"} for row in rows],
    "runs": {vmm: [{"round": r, "status": s["_status"], "seconds": s["_seconds"], "ready": s.get("_ready"),
                    "done": s.get("_done")} for r, s in runs[vmm]] for vmm in runs},
    "warnings": [line for line in summary if line.startswith("WARNING")],
}
os.makedirs(results, exist_ok=True)
for name in ("nested-io-%s" % stamp, "nested-io-latest"):
    with open(os.path.join(results, name + ".json"), "w") as f:
        json.dump(document, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(results, name + ".txt"), "w") as f:
        f.write(text)
sys.stderr.write("wrote %s/nested-io-%s.{json,txt} and nested-io-latest.*\n" % (results, stamp))
