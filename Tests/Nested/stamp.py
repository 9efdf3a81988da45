#!/usr/bin/env python3
"""Runs a command for the nested tier's checks (Tests/Nested/checks.sh) and records it for the host.

    stamp.py PREFIX TIMEOUT COMMAND [ARG...]

PREFIX.log gets every line of the command's stdout and stderr (merged) as "[seconds] text", seconds since
the command started; PREFIX.status its exit status (or "timeout", after SIGKILL at TIMEOUT seconds);
PREFIX.seconds its run time. Exits with the command's status (124 on timeout).

The command runs in a session of its own and the timeout kills that whole process group: a child it started
(a VMM, a guest's TAP peer) would otherwise keep the output pipe open and this script would wait on forever."""
import os, signal, subprocess, sys, threading, time

prefix, timeout, command = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
start = time.monotonic()
process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           start_new_session=True)
timed_out = threading.Event()
def watchdog():
    if process.poll() is None:
        timed_out.set()
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
timer = threading.Timer(timeout, watchdog)
timer.start()
with open(prefix + ".log", "w") as log:
    for raw in process.stdout:
        text = raw.decode("utf-8", "replace").rstrip("\r\n")
        log.write("[%8.3f] %s\n" % (time.monotonic() - start, text))
        log.flush()
status = process.wait()
timer.cancel()
with open(prefix + ".seconds", "w") as f:
    f.write("%.3f\n" % (time.monotonic() - start))
with open(prefix + ".status", "w") as f:
    f.write("timeout\n" if timed_out.is_set() else "%d\n" % status)
sys.exit(124 if timed_out.is_set() else (status if status >= 0 else 128 - status))
