#!/usr/bin/env bash
# A throw-away single-node Slurm and SGE, from Debian's packages, for tests/test_cluster_schedulers.py.
#
# Sourced by .ci/run. A developer (root on Debian; no systemd needed) can use it too, either way:
#   source .ci/schedulers.sh && goemo_schedulers_start   # exports GOEMO_TEST_SLURM=1 / GOEMO_TEST_SGE=1
#   .venv/bin/python -m pytest -q tests/test_cluster_schedulers.py
#   goemo_schedulers_stop
# or, from another shell:   eval "$(bash .ci/schedulers.sh start)"   ...   bash .ci/schedulers.sh stop
#
# Everything lives in one temp folder ($GOEMO_SCHED_DIR: configuration, spool, state, logs,
# the munge key and socket), nothing in /etc, and every daemon is started here in the
# foreground (&) with its pid kept in $GOEMO_SCHED_DIR/pids, so stop ends exactly those.
# Slurm: munged, `slurmctld -D`, `slurmd -D`, without cgroups (proctrack/linuxproc, task/none),
# one node with this machine's cores and memory in partition "debug", no accounting (states
# come from `scontrol show job`, kept an hour). SGE: its own SGE_ROOT holding one cell,
# `sge_qmaster` and `sge_execd` with SGE_ND=1, this host's name aliased to localhost
# (host_aliases), jobs of root allowed (min_uid/min_gid 0), a parallel environment smp and a
# queue all.q with a slot per core and no load thresholds (a busy CI machine would otherwise
# hold every job), scheduling every second. Jobs must ask for no GPU (`--gpus 0`).

# Free TCP port on 127.0.0.1 (as .ci/run's PostgreSQL block picks one).
goemo_sched_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Start a daemon in the foreground of a background job; its pid goes to $GOEMO_SCHED_DIR/pids.
goemo_sched_spawn() {
    local name=$1
    shift
    "$@" >"$GOEMO_SCHED_DIR/$name.out" 2>&1 &
    echo "$! $name" >>"$GOEMO_SCHED_DIR/pids"
}

# Wait up to $1 seconds for the command after it to succeed.
goemo_sched_wait() {
    local limit=$1 waited=0
    shift
    until "$@" >/dev/null 2>&1; do
        [ "$waited" -ge "$limit" ] && return 1
        sleep 1
        waited=$((waited + 1))
    done
}

goemo_sched_install() {
    local missing=0 tool
    for tool in munged slurmctld slurmd sbatch /usr/lib/gridengine/sge_qmaster /usr/lib/gridengine/sge_execd qsub; do
        command -v "$tool" >/dev/null 2>&1 || missing=1
    done
    [ "$missing" = 0 ] && return 0
    [ "$(id -u)" = 0 ] || { echo "not root: cannot install Slurm and SGE" >&2; return 1; }
    echo "installing Slurm (slurm-wlm) and SGE (gridengine) for the real-scheduler tests..." >&2
    { DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq munge slurmctld slurmd slurm-client \
            gridengine-master gridengine-exec gridengine-client; } >/dev/null
}

goemo_slurm_start() {
    local dir="$GOEMO_SCHED_DIR/slurm" host mem
    command -v slurmctld >/dev/null 2>&1 && command -v munged >/dev/null 2>&1 || return 1
    host=$(hostname -s)
    mem=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.95)}' /proc/meminfo)  # a little under slurmd's own count
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge" || return 1
    chmod 755 "$dir" "$dir/munge"  # munged wants its socket's folder reachable by all
    head -c 1024 /dev/urandom >"$dir/munge/munge.key" && chmod 400 "$dir/munge/munge.key" || return 1
    goemo_sched_spawn munged munged -F --force --key-file="$dir/munge/munge.key" \
        --socket="$dir/munge/munge.socket" --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed"
    goemo_sched_wait 15 test -S "$dir/munge/munge.socket" || return 1
    cat >"$dir/slurm.conf" <<EOF || return 1
ClusterName=goemo-ci
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(goemo_sched_port)
SlurmdPort=$(goemo_sched_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MinJobAge=3600
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$dir/slurm.conf"
    goemo_sched_spawn slurmctld slurmctld -D -f "$SLURM_CONF"
    goemo_sched_spawn slurmd slurmd -D -f "$SLURM_CONF"
    goemo_sched_wait 60 goemo_slurm_idle || { echo "Slurm's node never became idle: see $dir/*.log" >&2; return 1; }
    export GOEMO_TEST_SLURM=1
}
goemo_slurm_idle() { [ "$(sinfo -h -N -o %T 2>/dev/null)" = idle ]; }

goemo_sge_start() {
    local root="$GOEMO_SCHED_DIR/sge" spool="$GOEMO_SCHED_DIR/sge-spool" x
    [ -x /usr/lib/gridengine/sge_qmaster ] && [ -d /var/lib/gridengine/util ] || return 1
    mkdir -p "$root/default/common" "$spool/qmaster" "$spool/execd" || return 1
    for x in bin lib util utilbin; do ln -sfn "/var/lib/gridengine/$x" "$root/$x" || return 1; done
    cat >"$root/default/common/bootstrap" <<EOF || return 1
admin_user              root
default_domain          none
ignore_fqdn             true
spooling_method         classic
spooling_lib            libspoolc
spooling_params         $root/default/common;$spool/qmaster
binary_path             /usr/sbin
qmaster_spool_dir       $spool/qmaster
security_mode           none
listener_threads        2
worker_threads          2
scheduler_threads       1
EOF
    # SGE names hosts by reverse lookup: 127.0.0.1 is "localhost", whatever hostname says
    if [ "$(hostname)" != localhost ]; then echo "localhost $(hostname)" >"$root/default/common/host_aliases"; fi
    echo localhost >"$root/default/common/act_qmaster"
    export SGE_ROOT="$root" SGE_CELL=default
    export SGE_QMASTER_PORT; SGE_QMASTER_PORT=$(goemo_sched_port)
    export SGE_EXECD_PORT; SGE_EXECD_PORT=$(goemo_sched_port)
    sed -e "s#^execd_spool_dir .*#execd_spool_dir $spool/execd#" -e 's/^min_uid .*/min_uid 0/' \
        -e 's/^min_gid .*/min_gid 0/' -e 's/flush_time=[0-9:]*/flush_time=00:00:01/' \
        /usr/share/gridengine/default-configuration >"$spool/configuration" || return 1
    /usr/lib/gridengine/spoolinit classic libspoolc "$root/default/common;$spool/qmaster" init >/dev/null \
        && /usr/lib/gridengine/spooldefaults configuration "$spool/configuration" \
        && /usr/lib/gridengine/spooldefaults complexes /usr/share/gridengine/util/resources/centry \
        && /usr/lib/gridengine/spooldefaults usersets /usr/share/gridengine/util/resources/usersets \
        && /usr/lib/gridengine/spooldefaults managers root || return 1
    goemo_sched_spawn sge_qmaster env SGE_ND=1 /usr/lib/gridengine/sge_qmaster
    goemo_sched_wait 30 qconf -sh || { echo "sge_qmaster did not answer: see $GOEMO_SCHED_DIR/sge_qmaster.out" >&2; return 1; }
    goemo_sge_qconf -as localhost || return 1
    qconf -ssconf | sed -e 's/^schedule_interval .*/schedule_interval 0:0:1/' \
        -e 's/^flush_submit_sec .*/flush_submit_sec 1/' -e 's/^flush_finish_sec .*/flush_finish_sec 1/' \
        -e 's/^job_load_adjustments .*/job_load_adjustments NONE/' \
        -e 's/^load_adjustment_decay_time .*/load_adjustment_decay_time 0:0:0/' >"$spool/scheduler" \
        && goemo_sge_qconf -Msconf "$spool/scheduler" || return 1
    printf '%s\n' "hostname localhost" "load_scaling NONE" "complex_values NONE" "user_lists NONE" \
        "xuser_lists NONE" "projects NONE" "xprojects NONE" "usage_scaling NONE" "report_variables NONE" \
        >"$spool/exechost" && goemo_sge_qconf -Ae "$spool/exechost" || return 1
    sed -e 's/^pe_name .*/pe_name smp/' -e 's/^slots .*/slots 999/' /usr/share/gridengine/util/resources/pe/smp \
        >"$spool/pe" && goemo_sge_qconf -Ap "$spool/pe" || return 1
    # qconf -aq edits a template with $EDITOR: this one fills it in
    cat >"$spool/queue-editor" <<EOF || return 1
#!/bin/sh
sed -i -e 's/^qname .*/qname all.q/' -e 's/^hostlist .*/hostlist localhost/' -e 's/^slots .*/slots $(nproc)/' \
    -e 's/^pe_list .*/pe_list smp/' -e 's/^load_thresholds .*/load_thresholds NONE/' \
    -e 's#^shell .*#shell /bin/bash#' "\$1"
EOF
    chmod +x "$spool/queue-editor" && EDITOR="$spool/queue-editor" goemo_sge_qconf -aq || return 1
    goemo_sched_spawn sge_execd env SGE_ND=1 /usr/lib/gridengine/sge_execd
    goemo_sched_wait 60 goemo_sge_queue_ok || { echo "SGE's queue all.q@localhost never came up: see $GOEMO_SCHED_DIR/sge_*.out" >&2; return 1; }
    export GOEMO_TEST_SGE=1
}
# qconf, quiet unless it fails (it reports successes on stderr)
goemo_sge_qconf() {
    qconf "$@" >>"$GOEMO_SCHED_DIR/qconf.log" 2>&1 || { tail -n 5 "$GOEMO_SCHED_DIR/qconf.log" >&2; return 1; }
}
# all.q@localhost with no state letter (u: execd unheard, E: error, ...) in qstat -f
goemo_sge_queue_ok() { [ "$(qstat -f -q all.q 2>/dev/null | awk '$1 == "all.q@localhost" {print NF}')" = 5 ]; }

goemo_schedulers_start() {
    goemo_sched_install || echo "Slurm/SGE could not be installed: tests/test_cluster_schedulers.py will skip what is missing" >&2
    GOEMO_SCHED_DIR=$(mktemp -d /tmp/goemo-schedulers.XXXXXX) || return 1
    chmod 755 "$GOEMO_SCHED_DIR"
    export GOEMO_SCHED_DIR
    goemo_slurm_start || echo "Slurm could not be started: the real-Slurm test will be skipped" >&2
    goemo_sge_start || echo "SGE could not be started: the real-SGE test will be skipped" >&2
    return 0
}

goemo_schedulers_stop() {
    local pid name waited=0
    [ -n "${GOEMO_SCHED_DIR:-}" ] && [ -d "$GOEMO_SCHED_DIR" ] || return 0
    # jobs a failed test left behind, on these two schedulers only (their settings are in the environment)
    if [ -n "${GOEMO_TEST_SLURM:-}" ]; then scancel -u "$(id -un)" >/dev/null 2>&1 || true; fi
    if [ -n "${GOEMO_TEST_SGE:-}" ]; then qdel -f -u "$(id -un)" >/dev/null 2>&1 || true; fi
    if [ -f "$GOEMO_SCHED_DIR/pids" ]; then
        while read -r pid name; do kill "$pid" 2>/dev/null || true; done <"$GOEMO_SCHED_DIR/pids"
        while read -r pid name; do
            while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 15 ]; do sleep 1; waited=$((waited + 1)); done
            kill -9 "$pid" 2>/dev/null || true
        done <"$GOEMO_SCHED_DIR/pids"
    fi
    rm -rf "$GOEMO_SCHED_DIR"
    unset GOEMO_SCHED_DIR GOEMO_TEST_SLURM GOEMO_TEST_SGE SLURM_CONF SGE_ROOT SGE_CELL SGE_QMASTER_PORT SGE_EXECD_PORT
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then  # run, not sourced
    case "${1:-}" in
        start)
            goemo_schedulers_start
            for var in GOEMO_SCHED_DIR GOEMO_TEST_SLURM SLURM_CONF GOEMO_TEST_SGE SGE_ROOT SGE_CELL SGE_QMASTER_PORT SGE_EXECD_PORT; do
                [ -n "${!var:-}" ] && printf 'export %s=%q\n' "$var" "${!var}"
            done
            ;;
        stop) goemo_schedulers_stop ;;
        *) echo "usage: eval \"\$(bash $0 start)\"  ...  bash $0 stop   (or source it: goemo_schedulers_start / _stop)" >&2; exit 2 ;;
    esac
fi
