#!/usr/bin/env python3
"""Writes the seed corpus fuzz/corpus/<target>/ from the real traffic in
crates/proto/tests/vectors/*.bin (Linux host vs nvmet). Input formats are the
ones parsed in fuzz_targets/*.rs (little-endian fields, see the comments there).
Run from fuzz/: python3 make-corpus.py"""
import glob
import hashlib
import os
import struct

VEC = "../crates/proto/tests/vectors"
OUT = "corpus"


def pdus(b):
    off = 0
    while off + 8 <= len(b):
        plen = struct.unpack_from("<I", b, off + 4)[0]
        yield b[off:off + plen]
        off += plen


def save(target, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(data).hexdigest()[:16]
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def raw_ops(b):
    """Op::Raw (tag 0, u16 length, bytes) in pieces of at most 65535 bytes."""
    out = b""
    for i in range(0, len(b), 65535):
        p = b[i:i + 65535]
        out += bytes([0]) + struct.pack("<H", len(p)) + p
    return out


streams = {}
for f in sorted(glob.glob(os.path.join(VEC, "*.bin"))):
    name = os.path.basename(f)[:-4]
    streams[name] = open(f, "rb").read()

# pdu_decoder: flags, PDA, MAX_ICD u16, MAX_DATA u32, chunk seed, chunk max u16, stream.
seen = set()
for name, b in streams.items():
    conn = name.rsplit("-", 1)[0]
    dg = streams[conn + "-c2h"][11]
    host = name.endswith("c2h")
    fl = (1 if host else 0) | (4 if dg & 1 else 0) | (8 if dg & 2 else 0)
    hdr = bytes([fl, 0]) + struct.pack("<HIBH", 0xFFFF, 0xFFFFF, 7, 1500)
    save("pdu_decoder", hdr + b[:6000])
    for p in pdus(b):
        if p[0] in (0, 1):
            continue
        key = (p[0], p[1], host, len(p) > 200)
        if key in seen or len(p) > 5000:
            continue
        seen.add(key)
        save("pdu_decoder", bytes([fl | 2]) + hdr[1:] + p)

# structures: data pages seen on the wire, Connect data, SQEs and CQEs.
for name in ("plain-conn1-c2h", "plain-conn2-c2h"):
    for p in pdus(streams[name]):
        if p[0] == 7:
            save("structures", p[p[3]:])
        elif p[0] == 5:
            save("structures", p[8:24])
for name in ("plain-conn1-h2c", "plain-conn2-h2c", "plain-conn3-h2c"):
    for i, p in enumerate(pdus(streams[name])):
        if p[0] == 4 and i < 12:
            save("structures", p[8:72] + p[72:])

# controller_queue: allowed, CPDA, MAX_ICD u16, MAXH2CDATA idx, max C2H PDU u32,
# depth, pending u32, auto; then ops. H2CData is replaced by H2CAuto (tag 4).
for conn in ("plain-conn1", "plain-conn2", "plain-conn3", "digests-conn1", "digests-conn2"):
    cfg = bytes([3, 0]) + struct.pack("<HBIBIB", 16384, 63, 0xFFFFF, 128, 0x3FFFFF, 1)
    ops = b""
    for p in pdus(streams[conn + "-h2c"]):
        if p[0] == 6:
            ops += bytes([4, 0]) + struct.pack("<H", 0xFFFF)
            ops += bytes([4, 0]) + struct.pack("<H", 0xFFFF)
        else:
            ops += raw_ops(p)
    if len(ops) > 40000:
        ops = ops[:40000]
    save("controller_queue", cfg + ops)
    # The same with the app off, and the raw stream in one piece.
    save("controller_queue", cfg[:-1] + b"\0" + raw_ops(streams[conn + "-h2c"][:8000]))

# host_queue: digests, HPDA, MAX_ICD u16, max C2H u32, depth; then ops.
for dg in (0, 3):
    cfg = bytes([dg, 0]) + struct.pack("<HIB", 8192, 0xFFFFF, 64)
    icresp = bytes([1, 0, 0, dg]) + struct.pack("<I", 131072)
    sub = lambda kind, n: bytes([7, kind]) + struct.pack("<I", n)
    ops = icresp
    ops += sub(2, 4096) + sub(1, 100) + sub(1, 65536) + sub(0, 0) + sub(2, 300 * 1024 - 1)
    ops += bytes([4, 0]) + struct.pack("<H", 4096) + b"\0"          # C2HAuto read 1
    ops += bytes([2, 0]) + struct.pack("<H", 0)                      # Resp
    ops += bytes([5, 1]) + struct.pack("<II", 0, 2 * 1000)           # R2T in range
    ops += bytes([2, 1]) + struct.pack("<H", 0)
    ops += bytes([4, 2]) + struct.pack("<H", 60000) + b"\1"          # C2HAuto with SUCCESS
    ops += bytes([4, 2]) + struct.pack("<H", 60000) + b"\1"
    ops += bytes([6]) + struct.pack("<H", 2)                          # TermReq
    save("host_queue", cfg + ops)
for conn in ("plain-conn1", "plain-conn3", "digests-conn2"):
    dg = streams[conn + "-c2h"][11]
    cfg = bytes([dg, 0]) + struct.pack("<HIB", 8192, 0xFFFFF, 64)
    save("host_queue", cfg + raw_ops(streams[conn + "-c2h"][:6000]))

# auth_messages: the Linux DH-HMAC-CHAP capture in the nvmf-proto test
# (hex constants NAME_Qn_MESSAGE), as raw messages (mode 0), controller
# operations (mode 1), host answers (mode 2), plus DHHC-1 strings (mode 3).
import re
src = open("../crates/proto/tests/auth_linux_capture.rs").read()
consts = {}
for m in re.finditer(r'const (\w+): &str = (?:concat!\(([^)]*)\)|("[^"]*"))', src):
    body = m.group(2) if m.group(2) is not None else m.group(3)
    consts[m.group(1)] = "".join(re.findall(r'"([^"]*)"', body))
msgs = {k: bytes.fromhex(v) for k, v in consts.items() if re.fullmatch(r"C\d_Q\d_\w+", k)}
for k, v in msgs.items():
    save("auth_messages", bytes([0]) + v)
send = lambda b: bytes([0]) + struct.pack("<H", len(b)) + b
recv = lambda al: bytes([1]) + struct.pack("<I", al)
for case in sorted({k[:5] for k in msgs}):
    m = lambda n: msgs.get(case + "_" + n, b"")
    ops = send(m("NEGOTIATE")) + recv(4096) + send(m("REPLY")) + recv(4096) + send(m("SUCCESS2")) + recv(4096)
    save("auth_messages", bytes([1]) + ops)
    answers = b"".join(struct.pack("<H", len(x)) + x for x in (m("CHALLENGE"), m("SUCCESS1")))
    t_id = m("CHALLENGE")[4:6]
    save("auth_messages", bytes([2]) + t_id + answers)
    save("auth_messages", bytes([6]) + t_id + answers)
for k in ("K1", "K2", "C2", "K3", "C3"):
    if k in consts:
        save("auth_messages", bytes([3]) + consts[k].encode())

total = sum(os.path.getsize(f) for f in glob.glob(OUT + "/*/*"))
print("corpus files:", len(glob.glob(OUT + "/*/*")), "bytes:", total)
