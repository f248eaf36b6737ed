#!/usr/bin/env python3
"""Extracts the TCP payload byte streams of every NVMe/TCP connection in the
shared/vectors pcaps into <prefix>-conn<N>-{h2c,c2h}.bin.

Usage: python3 extract.py PCAP PREFIX [OUTDIR]

Uses `tshark -q -z follow,tcp,raw,<stream>` (TCP reassembly by Wireshark): lines
without a leading tab are bytes from node 0 (the host, the side that opened the
connection), lines with a leading tab are bytes from node 1 (port 4420, the
controller). Connections are numbered from 1 in tcp.stream order.
"""
import subprocess
import sys
import os


def streams(pcap):
    out = subprocess.run(
        ["tshark", "-r", pcap, "-T", "fields", "-e", "tcp.stream"],
        check=True, capture_output=True, text=True).stdout
    return sorted({int(x) for x in out.split() if x})


def follow(pcap, idx):
    out = subprocess.run(
        ["tshark", "-r", pcap, "-q", "-z", f"follow,tcp,raw,{idx}"],
        check=True, capture_output=True, text=True).stdout
    nodes = {}
    h2c, c2h = bytearray(), bytearray()
    body = False
    for line in out.splitlines():
        if line.startswith("Node 0:"):
            nodes[0] = line.split(":", 1)[1].strip()
        elif line.startswith("Node 1:"):
            nodes[1] = line.split(":", 1)[1].strip()
            body = True
            continue
        if not body or line.startswith("====") or not line.strip():
            continue
        if line.startswith("\t"):
            c2h += bytes.fromhex(line.strip())
        else:
            h2c += bytes.fromhex(line.strip())
    assert nodes[1].endswith(":4420"), nodes
    return h2c, c2h


def main():
    pcap, prefix = sys.argv[1], sys.argv[2]
    outdir = sys.argv[3] if len(sys.argv) > 3 else "."
    for n, idx in enumerate(streams(pcap), 1):
        h2c, c2h = follow(pcap, idx)
        for d, b in (("h2c", h2c), ("c2h", c2h)):
            p = os.path.join(outdir, f"{prefix}-conn{n}-{d}.bin")
            with open(p, "wb") as f:
                f.write(b)
            print(p, len(b))


if __name__ == "__main__":
    main()
