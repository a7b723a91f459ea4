#!/usr/bin/env bash
# A real single-node SLURM on this machine, and the tiny demo run through it.
#
#   sudo tests/slurm/run_slurm_ci.sh        (CI: .ci/run, make slurm-test)
#
# 1. Installs munge and SLURM 22.05 with apt if they are missing.
# 2. Starts a private munged, slurmctld and slurmd (as root, state, logs and
#    sockets in a temporary folder, free ports): one node named after
#    `hostname -s`, 2 CPUs, the machine's memory, select/cons_tres, one `gpu`
#    GRES backed by a dummy file, no accounting. Waits for the node to be idle.
# 3. Runs the tiny demo (tests/conftest.py TINY) through `submission` twice,
#    at the same time, in two temporary folders: locally (--cores 2) and with
#    --workflow-profile profiles/slurm. (Concurrent, because the SLURM run
#    mostly waits: its GPU jobs queue for the one GPU and each job starts
#    Snakemake twice; the results do not depend on load.)
# 4. Asserts that the cluster jobs ran as SLURM jobs (job ids printed by the
#    plugin, their logs under results/logs/slurm, COMPLETED on the node in
#    scontrol/squeue, GPU rules with a GPU, light rules on the submit host)
#    and that both runs' submission.csv, model weights and prediction stores
#    are byte-identical (tests/slurm/slurm_ci.py check).
# Stops the daemons it started and removes its temporary folder on exit.
# Exits 0 with "SKIP: ..." only when it is not root or apt cannot install.
# KEEP_TMP=1 keeps the temporary folder (logs, both runs) for inspection.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
HELPER="$REPO/tests/slurm/slurm_ci.py"
START=$SECONDS

say() { printf '[slurm-ci %s +%4ds] %s\n' "$(date +%H:%M:%S)" "$((SECONDS - START))" "$*"; }
skip() { say "SKIP: $*"; exit 0; }
fail() { say "FAIL: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || skip "needs root (installs packages, starts munged/slurmctld/slurmd); run it with sudo"
[[ -x $PYTHON ]] || fail "no Python at $PYTHON: run 'make setup' first"
"$PYTHON" -c 'import snakemake_executor_plugin_slurm' 2>/dev/null ||
    fail "snakemake-executor-plugin-slurm is not installed in $PYTHON: pip install -e '.[slurm]'"

# --- 0. temporary folder, cleanup ----------------------------------------------
TMP=$(mktemp -d /tmp/tilepipe-slurm-ci.XXXXXX)
chmod 755 "$TMP"
PIDS=()  # slurmctld, slurmd (ours only)
declare -A RUN_PID=()  # the two workflow runs while they go
MUNGE_STARTED=0

cleanup() {
    local status=$?
    set +e
    for pid in ${RUN_PID[@]+"${RUN_PID[@]}"}; do  # the workflow runs still going
        kill -INT "$pid" 2>/dev/null  # snakemake cancels its SLURM jobs
        for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$pid" 2>/dev/null
    done
    if [[ -n ${SLURM_CONF:-} && -f $SLURM_CONF ]] && ((${#PIDS[@]})); then
        scancel --quiet --user root 2>/dev/null  # our cluster only (SLURM_CONF)
        sleep 1
    fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -9 "$pid" 2>/dev/null
    done
    if ((MUNGE_STARTED)); then
        runuser -u munge -- munged --stop --socket="$TMP/munge/run/munge.socket" >/dev/null 2>&1
    fi
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
        say "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    ((status == 0)) || say "exit status $status"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. packages ------------------------------------------------------------
missing=()
for tool in munged munge slurmctld slurmd sbatch srun squeue scontrol sinfo; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || skip "SLURM is not installed (${missing[*]} missing) and there is no apt-get"
    say "installing munge slurmctld slurmd slurm-client with apt (missing: ${missing[*]})"
    install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends munge slurmctld slurmd slurm-client; }
    if ! install >"$TMP/apt.log" 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$TMP/apt.log" 2>&1 || true
        install >>"$TMP/apt.log" 2>&1 || {
            tail -20 "$TMP/apt.log"
            skip "apt-get could not install munge/slurm (apt's output above)"
        }
    fi
    say "installed: $(slurmd -V)"
else
    say "SLURM already installed: $(slurmd -V)"
fi

# --- 2. daemons ---------------------------------------------------------------
show_logs() {
    for f in "$TMP"/log/slurmctld.log "$TMP"/log/slurmd.log "$TMP"/munge/key/munged.log; do
        [[ -f $f ]] && { echo "--- tail $f"; tail -25 "$f"; }
    done
}

# munged: a private instance (own key and socket), run as the munge user.
mkdir -p "$TMP/munge/key" "$TMP/munge/run"
chmod 755 "$TMP/munge" "$TMP/munge/run"
chmod 700 "$TMP/munge/key"
dd if=/dev/urandom of="$TMP/munge/key/munge.key" bs=1024 count=1 status=none
chmod 400 "$TMP/munge/key/munge.key"
chown -R munge:munge "$TMP/munge/key" "$TMP/munge/run"
MUNGE_SOCKET="$TMP/munge/run/munge.socket"
runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$TMP/munge/key/munge.key" \
    --log-file="$TMP/munge/key/munged.log" --pid-file="$TMP/munge/run/munged.pid" \
    --seed-file="$TMP/munge/key/munged.seed" || { show_logs; fail "munged did not start"; }
MUNGE_STARTED=1
munge -n -S "$MUNGE_SOCKET" | unmunge -S "$MUNGE_SOCKET" >/dev/null || fail "munge credential round trip failed"

NODE=$(hostname -s)
CPUS=2
MEM_MB=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
# slurmd -C reports what the node really has; never declare more (it would drain).
DETECTED=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
[[ -n $DETECTED ]] && ((DETECTED < MEM_MB)) && MEM_MB=$DETECTED
OVERRIDES=""
(($(nproc) < CPUS)) && OVERRIDES="SlurmdParameters=config_overrides"
read -r CTLD_PORT SLURMD_PORT < <("$PYTHON" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
)
mkdir -p "$TMP/etc" "$TMP/state" "$TMP/spool" "$TMP/log" "$TMP/run" "$TMP/dev"
: >"$TMP/dev/gpu0"  # the dummy device behind Gres=gpu:1
export SLURM_CONF="$TMP/etc/slurm.conf"
cat >"$SLURM_CONF" <<EOF
ClusterName=tilepipeci
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$MUNGE_SOCKET
StateSaveLocation=$TMP/state
SlurmdSpoolDir=$TMP/spool
SlurmctldPidFile=$TMP/run/slurmctld.pid
SlurmdPidFile=$TMP/run/slurmd.pid
SlurmctldLogFile=$TMP/log/slurmctld.log
SlurmdLogFile=$TMP/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
GresTypes=gpu
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
ReturnToService=2
# Finished jobs stay visible to squeue/scontrol for an hour: the plugin's
# squeue status command needs MinJobAge >= 3 x its check interval, and the
# checks below read every job of the run.
MinJobAge=3600
InactiveLimit=0
KillWait=5
$OVERRIDES
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM_MB Gres=gpu:1 State=UNKNOWN
PartitionName=ci Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$TMP/etc/gres.conf" <<EOF
NodeName=$NODE Name=gpu File=$TMP/dev/gpu0
EOF
# Inside a job, snakemake-executor-plugin-slurm-jobstep starts the rule with
# `srun` under an environment stripped of SLURM_* variables, SLURM_CONF
# included; a real cluster's srun then reads /etc/slurm/slurm.conf. This
# cluster's config lives in $TMP instead (no system file is written), so the
# jobs find `srun` first in PATH as a shim that restores SLURM_CONF.
mkdir -p "$TMP/bin"
cat >"$TMP/bin/srun" <<EOF
#!/bin/sh
SLURM_CONF="$SLURM_CONF" exec "$(command -v srun)" "\$@"
EOF
chmod 755 "$TMP/bin/srun"
export PATH="$TMP/bin:$PATH"  # sbatch --export=ALL hands it to the jobs

slurmctld -D -f "$SLURM_CONF" >"$TMP/log/slurmctld.out" 2>&1 &
PIDS+=($!)
slurmd -D -f "$SLURM_CONF" >"$TMP/log/slurmd.out" 2>&1 &
PIDS+=($!)
say "started munged, slurmctld (pid ${PIDS[0]}), slurmd (pid ${PIDS[1]}): node $NODE, $CPUS CPUs, ${MEM_MB} MB, gpu:1, ports $CTLD_PORT/$SLURMD_PORT"

state=""
for _ in $(seq 60); do
    state=$(sinfo --noheader --nodes="$NODE" --format=%t 2>/dev/null || true)
    [[ $state == idle ]] && break
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null || { show_logs; fail "a SLURM daemon exited"; }; done
    sleep 1
done
[[ $state == idle ]] || { show_logs; fail "node $NODE is '${state:-unknown}' after 60 s, not idle"; }
say "sinfo: $(sinfo --noheader --format='partition %P, %D node %N, %t, CPUs %c, memory %m MB, GRES %G')"

# --- 3. the tiny demo, locally and through SLURM ------------------------------
LOCAL="$TMP/local"
CLUSTER="$TMP/cluster"
mkdir -p "$LOCAL" "$CLUSTER"
for dir in "$LOCAL" "$CLUSTER"; do "$PYTHON" "$HELPER" overlay "$dir/overlay.yaml"; done

# Requests larger than this node (only on small machines): cap them.
mapfile -t EXTRA < <("$PYTHON" "$HELPER" resource-args "$MEM_MB" "$REPO/config.yaml" "$LOCAL/overlay.yaml")
((${#EXTRA[@]})) && say "node too small for the profile; capped with: ${EXTRA[*]}"

declare -A RUN_START=() RUN_SECONDS=()
start_run() {  # NAME WORKDIR ARGS...: run the workflow like tests/conftest.py run_snakemake
    local name=$1 dir=$2
    shift 2
    # --configfile last: it takes every following word, targets included.
    (cd "$dir" && exec "$PYTHON" -m snakemake -s "$REPO/Snakefile" --directory "$dir" "$@" \
        --configfile "$REPO/config.yaml" "$dir/overlay.yaml") >"$TMP/$name.out" 2>&1 &
    RUN_PID[$name]=$!
    RUN_START[$name]=$SECONDS
}

say "local run: snakemake submission --cores 2 (profiles/default)"
start_run local "$LOCAL" submission --cores 2
say "SLURM run: snakemake submission --workflow-profile profiles/slurm --jobs 20"
# --max-threads: the same thread counts as the local run, whose --cores 2
# scales bigger `threads` down (on a cluster they are not). --jobs 20 queues
# every ready job in SLURM at once (SLURM starts the next one when a CPU or
# the GPU frees). Status checks from 3 s on (the plugin's default, 40 s,
# suits real clusters). No account on this cluster (no slurmdbd).
start_run cluster "$CLUSTER" submission --workflow-profile "$REPO/profiles/slurm" --jobs 20 \
    --max-threads "$CPUS" --slurm-init-seconds-before-status-checks 3 --slurm-no-account "${EXTRA[@]}"

while ((${#RUN_PID[@]})); do
    finished="" status=0
    wait -n -p finished "${RUN_PID[@]}" || status=$?
    for name in "${!RUN_PID[@]}"; do [[ ${RUN_PID[$name]} == "$finished" ]] && break; done
    unset "RUN_PID[$name]"
    RUN_SECONDS[$name]=$((SECONDS - RUN_START[$name]))
    if ((status != 0)); then
        tail -60 "$TMP/$name.out"
        if [[ $name == cluster ]]; then
            show_logs
            for f in $(find "$CLUSTER/results/logs/slurm" -name '*.log' 2>/dev/null | head -3); do echo "--- $f"; tail -20 "$f"; done
        fi
        fail "the $name tiny run failed after ${RUN_SECONDS[$name]} s (output above)"
    fi
    say "$name run done in ${RUN_SECONDS[$name]} s"
done

# --- 4. checks ------------------------------------------------------------------
say "squeue --states=all: $(squeue --states=all --noheader --format=%T | sort | uniq -c | tr -s ' \n' ' ')"
"$PYTHON" "$HELPER" check "$CLUSTER" "$TMP/cluster.out" "$LOCAL" "$NODE" ||
    { grep -E 'SLURM|rule ' "$TMP/cluster.out" | tail -40; fail "SLURM run checks failed (see FAIL above)"; }
say "PASS: local run ${RUN_SECONDS[local]} s, SLURM run ${RUN_SECONDS[cluster]} s (concurrent), total $((SECONDS - START)) s"
