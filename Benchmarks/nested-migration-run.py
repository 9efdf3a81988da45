#!/usr/bin/env python3
"""The L1 side of Benchmarks/nested-migration-vs-qemu.sh, and its report.

  nested-migration-run.py run OUT      (in L1: OUT/env names VMM, KERNEL, INITRD, ROUNDS, MEMORY, DIRTY_MB)
  nested-migration-run.py report OUT...   (on the host: the table from OUT/results.json; several OUTs are pooled)

In L1, for each round and each guest kind (idle, dirtying), interleaved (the VMM order alternates per
round): one live migration of the same Linux guest (same bzImage and initramfs, 1 vCPU, same RAM) between
two processes of the same VMM on L1's /dev/kvm, over a unix socket:
  - actor-vmm: destination `vm.receive-migration`, source `vm.send-migration` (API over unix sockets);
    rounds, bytes, downtime and total from the line the source logs at -v ("VM migrated to ...").
  - QEMU: destination `-incoming unix:`, source QMP `migrate`; `query-migrate` polled every 10 ms until
    completed: total-time, downtime, ram.transferred, ram.dirty-sync-count (the rounds). QEMU's
    max-bandwidth is raised to 100 GiB/s (ActorVMM has no limit); downtime-limit stays at its default,
    300 ms, ActorVMM's default target too.
Both: the request's wall time as the client sees it, and a check that the guest runs on at the destination
(its serial output grows within 60 s).
"""
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time


def read_env(out):
    env = {}
    with open(os.path.join(out, "env")) as f:
        for line in f:
            key, _, value = line.rstrip("\n").partition("=")
            env[key] = value
    return env


def wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {seconds} s waiting for {what}")
        time.sleep(0.01)


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def http(sock_path, method, endpoint, body=None, timeout=300):
    """One request to an actor-vmm API socket; returns (status, body)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    payload = json.dumps(body).encode() if body is not None else b""
    head = f"{method} /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    s.sendall(head.encode() + b"\r\n" + payload)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


class Qmp:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rwb")
        self.file.readline()  # greeting
        self.cmd("qmp_capabilities")

    def cmd(self, name, **arguments):
        message = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        self.file.write(json.dumps(message).encode() + b"\n")
        self.file.flush()
        while True:
            answer = json.loads(self.file.readline())
            if "return" in answer:
                return answer["return"]
            if "error" in answer:
                raise RuntimeError(f"QMP {name}: {answer['error']}")
            # an event: skip

    def close(self):
        self.sock.close()


def stop(process):
    if process.poll() is None:
        process.kill()
    process.wait()


def guest_args(env, dirty_mb):
    append = f"console=ttyS0 quiet avm_dirty_mb={dirty_mb}"
    return env["KERNEL"], env["INITRD"], append


def wait_ready(serial, dirty_mb):
    # Ready, and for a dirtying guest one whole pass done (the loop is running).
    wait_for(lambda: "AVMMIG READY" in read(serial), 180, f"the guest's ready line in {serial}")
    if dirty_mb:
        wait_for(lambda: "AVMMIG PASS" in read(serial), 180, f"the guest's first pass in {serial}")


def runs_on(serial, seconds=60):
    size = len(read(serial))
    wait_for(lambda: len(read(serial)) > size, seconds, f"the migrated guest's output in {serial}")


def actor_vmm_once(env, work, dirty_mb):
    kernel, initrd, append = guest_args(env, dirty_mb)
    memory = env["MEMORY"]
    serial, src_api, dst_api = f"{work}/a.serial", f"{work}/a-src.api", f"{work}/a-dst.api"
    mig = f"{work}/a-mig.sock"
    src = subprocess.Popen([env["VMM"], "-v", "--log-file", f"{work}/a-src.log", "--api-socket", f"path={src_api}",
                            "--kernel", kernel, "--initramfs", initrd, "--cmdline", append, "--cpus", "boot=1",
                            "--memory", f"size={memory}M", "--serial", f"file={serial}", "--console", "off"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(f"{work}/a-src.err", "w"))
    dst = None
    try:
        wait_ready(serial, dirty_mb)
        dst = subprocess.Popen([env["VMM"], "--log-file", f"{work}/a-dst.log", "--api-socket", f"path={dst_api}"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(f"{work}/a-dst.err", "w"))
        wait_for(lambda: os.path.exists(dst_api), 60, "the destination's API socket")
        received = {}
        receiver = threading.Thread(target=lambda: received.update(
            answer=http(dst_api, "PUT", "vm.receive-migration", {"receiver_url": f"unix:{mig}"})))
        receiver.start()
        wait_for(lambda: os.path.exists(mig), 60, "the destination listening")
        start = time.monotonic()
        status, body = http(src_api, "PUT", "vm.send-migration", {"destination_url": f"unix:{mig}"})
        request_ms = (time.monotonic() - start) * 1e3
        receiver.join(60)
        if status // 100 != 2:
            raise RuntimeError(f"send-migration: HTTP {status} {body}")
        runs_on(serial)
        line = [l for l in read(f"{work}/a-src.log").splitlines() if "VM migrated to" in l]
        m = re.search(r"\(pages ([0-9/]+)\), (\d+) bytes sent, downtime ([0-9.]+) ms, total ([0-9.]+) ms", line[-1] if line else "")
        if not m:
            raise RuntimeError(f"no migration line in the source's log: {read(f'{work}/a-src.log')[-500:]}")
        pages = [int(p) for p in m.group(1).split("/")]
        return {"request_ms": request_ms, "total_ms": float(m.group(4)), "downtime_ms": float(m.group(3)),
                "rounds": len(pages), "pages_per_round": pages, "bytes": int(m.group(2))}
    finally:
        for api in (src_api, dst_api):
            try:
                http(api, "PUT", "vmm.shutdown", timeout=10)
            except OSError:
                pass
        stop(src)
        if dst:
            stop(dst)


def qemu_command(env, dirty_mb, serial, qmp):
    kernel, initrd, append = guest_args(env, dirty_mb)
    return ["qemu-system-x86_64", "-accel", "kvm", "-cpu", "host", "-M", "q35", "-smp", "1", "-m", f"{env['MEMORY']}M",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", f"file:{serial}",
            "-qmp", f"unix:{qmp},server=on,wait=off", "-kernel", kernel, "-initrd", initrd, "-append", append]


def qemu_once(env, work, dirty_mb):
    src_serial, dst_serial = f"{work}/q-src.serial", f"{work}/q-dst.serial"
    src_qmp, dst_qmp, mig = f"{work}/q-src.qmp", f"{work}/q-dst.qmp", f"{work}/q-mig.sock"
    src = subprocess.Popen(qemu_command(env, dirty_mb, src_serial, src_qmp), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=open(f"{work}/q-src.err", "w"))
    dst = None
    try:
        wait_ready(src_serial, dirty_mb)
        dst = subprocess.Popen(qemu_command(env, dirty_mb, dst_serial, dst_qmp) + ["-incoming", f"unix:{mig}"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(f"{work}/q-dst.err", "w"))
        wait_for(lambda: os.path.exists(mig) and os.path.exists(dst_qmp), 60, "QEMU's destination listening")
        qmp = Qmp(src_qmp)
        qmp.cmd("migrate-set-parameters", **{"max-bandwidth": 100 << 30})
        start = time.monotonic()
        qmp.cmd("migrate", uri=f"unix:{mig}")
        while True:
            info = qmp.cmd("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.01)
        request_ms = (time.monotonic() - start) * 1e3
        qmp.close()
        if info.get("status") != "completed":
            raise RuntimeError(f"QEMU migration {info.get('status')}: {info}")
        runs_on(dst_serial)
        ram = info.get("ram", {})
        return {"request_ms": request_ms, "total_ms": float(info["total-time"]), "downtime_ms": float(info["downtime"]),
                "setup_ms": float(info.get("setup-time", 0)), "rounds": int(ram.get("dirty-sync-count", 0)),
                "bytes": int(ram.get("transferred", 0)), "normal_pages": int(ram.get("normal", 0)),
                "zero_pages": int(ram.get("duplicate", 0))}
    finally:
        for p in (src, dst):
            if p:
                stop(p)


def run(out):
    env = read_env(out)
    results = []
    rounds, dirty = int(env["ROUNDS"]), int(env["DIRTY_MB"])
    for r in range(rounds):
        order = ["actor-vmm", "qemu"] if r % 2 == 0 else ["qemu", "actor-vmm"]
        for kind, mb in (("idle", 0), ("dirty", dirty)):
            for vmm in order:
                work = f"/tmp/mig-{vmm}-{kind}-{r}"
                os.makedirs(work, exist_ok=True)
                record = {"vmm": vmm, "guest": kind, "dirty_mb": mb, "round": r + 1}
                try:
                    record.update((actor_vmm_once if vmm == "actor-vmm" else qemu_once)(env, work, mb))
                except Exception as error:  # one failed run is reported, the others go on
                    record["error"] = str(error)[:400]
                print(json.dumps(record), flush=True)
                results.append(record)
                with open(os.path.join(out, "results.json"), "w") as f:
                    json.dump(results, f, indent=1)


def report(*outs):
    results = [r for out in outs for r in json.load(open(os.path.join(out, "results.json")))]
    env = read_env(outs[0])
    print(f"| guest ({env['MEMORY']} MiB) | VMM | runs | total (ms) | downtime (ms) | rounds | sent (MiB) | request (ms) | total vs actor-vmm | downtime vs actor-vmm |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for kind in ("idle", "dirty"):
        medians = {}
        for vmm in ("actor-vmm", "qemu"):
            ok = [r for r in results if r["vmm"] == vmm and r["guest"] == kind and "error" not in r]
            failed = [r for r in results if r["vmm"] == vmm and r["guest"] == kind and "error" in r]
            if not ok:
                print(f"| {kind} | {vmm} | 0 ({len(failed)} failed: {failed[0]['error'][:120] if failed else '-'}) | | | | | | | |")
                continue

            def med(key):
                return statistics.median(r[key] for r in ok)

            def spread(key, scale=1.0, digits=1):
                values = sorted(r[key] * scale for r in ok)
                return f"{values[len(values) // 2] if len(values) % 2 else statistics.median(values):.{digits}f} ({values[0]:.{digits}f}–{values[-1]:.{digits}f})"

            medians[vmm] = (med("total_ms"), med("downtime_ms"))
            ratio = ""
            if vmm == "qemu" and "actor-vmm" in medians:
                base = medians["actor-vmm"]
                ratio = f"| {medians[vmm][0] / base[0]:.2f}× | {medians[vmm][1] / max(base[1], 1e-9):.2f}×"
            else:
                ratio = "| 1.00× | 1.00×"
            label = kind if kind == "idle" else f"dirtying {ok[0]['dirty_mb']} MiB"
            print(f"| {label} | {vmm} | {len(ok)}{f' ({len(failed)} failed)' if failed else ''} | {spread('total_ms')} | "
                  f"{spread('downtime_ms')} | {spread('rounds', digits=0)} | {spread('bytes', 1 / 1048576, 2)} | "
                  f"{spread('request_ms')} {ratio} |")


if __name__ == "__main__":
    {"run": run, "report": report}[sys.argv[1]](*sys.argv[2:])
