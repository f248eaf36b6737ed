#!/bin/sh
# nvmetcli-import.sh -- guest script (trixie track): a configuration of the
# kernel's nvmet target, saved in nvmetcli's JSON format, is imported by OUR
# target (`nvmf import-nvmetcli`, `nvmf target --import-nvmetcli`), which then
# serves the same subsystems, namespaces, data, identities, host restrictions
# and ANA states to the kernel host.
#
#   tests/interop/run.sh nvmetcli
#   tests/interop/run-vm.sh --kernel trixie --no-target --extra target/release/nvmf \
#       --script tests/interop/guest/nvmetcli-import.sh
#
# nvmetcli itself (Python, not packaged for Debian or PyPI) cannot run in this
# guest, so the file is written the way `nvmetcli save` writes it: a dump of
# the live configfs tree, each node's *writable* attributes by group without
# the group prefix, `enable` as an integer, namespaces with nsid and
# ana_grpid, ports with their linked subsystems, ana_groups and referrals,
# hosts (docs/spec-facts.md, "nvmetcli's saved configuration").
#
# Steps:
#   1. nvmet: subsystem A (allow any host; ns 1 = 32 MiB file with a UUID, ns 2
#      = 16 MiB file in ANA group 2), subsystem B (only HOSTA may connect; ns 1
#      = 16 MiB file), subsystem C linked to no port; TCP port 1 on
#      127.0.0.1:4420 with ANA group 2 non-optimized; ns 3 of A disabled.
#   2. The kernel host writes a pattern to each namespace through nvmet,
#      reads Identify (serial, UUID), then disconnects; the nvmet port goes.
#   3. The dump -> /tmp/nvmet.json; `nvmf import-nvmetcli` converts it (notes
#      for C and the disabled namespace); `nvmf target --import-nvmetcli` serves.
#   4. The kernel host connects to A and B (B with HOSTA; refused with another
#      host NQN): the same patterns read back, the same serial and UUID, ANA
#      group 2 non-optimized in the ANA log, C not in the discovery log.
# ---------------------------------------------------------------------------
. /lib/nvme-vm/lib.sh
. /lib/nvme-vm/selftest.sh     # st_port st_link

NVMF=${NVMF_BIN:-/extra/nvmf}
T=nvmetcli
ADDR=127.0.0.1 PORT=4420
NA=nqn.2024-01.io.nvmf-rs:imp-a
NB=nqn.2024-01.io.nvmf-rs:imp-b
NC=nqn.2024-01.io.nvmf-rs:imp-c
HOSTA=nqn.2014-08.org.nvmexpress:uuid:6a1d9c3e-0b6f-4c1e-9d7a-2f5e8b4c1a01
HOSTX=nqn.2014-08.org.nvmexpress:uuid:6a1d9c3e-0b6f-4c1e-9d7a-2f5e8b4c1aff
UUID=3f0c2a9e-5b7d-4e61-8a24-9c1d0e7f6b35
CFS=${NVMET_CFS:-/sys/kernel/config/nvmet}
JSON=/tmp/nvmet.json
TARGET_LOG=/tmp/nvmf-target-nvmetcli.log
TARGET_PID=

say() { echo "=== $* (uptime $(uptime_s)s)"; }

st_need $T nvme || exit 0
modprobe nvmet >/dev/null 2>&1; modprobe nvmet-tcp >/dev/null 2>&1
[ -d "$CFS" ] || { skip "$T: no nvmet configfs"; exit 0; }

# ns_make SUBSYS_DIR NSID FILE MB [UUID] [GRPID] [ENABLE]
ns_make() {
    truncate -s "${4}M" "$3" && mkdir "$1/namespaces/$2" &&
        echo -n "$3" >"$1/namespaces/$2/device_path" || return 1
    [ -z "${5:-}" ] || echo -n "$5" >"$1/namespaces/$2/device_uuid" || return 1
    [ -z "${6:-}" ] || echo -n "$6" >"$1/namespaces/$2/ana_grpid" || return 1
    echo "${7:-1}" >"$1/namespaces/$2/enable"
}

say "nvmet configuration"
SA=$CFS/subsystems/$NA SB=$CFS/subsystems/$NB SC=$CFS/subsystems/$NC
mkdir -p $CFS/hosts/$HOSTA
ok=1
mkdir $SA && echo 1 >$SA/attr_allow_any_host && echo -n 0badc0ffee000001 >$SA/attr_serial || ok=0
st_port 1 tcp $ADDR $PORT || ok=0
[ -d $CFS/ports/1/ana_groups/2 ] || mkdir $CFS/ports/1/ana_groups/2 || ok=0
echo -n non-optimized >$CFS/ports/1/ana_groups/2/ana_state || ok=0
ns_make $SA 1 /tmp/imp-a1.img 32 $UUID || ok=0
ns_make $SA 2 /tmp/imp-a2.img 16 "" 2 || ok=0
ns_make $SA 3 /tmp/imp-a3.img 8 "" "" 0 || ok=0
mkdir $SB && echo 0 >$SB/attr_allow_any_host && ln -s $CFS/hosts/$HOSTA $SB/allowed_hosts/$HOSTA || ok=0
ns_make $SB 1 /tmp/imp-b1.img 16 || ok=0
mkdir $SC && echo 1 >$SC/attr_allow_any_host && ns_make $SC 1 /tmp/imp-c1.img 8 || ok=0
st_link $NA 1 && st_link $NB 1 || ok=0
[ $ok = 1 ] && pass "$T: nvmet: subsystems A (2 namespaces + 1 disabled, ANA group 2), B (one allowed host), C (no port), port 1 tcp $ADDR:$PORT" ||
    { fail "$T: nvmet configuration"; exit 0; }

say "the kernel host writes through nvmet"
dd if=/dev/urandom of=/tmp/imp.pat bs=1M count=4 2>/dev/null
wrote=0
if st_connect $T "nvmet A" $NA -t tcp -a $ADDR -s $PORT; then
    DA1=$ST_DEV DA2=$(nvmevm_wait_ns_dev $NA 2 50)
    SERIAL_K=$(nvme id-ctrl "$ST_CTRL" -o json 2>/dev/null | tr -d ' \n' | sed -n 's/.*"sn":"\([^"]*\)".*/\1/p')
    NIDS_K=$(nvme ns-descs "$DA1" 2>/dev/null | grep -i uuid | awk '{print $NF}')
    dd if=/tmp/imp.pat of="$DA1" bs=1M seek=1 oflag=direct 2>/dev/null &&
        dd if=/tmp/imp.pat of="$DA2" bs=1M seek=2 oflag=direct 2>/dev/null && wrote=$((wrote+1))
    st_disconnect "$T nvmet A" $NA
fi
if st_connect $T "nvmet B as the allowed host" $NB -t tcp -a $ADDR -s $PORT --hostnqn $HOSTA; then
    dd if=/tmp/imp.pat of="$ST_DEV" bs=1M seek=3 oflag=direct 2>/dev/null && wrote=$((wrote+1))
    st_disconnect "$T nvmet B" $NB
fi
[ $wrote = 2 ] && pass "$T: 4 MiB patterns written to A ns 1, A ns 2, B ns 1 through nvmet (serial $SERIAL_K, A ns 1 UUID $NIDS_K)" ||
    fail "$T: writes through nvmet"

say "save: the configfs tree in nvmetcli's format"
# js STRING: a JSON string (the values here have no control characters)
js() { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
# groups DIR GROUP...: ' "group": {"name": "value", ...}' for each group, the
# owner-writable attribute files GROUP_* only, sorted, as nvmetcli's dump()
groups() {
    _d=$1; shift; _first=1
    for _g in "$@"; do
        [ $_first = 1 ] || printf ', '; _first=0
        printf '%s: {' "$(js "$_g")"; _f1=1
        for _a in $(find "$_d" -maxdepth 1 -type f -name "${_g}_*" -perm -u+w | sort); do
            [ $_f1 = 1 ] || printf ', '; _f1=0
            _n=$(basename "$_a"); _n=${_n#${_g}_}
            printf '%s: %s' "$(js "$_n")" "$(js "$(cat "$_a" 2>/dev/null | tr -d '\n')")"
        done
        printf '}'
    done
}
enable_of() { [ -f "$1/enable" ] && printf ', "enable": %s' "$(cat "$1/enable")"; }
names() { _f=1; for _x in $(ls "$1" 2>/dev/null); do [ $_f = 1 ] || printf ', '; _f=0; js "$_x"; done; }
{
    printf '{\n  "hosts": ['
    _f=1; for h in $(ls $CFS/hosts); do [ $_f = 1 ] || printf ', '; _f=0; printf '{"nqn": %s}' "$(js $h)"; done
    printf '],\n  "ports": ['
    _f=1
    for p in $(ls $CFS/ports); do
        P=$CFS/ports/$p
        [ $_f = 1 ] || printf ','; _f=0
        printf '\n    {%s, "portid": %s, "subsystems": [%s], "ana_groups": [' "$(groups $P addr param)" "$p" "$(names $P/subsystems)"
        _f2=1
        for g in $(ls $P/ana_groups 2>/dev/null); do
            [ $_f2 = 1 ] || printf ', '; _f2=0
            printf '{%s, "grpid": %s}' "$(groups $P/ana_groups/$g ana)" "$g"
        done
        printf '], "referrals": []}'
    done
    printf '\n  ],\n  "subsystems": ['
    _f=1
    for s in $(ls $CFS/subsystems); do
        S=$CFS/subsystems/$s
        [ $_f = 1 ] || printf ','; _f=0
        printf '\n    {%s, "nqn": %s, "allowed_hosts": [%s], "namespaces": [' "$(groups $S attr)" "$(js $s)" "$(names $S/allowed_hosts)"
        _f2=1
        for n in $(ls $S/namespaces | sort -n); do
            N=$S/namespaces/$n
            [ $_f2 = 1 ] || printf ', '; _f2=0
            printf '\n      {%s%s, "nsid": %s, "ana_grpid": %s}' "$(groups $N device ana resv)" "$(enable_of $N)" "$n" "$(cat $N/ana_grpid 2>/dev/null || echo 1)"
        done
        printf ']}'
    done
    printf '\n  ]\n}\n'
} >$JSON
echo "--- $JSON"; sed 's/^/    /' $JSON
grep -q '"trtype": "tcp"' $JSON && grep -q "\"path\": \"/tmp/imp-a1.img\"" $JSON &&
    grep -q '"state": "non-optimized"' $JSON && grep -q "\"$HOSTA\"" $JSON &&
    pass "$T: saved $(wc -c <$JSON) bytes in nvmetcli's format" || fail "$T: the saved file lacks what was configured"

say "nvmet goes away (the files stay)"
for s in $NA $NB; do rm -f $CFS/ports/1/subsystems/$s; done
rmdir $CFS/ports/1/ana_groups/2 2>/dev/null; rmdir $CFS/ports/1 2>/dev/null
_w=0; while [ $_w -lt 50 ] && listening $PORT; do sleep 0.1; _w=$((_w+1)); done
listening $PORT && fail "$T: nvmet still listens on $PORT" || pass "$T: nvmet port removed"

say "nvmf import-nvmetcli"
if $NVMF import-nvmetcli $JSON -o /tmp/imported.toml 2>/tmp/imp.notes; then
    pass "$T: nvmf import-nvmetcli wrote /tmp/imported.toml"
    sed 's/^/    /' /tmp/imported.toml; sed 's/^/    notes: /' /tmp/imp.notes
    grep -q "$NC: linked to no TCP port" /tmp/imp.notes && pass "$T: note: subsystem C is left out (no port)" ||
        fail "$T: no note about subsystem C"
    grep -q "namespace 3: disabled" /tmp/imp.notes && pass "$T: note: A's disabled namespace 3 is left out" ||
        fail "$T: no note about the disabled namespace"
else
    fail "$T: nvmf import-nvmetcli: $(tail -n 3 /tmp/imp.notes)"
fi

say "our target serves the imported configuration"
$NVMF target --import-nvmetcli $JSON >$TARGET_LOG 2>&1 &
TARGET_PID=$!
_w=0; while [ $_w -lt 200 ] && ! listening $PORT; do sleep 0.1; _w=$((_w+1)); done
if listening $PORT; then
    pass "$T: nvmf target --import-nvmetcli listens on $ADDR:$PORT"
    # the discovery log shows a host the subsystems it may connect to
    disc=$(nvme discover -t tcp -a $ADDR -s $PORT --hostnqn $HOSTA 2>&1)
    echo "$disc" | grep -q "$NA" && echo "$disc" | grep -q "$NB" && ! echo "$disc" | grep -q "$NC" &&
        pass "$T: discovery log for the allowed host lists A and B, not C" || { fail "$T: discovery log for $HOSTA"; echo "$disc" | _st_log; }
    disc=$(nvme discover -t tcp -a $ADDR -s $PORT --hostnqn $HOSTX 2>&1)
    echo "$disc" | grep -q "$NA" && ! echo "$disc" | grep -q "$NB" && ! echo "$disc" | grep -q "$NC" &&
        pass "$T: discovery log for another host lists A only" || { fail "$T: discovery log for $HOSTX"; echo "$disc" | _st_log; }
    if st_connect $T "ours A" $NA -t tcp -a $ADDR -s $PORT; then
        DA1=$ST_DEV DA2=$(nvmevm_wait_ns_dev $NA 2 50)
        SERIAL_O=$(nvme id-ctrl "$ST_CTRL" -o json 2>/dev/null | tr -d ' \n' | sed -n 's/.*"sn":"\([^"]*\)".*/\1/p')
        [ "$SERIAL_O" = "$SERIAL_K" ] && pass "$T: serial $SERIAL_O as in nvmet" || fail "$T: serial '$SERIAL_O', nvmet had '$SERIAL_K'"
        NIDS_O=$(nvme ns-descs "$DA1" 2>/dev/null | grep -i uuid | awk '{print $NF}')
        [ -n "$NIDS_O" ] && [ "$NIDS_O" = "$NIDS_K" ] && pass "$T: A ns 1 UUID $NIDS_O as in nvmet" ||
            fail "$T: A ns 1 UUID '$NIDS_O', nvmet had '$NIDS_K'"
        dd if="$DA1" bs=1M skip=1 count=4 iflag=direct 2>/dev/null | cmp -s - /tmp/imp.pat &&
            pass "$T: A ns 1: the data written through nvmet reads back" || fail "$T: A ns 1 data differs"
        [ -n "$DA2" ] && dd if="$DA2" bs=1M skip=2 count=4 iflag=direct 2>/dev/null | cmp -s - /tmp/imp.pat &&
            pass "$T: A ns 2: the data written through nvmet reads back" || fail "$T: A ns 2 data differs ($DA2)"
        [ "$(nvmevm_wait_ns_dev $NA 3 5)" = "" ] && pass "$T: A ns 3 (disabled in nvmet) is not served" ||
            fail "$T: A ns 3 is served"
        nvme ana-log "$ST_CTRL" >/tmp/imp.ana 2>&1
        st2=$(awk '/^grpid/{g=$NF} /^state/{if (g == 2) print $NF}' /tmp/imp.ana)
        [ "$st2" = non-optimized ] && pass "$T: ANA log: group 2 non-optimized, as on the nvmet port" ||
            { fail "$T: ANA log: group 2 '$st2'"; _st_log /tmp/imp.ana; }
        st_disconnect "$T ours A" $NA
    fi
    st_refused $T "ours B from a host nvmet did not allow" $NB -t tcp -a $ADDR -s $PORT --hostnqn $HOSTX
    if st_connect $T "ours B as the allowed host" $NB -t tcp -a $ADDR -s $PORT --hostnqn $HOSTA; then
        dd if="$ST_DEV" bs=1M skip=3 count=4 iflag=direct 2>/dev/null | cmp -s - /tmp/imp.pat &&
            pass "$T: B ns 1: the data written through nvmet reads back" || fail "$T: B ns 1 data differs"
        st_disconnect "$T ours B" $NB
    fi
    kill -TERM $TARGET_PID; wait $TARGET_PID 2>/dev/null
else
    fail "$T: our target did not listen: $(tail -n 5 $TARGET_LOG)"
fi
grep -qi panicked $TARGET_LOG && fail "$T: the target log has a panic"

for s in $NA $NB $NC; do
    for n in $CFS/subsystems/$s/namespaces/*; do [ -d "$n" ] && { echo 0 >"$n/enable"; rmdir "$n"; }; done
    rm -f $CFS/subsystems/$s/allowed_hosts/* 2>/dev/null
    rmdir $CFS/subsystems/$s 2>/dev/null
done
rmdir $CFS/hosts/$HOSTA 2>/dev/null
exit 0
