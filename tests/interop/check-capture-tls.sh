#!/bin/bash
# tests/interop/check-capture-tls.sh PCAP [PORT] -- check that the NVMe/TCP
# traffic of a TLS suite (run.sh tls / tlsself) really is TLS 1.3 (tshark).
#
# A connection (TCP stream to PORT, default 4420) that begins with a TLS
# ClientHello is a TLS stream.  Required:
#   * at least one TLS stream with a ServerHello; every TLS stream that has a
#     ServerHello has one that selects TLS 1.3 (supported_versions = 0x0304) and
#     carries application data records.  A TLS stream without a ServerHello is
#     a refused handshake (the suites' wrong-PSK cases: the server finds no
#     such PSK identity and aborts); it must carry no application data;
#   * no frame of a TLS stream decodes as a plaintext NVMe/TCP PDU (PDU type
#     0-9): after the handshake everything is TLS records;
#   * no malformed frame in the TLS decode;
#   * the plaintext streams (the suites' "must be refused" attempts without
#     TLS) carry no data: no H2CData / C2HData / R2T PDUs (types 6, 7, 9).
# The NVMe/TCP malformation check (check-capture.sh) does not apply: the
# payload is encrypted.
set -uo pipefail
pcap=${1:?usage: check-capture-tls.sh PCAP [PORT]}
port=${2:-4420}
command -v tshark >/dev/null || { echo "check-capture-tls: tshark is not installed (scripts/install-deps.sh)"; exit 1; }
tls=(-d "tcp.port==$port,tls")
nvt=(-d "tcp.port==$port,nvme-tcp")
sf="tcp.port==$port"

streams=$(tshark -r "$pcap" -Y "$sf && tcp.len > 0" -T fields -e tcp.stream 2>/dev/null | sort -un)
tls_streams=$(tshark -r "$pcap" "${tls[@]}" -Y "$sf && tls.handshake.type == 1" -T fields -e tcp.stream 2>/dev/null | sort -un)
shello=$(tshark -r "$pcap" "${tls[@]}" -Y "$sf && tls.handshake.type == 2" -T fields -e tcp.stream 2>/dev/null | sort -un)
tls13=$(tshark -r "$pcap" "${tls[@]}" -Y "$sf && tls.handshake.type == 2 && tls.handshake.extensions.supported_version == 0x0304" \
        -T fields -e tcp.stream 2>/dev/null | sort -un)
appdata=$(tshark -r "$pcap" "${tls[@]}" -Y "$sf && tls.record.opaque_type == 23" -T fields -e tcp.stream 2>/dev/null | sort -un)
malformed=$(tshark -r "$pcap" "${tls[@]}" -Y "$sf && _ws.malformed" -T fields -e frame.number 2>/dev/null | wc -l)
nappdata=$(tshark -r "$pcap" "${tls[@]}" -Y "$sf && tls.record.opaque_type == 23" -T fields -e frame.number 2>/dev/null | wc -l)
# frame<TAB>stream<TAB>pdu types, decoded as plaintext NVMe/TCP
tshark -r "$pcap" "${nvt[@]}" -Y "$sf && nvme-tcp" -T fields -e frame.number -e tcp.stream -e nvme-tcp.type 2>/dev/null >/tmp/check-capture-tls.$$
in_set() { grep -qx "$1" <<<"$2"; }

errors=()
ntls=0 nplain=0 plain_pdus=0 nrefused=0
[ -n "$streams" ] || errors+=("no TCP payload on port $port")
for s in $streams; do
    if in_set "$s" "$tls_streams"; then
        ntls=$((ntls+1))
        if in_set "$s" "$shello"; then
            in_set "$s" "$tls13" || errors+=("TLS stream $s: the ServerHello does not select TLS 1.3")
            in_set "$s" "$appdata" || errors+=("TLS stream $s: no application data records")
        else
            nrefused=$((nrefused+1))
            in_set "$s" "$appdata" && errors+=("TLS stream $s: application data without a ServerHello")
        fi
        bad=$(awk -F'\t' -v s="$s" '$2 == s { n = split($3, t, ","); for (i = 1; i <= n; i++) if (t[i] + 0 <= 9) { print $1; break } }' /tmp/check-capture-tls.$$ | head -n 3)
        [ -z "$bad" ] || errors+=("TLS stream $s: frame(s) $(echo $bad) decode as plaintext NVMe/TCP PDUs")
    else
        nplain=$((nplain+1))
        types=$(awk -F'\t' -v s="$s" '$2 == s { print $3 }' /tmp/check-capture-tls.$$ | tr ',' '\n' | sort -un | paste -sd, -)
        plain_pdus=$((plain_pdus + $(awk -F'\t' -v s="$s" '$2 == s' /tmp/check-capture-tls.$$ | wc -l)))
        case ",$types," in *,6,*|*,7,*|*,9,*) errors+=("plaintext stream $s carries data PDUs (types $types)") ;; esac
    fi
done
rm -f /tmp/check-capture-tls.$$
[ "$ntls" -gt "$nrefused" ] || errors+=("no completed TLS handshake (ClientHello + ServerHello) on port $port")
[ "$malformed" = 0 ] || errors+=("$malformed malformed frames in the TLS decode")
echo "check-capture-tls: $ntls TLS streams (TLS 1.3: $(wc -w <<<"$tls13"), refused handshakes: $nrefused, $nappdata application data frames), $nplain plaintext streams ($plain_pdus NVMe/TCP frames, no data PDUs), $malformed malformed, ${#errors[@]} errors"
if [ ${#errors[@]} -gt 0 ]; then printf 'check-capture-tls: %s\n' "${errors[@]:0:10}"; exit 1; fi
