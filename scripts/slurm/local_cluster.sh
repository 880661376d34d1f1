#!/usr/bin/env bash
# A real SLURM cluster on this one machine, for tests and for trying `hydra/launcher=slurm` (docs/slurm.md).
#
#   scripts/slurm/local_cluster.sh start DIR [NODES]   # NODES = 1 or 2 (default 2); prints `source DIR/env.sh`
#   scripts/slurm/local_cluster.sh stop DIR            # cancels its jobs, stops exactly the daemons it started
#
# Installs nothing: needs Debian/Ubuntu's `slurm-wlm` and `munge` packages and root (slurmd runs jobs as their
# user; munged runs as the munge user). Everything lives in DIR: slurm.conf (SLURM_CONF), state, spool, logs,
# the daemons' PIDs, its own munge socket, and bin/sacct (accounting is off; submitit needs sacct to see a job's
# end). DIR/env.sh sets SLURM_CONF and puts DIR/bin first on PATH. Two nodes share 127.0.0.1 with one slurmd each
# (own port, %n in its spool/pid/log paths); their names must resolve (Lightning's master address is the first
# node's name): when they do not, `start` adds one 127.0.0.1 line to /etc/hosts and `stop` removes that line.
# Choices that keep tests short: cred_expire=10 (a requeued job otherwise waits 121 s to start again), no
# cgroups (proctrack/linuxproc, task/none), CPUs split between the nodes so jobs never ask for more than exists.
set -euo pipefail

usage() { echo "usage: $0 start DIR [1|2] | stop DIR" >&2; exit 2; }
[ $# -ge 2 ] || usage
action=$1
dir=$(mkdir -p "$2" && cd "$2" && pwd)
nodes=${3:-2}
here=$(cd "$(dirname "$0")" && pwd)
wait_s=${LOCAL_CLUSTER_WAIT_S:-60}
host_marker="# lightning-llm local_cluster.sh $dir"

die() { echo "local_cluster.sh: $*" >&2; exit 1; }

free_ports() {  # N distinct free TCP ports on 127.0.0.1
    python3 - "$1" <<'EOF'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

record() { echo "$1 $2" >> "$dir/pids"; }

start_daemon() {  # name, command...: start in the background, record its PID
    local name=$1; shift
    "$@" > "$dir/log/$name.out" 2>&1 &
    record "$name" $!
}

stop_cluster() {
    local munge_dir=""
    [ -f "$dir/munge_dir" ] && munge_dir=$(cat "$dir/munge_dir")
    if [ -f "$dir/env.sh" ] && [ -f "$dir/pids" ] && grep -q '^slurmctld ' "$dir/pids"; then
        # Jobs first, while slurmd can still end their steps.
        export SLURM_CONF="$dir/slurm.conf"
        if ids=$(timeout 10 squeue -h -o %A 2>/dev/null) && [ -n "$ids" ]; then
            timeout 10 scancel $ids 2>/dev/null || true
            for _ in $(seq 1 "$wait_s"); do
                [ -z "$(timeout 10 squeue -h -t RUNNING,COMPLETING -o %A 2>/dev/null || true)" ] && break
                sleep 1
            done
        fi
    fi
    if [ -f "$dir/pids" ]; then
        # Exactly the recorded daemons (slurmds, slurmctld, munged last), each checked to still be ours.
        tac "$dir/pids" | while read -r name pid; do
            if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -e "$dir" -e "$munge_dir"; then
                kill -TERM "$pid" 2>/dev/null || true
                for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
                kill -KILL "$pid" 2>/dev/null || true
            fi
        done
        rm -f "$dir/pids"
    fi
    [ -n "$munge_dir" ] && rm -rf "$munge_dir" && rm -f "$dir/munge_dir"
    if grep -qF "$host_marker" /etc/hosts 2>/dev/null; then
        grep -vF "$host_marker" /etc/hosts > "$dir/hosts.new" && cat "$dir/hosts.new" > /etc/hosts
        rm -f "$dir/hosts.new"
    fi
}

case $action in
stop)
    stop_cluster
    echo "local cluster in $dir stopped"
    exit 0 ;;
start) ;;
*) usage ;;
esac

[ "$nodes" = 1 ] || [ "$nodes" = 2 ] || usage
for tool in munged slurmctld slurmd sinfo scontrol setpriv python3; do
    command -v "$tool" > /dev/null || die "$tool not found: install slurm-wlm and munge (apt-get install slurm-wlm munge)"
done
[ "$(id -u)" = 0 ] || die "run as root (slurmd starts jobs as their users)"
[ -r /etc/munge/munge.key ] || die "/etc/munge/munge.key missing (the munge package creates it)"
[ -f "$dir/pids" ] && die "$dir already has a cluster (stop it first)"

trap 'status=$?; [ $status = 0 ] || { echo "local_cluster.sh: start failed; logs in $dir/log" >&2; stop_cluster; }' EXIT

names=(llm-node1 llm-node2)
names=("${names[@]:0:$nodes}")
unresolved=()
for name in "${names[@]}"; do getent hosts "$name" > /dev/null || unresolved+=("$name"); done
if [ ${#unresolved[@]} -gt 0 ]; then
    [ -w /etc/hosts ] || die "node names ${unresolved[*]} do not resolve: add '127.0.0.1 ${unresolved[*]}' to /etc/hosts"
    echo "127.0.0.1 ${unresolved[*]} $host_marker" >> /etc/hosts
fi

mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/bin"
: > "$dir/pids"
cpus=$(nproc)
per_node=$(( cpus / nodes > 0 ? cpus / nodes : 1 ))
read -r -a ports <<< "$(free_ports $(( nodes + 1 )))"

# munged of our own (own socket), as the munge user, in the foreground so that $! is its PID. Its files are
# outside DIR (DIR may sit in a directory only root can enter, as pytest's are), in a directory recorded here.
munge_dir=$(mktemp -d /tmp/llm-munge.XXXXXX)
echo "$munge_dir" > "$dir/munge_dir"
chown munge:munge "$munge_dir"
chmod 755 "$munge_dir"  # munged: the socket directory must be searchable by all
socket="$munge_dir/munge.socket"
start_daemon munged setpriv --reuid=munge --regid=munge --init-groups munged -F --socket="$socket" \
    --pid-file="$munge_dir/munged.pid" --seed-file="$munge_dir/munged.seed" --log-file="$munge_dir/munged.log"
munged_pid=$(tail -1 "$dir/pids" | cut -d' ' -f2)
for _ in $(seq 1 $(( wait_s * 5 ))); do [ -S "$socket" ] || ! kill -0 "$munged_pid" 2>/dev/null && break; sleep 0.2; done
[ -S "$socket" ] || die "munged did not start: $(tail -1 "$munge_dir/munged.log" 2>/dev/null)"

ctl_host=$(hostname -s)
{
    echo "ClusterName=llmlocal"
    echo "SlurmctldHost=$ctl_host(127.0.0.1)"
    echo "SlurmctldPort=${ports[0]}"
    echo "SlurmUser=root"
    echo "SlurmdUser=root"
    echo "AuthType=auth/munge"
    echo "CredType=cred/munge"
    echo "AuthInfo=cred_expire=10,socket=$socket"
    echo "ProctrackType=proctrack/linuxproc"
    echo "TaskPlugin=task/none"
    echo "JobAcctGatherType=jobacct_gather/none"
    echo "AccountingStorageType=accounting_storage/none"
    echo "SelectType=select/cons_tres"
    echo "SelectTypeParameters=CR_Core"
    echo "SchedulerType=sched/backfill"
    echo "MpiDefault=none"
    echo "ReturnToService=2"
    echo "MinJobAge=3600"
    echo "KillWait=10"
    echo "StateSaveLocation=$dir/state"
    echo "SlurmctldPidFile=$dir/slurmctld.pid"
    echo "SlurmctldLogFile=$dir/log/slurmctld.log"
    echo "SlurmdSpoolDir=$dir/spool/%n"
    echo "SlurmdPidFile=$dir/slurmd.%n.pid"
    echo "SlurmdLogFile=$dir/log/slurmd.%n.log"
    for i in "${!names[@]}"; do
        echo "NodeName=${names[$i]} NodeAddr=127.0.0.1 Port=${ports[$((i + 1))]} CPUs=$per_node State=UNKNOWN"
    done
    echo "PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
} > "$dir/slurm.conf"
export SLURM_CONF="$dir/slurm.conf"

start_daemon slurmctld slurmctld -D -i -f "$SLURM_CONF"
for name in "${names[@]}"; do
    mkdir -p "$dir/spool/$name"
    start_daemon "slurmd-$name" slurmd -D -N "$name" -f "$SLURM_CONF"
done

ln -sf "$here/sacct" "$dir/bin/sacct"
cat > "$dir/env.sh" <<EOF
export SLURM_CONF="$dir/slurm.conf"
export PATH="$dir/bin:\$PATH"
EOF

for _ in $(seq 1 $(( wait_s * 2 ))); do
    states=$(timeout 10 sinfo -h -N -o "%N %t" 2>/dev/null || true)
    if [ "$(grep -c ' idle$' <<< "$states" || true)" = "$nodes" ]; then
        echo "local cluster up: ${names[*]} ($per_node CPU(s) each) in $dir; use it with: source $dir/env.sh"
        exit 0
    fi
    sleep 0.5
done
die "nodes not idle after ${wait_s} s: $(tr '\n' ' ' <<< "$states")"
