#!/usr/bin/env python3
"""The host end of the test guest's network check in L1 (Tests/Nested/checks.sh), as TapPeer in
Tests/EndToEndTests/VirtioTests.swift: an AF_PACKET socket on the TAP (ethertype 0x88B5) that, until
SIGTERM, broadcasts "ACTORVMM-NET-RX" every 50 ms and looks for the guest's "ACTORVMM-NET-TX".

    tap-peer.py INTERFACE RESULT      (RESULT gets "saw_guest_frame=yes|no injected=N")"""
import signal, socket, sys, time

interface, result = sys.argv[1], sys.argv[2]
ETHERTYPE = 0x88B5
stopping = False
def stop(*_):
    global stopping
    stopping = True
signal.signal(signal.SIGTERM, stop)
frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + ETHERTYPE.to_bytes(2, "big") + b"ACTORVMM-NET-RX"
frame += b"\0" * (60 - len(frame))
sock, saw, injected = None, False, 0
while not stopping:
    if sock is None:
        try:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETHERTYPE))
            sock.bind((interface, ETHERTYPE))
            sock.settimeout(0.05)
        except OSError:
            sock = None
            time.sleep(0.02)
            continue
    try:
        sock.send(frame)
        injected += 1
    except OSError:
        pass  # ENETDOWN until the VMM brings the interface up
    deadline = time.monotonic() + 0.05
    while time.monotonic() < deadline:
        try:
            data = sock.recv(2048)
        except socket.timeout:
            break
        except OSError:
            sock.close()  # the interface went away: the VMM exited
            sock = None
            break
        if data[12:14] == ETHERTYPE.to_bytes(2, "big") and data[14:29] == b"ACTORVMM-NET-TX":
            saw = True
with open(result, "w") as f:
    f.write("saw_guest_frame=%s injected=%d\n" % ("yes" if saw else "no", injected))
