#!/usr/bin/env bash
# The demo DAG through workflow/profiles/slurm on a real, single-node SLURM started on this machine.
#
#   tests/slurm/run.sh [--quick] [--keep]
#
# 1. installs Debian's slurm-wlm and munge with apt-get (skipped when slurmctld, slurmd, sbatch and munged
#    are already there);
# 2. writes /etc/slurm/slurm.conf and gres.conf (files already there are moved aside and put back) for one
#    node named after this host, with partitions `cpu` (default) and `gpu` and one fake GPU (gres gpu:1
#    with /dev/null as its device file: nothing runs on a GPU, the jobs only request it), starts munged
#    (unless one answers already), slurmctld and slurmd (state and logs in a temporary folder), and waits
#    until the node is idle;
# 3. runs `snakemake --workflow-profile workflow/profiles/slurm` in a temporary folder: the full demo
#    (config.yaml) or, with --quick, a tiny capture (2 subjects, 6 cameras, 2 frames per segment, 5
#    training steps, the first variant only); train.gpus is 1, so train and evaluate go to the gpu
#    partition with --gpus=1;
# 4. checks the exit status and the final outputs, prints the jobs SLURM ran (squeue/scontrol: this
#    cluster has no accounting database, so sacct has nothing and Snakemake queries squeue, the profile's
#    `slurm-status-command: squeue` setting) and stops everything it started.
#
# The profile is used unchanged, with the flags a user of a cluster without accounting gives on the
# command line: --default-resources for the account (not checked without accounting) and
# --slurm-status-command squeue. The node declares 16 CPUs and 64 GiB (SlurmdParameters=config_overrides)
# so that the profile's requests (train: 8 CPUs per GPU, 64000 MB) fit as written; the jobs really share
# this machine's cores. Without conda the profile's `use-conda: true` is dropped from a copy of it (as in
# tests/test_slurm_profile.py); with conda the profile is used as is.
#
# Exits 0 with a line starting "SKIPPED:" when SLURM cannot be installed or started here (not root, no
# apt-get, no network for apt, daemons that do not come up): CI without root then passes with that note.
# --keep leaves the run folder and SLURM's logs (its path is printed); SLURM is stopped in any case.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
QUICK=0
KEEP=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --keep) KEEP=1 ;;
        -h | --help)
            sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
            exit 0
            ;;
        *)
            echo "usage: $0 [--quick] [--keep]" >&2
            exit 2
            ;;
    esac
done

START=$(date +%s)
say() { echo "[slurm-test $(($(date +%s) - START))s] $*"; }
skip() {
    echo "SKIPPED: tests/slurm/run.sh: $* (the SLURM profile is still dry-run by tests/test_slurm_profile.py)"
    exit 0
}

# -- 1. install ---------------------------------------------------------------------------------------------
have_slurm() { command -v slurmctld && command -v slurmd && command -v sbatch && command -v munged; } >/dev/null
if ! have_slurm; then
    [ "$(id -u)" = 0 ] || skip "slurm-wlm/munge are not installed and this is not root"
    command -v apt-get >/dev/null || skip "slurm-wlm/munge are not installed and there is no apt-get"
    say "installing slurm-wlm and munge with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends slurm-wlm munge; } \
        >/tmp/avat3r-slurm-apt.log 2>&1; then
        tail -5 /tmp/avat3r-slurm-apt.log
        skip "apt-get install slurm-wlm munge failed (log: /tmp/avat3r-slurm-apt.log)"
    fi
    have_slurm || skip "slurm-wlm installed but slurmctld/slurmd/sbatch/munged not found"
fi
[ "$(id -u)" = 0 ] || skip "starting slurmd needs root"
say "$(slurmctld -V) installed"

PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
"$PYTHON" -c "import snakemake, snakemake_executor_plugin_slurm" 2>/dev/null || {
    echo "ERROR: $PYTHON lacks snakemake or snakemake-executor-plugin-slurm: run 'make install'" >&2
    exit 1
}
BIN="$(dirname "$PYTHON")"
export PATH="$BIN:$PATH" # the rules call `avat3r`; sbatch passes PATH on to the jobs (--export=ALL)

# -- 2. configure and start ---------------------------------------------------------------------------------
WORK="$(mktemp -d /tmp/avat3r-slurm.XXXXXX)"
ETC="$WORK/etc"
mkdir -p "$ETC" "$WORK/state" "$WORK/spool" "$WORK/log"
NODE="$(hostname -s)"
STARTED_MUNGE=0
INSTALLED_CONF=0
MUNGE_PID=/run/munge/avat3r-slurm-test.pid
STATUS=1

teardown() {
    set +e
    if [ -f "$WORK/slurmctld.pid" ]; then
        scancel --full --quiet --user "$(id -un)" 2>/dev/null
    fi
    for daemon in slurmd slurmctld; do
        if [ -f "$WORK/$daemon.pid" ]; then
            pid="$(cat "$WORK/$daemon.pid")"
            kill "$pid" 2>/dev/null
            for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
            kill -9 "$pid" 2>/dev/null
        fi
    done
    if [ "$INSTALLED_CONF" = 1 ]; then
        for name in slurm.conf gres.conf; do
            rm -f "/etc/slurm/$name"
            [ -e "$ETC/$name.original" ] && mv "$ETC/$name.original" "/etc/slurm/$name"
        done
    fi
    if [ "$STARTED_MUNGE" = 1 ] && [ -f "$MUNGE_PID" ]; then
        kill "$(cat "$MUNGE_PID")" 2>/dev/null
        rm -f "$MUNGE_PID"
    fi
    if [ "$KEEP" = 1 ] || [ "$STATUS" != 0 ]; then
        echo "kept: $WORK (run/ is the Snakemake folder, log/ holds slurmctld.log and slurmd.log)"
    else
        rm -rf "$WORK"
    fi
}
trap teardown EXIT

# The configuration goes to SLURM's default place, /etc/slurm: the jobstep plugin clears every SLURM_*
# variable (SLURM_CONF included) before its `srun` inside the job, so srun only finds the default path.
# Files already there are moved aside and put back at teardown.
export SLURM_CONF=/etc/slurm/slurm.conf
cat >"$ETC/slurm.conf" <<EOF
# Written by tests/slurm/run.sh: one node, this machine; no accounting database.
ClusterName=avat3rtest
SlurmctldHost=$NODE(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$WORK/state
SlurmdSpoolDir=$WORK/spool
SlurmctldPidFile=$WORK/slurmctld.pid
SlurmdPidFile=$WORK/slurmd.pid
SlurmctldLogFile=$WORK/log/slurmctld.log
SlurmdLogFile=$WORK/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
MpiDefault=none
ReturnToService=2
# Declared resources count (not the probed ones): the profile's requests fit on this small machine.
SlurmdParameters=config_overrides
GresTypes=gpu
# Finished jobs stay visible to squeue/scontrol for an hour (the status command needs >= 300 s).
MinJobAge=3600
KillWait=30
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=16 RealMemory=65536 Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
# The fake GPU: /dev/null as its device file (a gres without File= counts 0 on 22.05 and drains the node).
# Nothing is bound or constrained (no cgroups): the jobs only request it.
{
    echo "# Written by tests/slurm/run.sh"
    echo "NodeName=$NODE Name=gpu File=/dev/null"
} >"$ETC/gres.conf"
mkdir -p /etc/slurm
for name in slurm.conf gres.conf; do
    if [ -e "/etc/slurm/$name" ]; then
        grep -q "Written by tests/slurm/run.sh" "/etc/slurm/$name" 2>/dev/null ||
            mv "/etc/slurm/$name" "$WORK/etc/$name.original"
    fi
    cp "$ETC/$name" "/etc/slurm/$name"
done
INSTALLED_CONF=1

if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "munged already running"
else
    [ -s /etc/munge/munge.key ] || {
        mkdir -p /etc/munge
        dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        chmod 400 /etc/munge/munge.key
    }
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown -R munge: /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    runuser -u munge -- /usr/sbin/munged --pid-file="$MUNGE_PID" 2>"$WORK/log/munged.err" ||
        /usr/sbin/munged --force --pid-file="$MUNGE_PID" 2>>"$WORK/log/munged.err" ||
        skip "munged does not start: $(tail -1 "$WORK/log/munged.err")"
    STARTED_MUNGE=1
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n | unmunge >/dev/null 2>&1 || skip "munged started but does not answer"
    say "munged started"
fi

slurmctld -f "$SLURM_CONF" -i || skip "slurmctld does not start: $(tail -3 "$WORK/log/slurmctld.log" 2>/dev/null)"
slurmd -f "$SLURM_CONF" || skip "slurmd does not start: $(tail -3 "$WORK/log/slurmd.log" 2>/dev/null)"
state=""
for _ in $(seq 60); do
    state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true)"
    [ "$state" = idle ] && break
    sleep 1
done
if [ "$state" != idle ]; then
    tail -5 "$WORK/log/slurmctld.log" "$WORK/log/slurmd.log" 2>/dev/null
    skip "node $NODE is '${state:-unknown}', not idle, after 60 s"
fi
say "SLURM up: node $NODE idle"
sinfo -o "%P %a %D %T %c %m %G"

# -- 3. the demo DAG through the profile ------------------------------------------------------------------
RUN="$WORK/run"
mkdir -p "$RUN"
"$PYTHON" - "$REPO" "$RUN" "$QUICK" <<'EOF'
import shutil, sys
from pathlib import Path

import yaml

repo, run, quick = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
config = yaml.safe_load((repo / "config.yaml").read_text())
# One fake GPU: train and evaluate request it (--gpus=1) and run on the CPU (no CUDA here).
config["train"]["gpus"] = 1
if quick:  # the tiny capture of the tests, 5 training steps, the first variant only
    config["synthetic"].update(
        n_subjects=2, n_cameras=6, frames_per_segment=2, downsample=32, min_missing=2, seed=3
    )
    config["train"].update(steps=5, n_supervision=2, num_workers=0)
    config["evaluate"]["max_items"] = 2
    first = next(iter(config["variants"]))
    config["variants"] = {first: config["variants"][first]}
(run / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
settings = yaml.safe_load((repo / "workflow/profiles/slurm/profile.yaml").read_text())
if shutil.which("conda") is None:
    settings.pop("use-conda", None)  # no conda here: the rules run in this venv
(run / "profile").mkdir()
(run / "profile" / "profile.yaml").write_text(yaml.safe_dump(settings))
EOF
PROFILE="$REPO/workflow/profiles/slurm"
command -v conda >/dev/null || PROFILE="$RUN/profile"

MODE=$([ "$QUICK" = 1 ] && echo quick || echo full)
say "running the $MODE demo DAG through $PROFILE in $RUN"
DAG_START=$(date +%s)
set +e
(
    cd "$RUN" &&
        "$PYTHON" -m snakemake --snakefile "$REPO/Snakefile" --directory "$RUN" \
            --configfile config.yaml \
            --workflow-profile "$PROFILE" \
            --default-resources slurm_account=avat3rtest slurm_partition=cpu runtime=60 mem_mb=4000 \
            --slurm-status-command squeue \
            --slurm-init-seconds-before-status-checks 5 \
            --slurm-keep-successful-logs
) >"$WORK/snakemake.log" 2>&1
RC=$?
set -e
DAG_S=$(($(date +%s) - DAG_START))

# -- 4. checks and summary --------------------------------------------------------------------------------
echo "---- snakemake (last lines of $WORK/snakemake.log)"
tail -n 15 "$WORK/snakemake.log"
echo "---- jobs SLURM ran (scontrol show job: no accounting database here, so sacct has no records)"
if sacct -n -X -o JobID >/dev/null 2>&1; then
    sacct -X -o JobID,JobName%30,Partition,AllocCPUS,ReqTRES%40,State,Elapsed,ExitCode | head -60
else
    scontrol -o show job 2>/dev/null | "$PYTHON" -c '
import collections, re, sys
rows = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in sys.stdin if "JobId=" in line]
count = collections.Counter()
for job in rows:
    rule = job.get("Comment", "").removeprefix("rule_").split("_wildcards_")[0] or job.get("JobName", "")
    tres = job.get("TresPerJob") or job.get("TresPerNode") or "-"
    count[(rule, job.get("Partition", "?"), tres, job.get("JobState", "?"), job.get("ExitCode", "?"))] += 1
print(f"{len(rows)} jobs known to slurmctld")
print("{:<20} {:<6} {:<14} {:<10} {:<6} {}".format("rule", "part", "gres", "state", "exit", "jobs"))
for (rule, part, tres, state, code), n in sorted(count.items()):
    print(f"{rule:<20} {part:<6} {tres:<14} {state:<10} {code:<6} {n}")
'
fi
squeue -o "%i %j %P %T %M" | head -5

fail() {
    echo "FAILED: tests/slurm/run.sh ($MODE): $*"
    STATUS=1
    exit 1
}
[ "$RC" = 0 ] || fail "snakemake exited $RC (log: $WORK/snakemake.log, SLURM job logs: $RUN/.snakemake/slurm_logs)"
for output in results/dataset_index.json results/evaluate/base/metrics.json results/evaluate/base/grid.png \
    results/train/base/model.pt; do
    [ -s "$RUN/$output" ] || fail "missing output $output"
done
SUBMITTED=$(grep -c "has been submitted with SLURM jobid" "$WORK/snakemake.log" || true)
[ "$SUBMITTED" -gt 0 ] || fail "no job went through sbatch"
echo "$SUBMITTED jobs submitted with sbatch"
"$PYTHON" - "$RUN" <<'EOF' || fail "outputs do not check out"
import json, sys
from pathlib import Path

from avat3r_core.store.manifest import verify_store

run = Path(sys.argv[1])
index = json.loads((run / "results/dataset_index.json").read_text())
for subject in index["subjects"]:
    for store in ("matting", "crops", "positions", "features", "shard"):
        bad = verify_store(run / "results" / subject / f"{store}.zarr")
        assert not bad, (subject, store, bad)
metrics = json.loads((run / "results/evaluate/base/metrics.json").read_text())
assert metrics["views_scored"] > 0, metrics
print(f"outputs verified: {len(index['subjects'])} subjects' stores against their manifests, "
      f"evaluation scored {metrics['views_scored']} views")
EOF
STATUS=0
say "PASSED: $MODE demo DAG through the SLURM profile in ${DAG_S}s (whole script $(($(date +%s) - START))s)"
