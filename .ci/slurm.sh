#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for tests/test_sweep.py's SLURM test (issue #38): Debian's slurm-wlm and
# munge, this machine as the only node (its cores and memory), one default partition. Idempotent: a second run
# restarts the daemons. Needs root (apt and the daemons), as CI and the developers' machines are.
set -euo pipefail

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null
fi

# munge authenticates the daemons to each other: one key, owned by its user
if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
pkill -x munged 2>/dev/null || true
su -s /bin/sh munge -c "munged --force"

host=$(hostname -s)
cpus=$(nproc)
mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
# No cgroups in a container: processes are tracked by parent id, tasks are not confined, nothing is accounted.
cat > /etc/slurm/slurm.conf <<EOF
ClusterName=toolkit-ci
SlurmctldHost=${host}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# a cancelled job is killed 2 s after its SIGTERM (30 s by default; submitit ignores the SIGTERM)
KillWait=2
SchedulerType=sched/backfill
MpiDefault=none
NodeName=${host} CPUs=${cpus} RealMemory=${mem_mb} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
EOF
rm -f /etc/slurm/cgroup.conf  # Debian's 22.05 has no "disabled" cgroup plugin; without the file slurmd starts

pkill -x slurmd 2>/dev/null || true
pkill -x slurmctld 2>/dev/null || true
sleep 1
slurmctld -i
slurmd
for _ in $(seq 30); do
    if sinfo -h -o %T 2>/dev/null | grep -qE 'idle|mixed|allocated'; then
        sinfo
        exit 0
    fi
    sleep 1
done
echo "SLURM did not come up; its logs:" >&2
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
