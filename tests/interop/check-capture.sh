#!/bin/bash
# tests/interop/check-capture.sh [--auth] PCAP -- fail if tshark finds a malformed
# NVMe/TCP packet in PCAP (ports 4420, 4421 and 8009 decoded as NVMe/TCP, digests verified).
#
# --auth (the auth suites): the capture must also hold DH-HMAC-CHAP exchanges,
# decoded as NVMe/TCP fabrics commands: at least one Authentication Send
# (fctype 05h) and one Authentication Receive (06h) command; their counts and
# those of Connect responses with AUTHREQ set are printed.
#
# One known tshark defect is tolerated and listed: its decoder of the Error
# Information log page (LID 01h) reads past the 64-byte entry that NVMe Base 2.0
# Figure 205 defines (it labels bytes 28-63 as three "Namespace ID" fields and
# raises an exception at the end of the data), so any target's answer to
# `nvme get-log --log-id=1` is flagged. Also tolerated and counted: TCP
# reassembly errors ("New fragment overlaps old data"), which tshark raises when
# a sender retransmits a range with other segment boundaries (valid TCP: the
# loopback drops segments when a receive queue is full under the emulated CPU);
# they say nothing of the NVMe/TCP bytes. Also tolerated and counted: the PDUs
# `nvmf check` corrupts on purpose (bad HLEN, bad header digest; host suite),
# recognised by their command identifier C4ECh (ROBUST_CID in
# crates/cli/src/check/rules.rs). Every other malformed frame fails.
set -uo pipefail
AUTH=0
[ "${1:-}" = --auth ] && { AUTH=1; shift; }
pcap=${1:?usage: check-capture.sh [--auth] PCAP}
command -v tshark >/dev/null || { echo "check-capture: tshark is not installed (scripts/install-deps.sh)"; exit 1; }
opts=(-d tcp.port==4420,nvme-tcp -d tcp.port==4421,nvme-tcp -d tcp.port==8009,nvme-tcp
      -o nvme-tcp.check_hdgst:TRUE -o nvme-tcp.check_ddgst:TRUE)
total=$(tshark -r "$pcap" "${opts[@]}" -Y nvme-tcp -T fields -e frame.number 2>/dev/null | wc -l)
bad=$(tshark -r "$pcap" "${opts[@]}" -Y '_ws.malformed || nvme-tcp.hdgst.status == "Bad" || nvme-tcp.ddgst.status == "Bad"' \
      -T fields -e frame.number 2>/dev/null)
known=0 tcp=0 deliberate=0 unexpected=()
for f in $bad; do
    detail=$(tshark -r "$pcap" "${opts[@]}" -Y "frame.number==$f" -V 2>/dev/null)
    if grep -q 'NVMe Get Log Page (Error Information)' <<<"$detail"; then
        known=$((known+1))
    elif grep -qE 'Command ID: 0xc4ec|Cmd ID: 0xc4ec|Command Capsule ID: 0xc4ec' <<<"$detail"; then
        deliberate=$((deliberate+1))
    elif grep -q 'Reassembly error, protocol TCP' <<<"$detail" && ! grep -qE 'nvme-tcp\.(h|d)dgst\.status: Bad|Digest: .*\[incorrect' <<<"$detail"; then
        tcp=$((tcp+1))
    else
        unexpected+=("$f")
    fi
done
echo "check-capture: $total NVMe/TCP frames, ${#unexpected[@]} malformed, $known in tshark's Error Information decoder (known tshark defect), $tcp TCP reassembly overlaps (retransmissions), $deliberate corrupted on purpose by nvmf check"
if [ ${#unexpected[@]} -gt 0 ]; then
    for f in "${unexpected[@]:0:5}"; do
        echo "--- frame $f:"
        tshark -r "$pcap" "${opts[@]}" -Y "frame.number==$f" -V 2>/dev/null | sed -n '/NVM Express/,$p' | head -40
        tshark -r "$pcap" "${opts[@]}" -Y "frame.number==$f" 2>/dev/null | head -5
    done
    exit 1
fi
[ "$total" -gt 0 ] || { echo "check-capture: no NVMe/TCP frames in $pcap"; exit 1; }
if [ $AUTH = 1 ]; then
    count() { tshark -r "$pcap" "${opts[@]}" -Y "$1" -T fields -e frame.number 2>/dev/null | wc -l; }
    asend=$(count 'nvme.fabrics.cmd.fctype == 0x05')
    arecv=$(count 'nvme.fabrics.cmd.fctype == 0x06')
    areq=$(count 'nvme.fabrics.cqe.connect.authreq != 0')
    echo "check-capture: DH-HMAC-CHAP: $asend Authentication Send, $arecv Authentication Receive frames, $areq Connect responses with AUTHREQ"
    [ "$asend" -gt 0 ] && [ "$arecv" -gt 0 ] || { echo "check-capture: no Authentication Send/Receive decoded in $pcap"; exit 1; }
fi
