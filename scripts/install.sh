#!/usr/bin/env bash
# One idempotent set-up for README, CI and the Vagrantfile: Debian packages, the venv,
# and Open vSwitch running (without systemd, which containers and CI runners may lack).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VCLAB_VENV:-$here/.venv}"

apt_packages=(
  mininet openvswitch-switch iperf3 tgt libiscsi-bin libiscsi-dev ethtool iputils-ping
  net-tools bridge-utils tcpdump iproute2 python3-venv python3-dev gcc ruby strace
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "vclab install: apt packages ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's mininet module lives in /usr/bin/python3's dist-packages: the venv must see it.
if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.vclab-installed"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here[test]"
  touch "$stamp"
fi

# The userspace datapath sends on every port through ONE AF_PACKET socket, whose send buffer
# is net.core.wmem_default when ovs-vswitchd starts (208 KiB on Debian). Frames waiting in a
# rate-limited port's queue hold it; once it is full, every send on every port fails (EAGAIN)
# and a flood on one cable starves all the others. Raised before OVS starts (or restarts).
restart=0
wmem=8388608
if [ "$(cat /proc/sys/net/core/wmem_default)" -lt "$wmem" ]; then
  if sysctl -qw net.core.wmem_default="$wmem" 2>/dev/null; then
    restart=1
  else
    echo "vclab install: cannot raise net.core.wmem_default: a flooded cable can starve the others"
  fi
fi
# Each userspace-datapath port receives through its own AF_PACKET socket, created when the port
# is added, with net.core.rmem_default as its buffer (208 KiB on Debian). With userspace TSO a
# storage or vMotion frame is up to 64 KiB, so three of them fill it: while ovs-vswitchd's main
# thread is busy for a few ms, every further frame on that port (probes included) is dropped.
# Under the default experiment's load that was all of the no-fault probe loss (3-28 ms gaps).
# No restart needed: labs built from now on get the larger buffer.
rmem=8388608
if [ "$(cat /proc/sys/net/core/rmem_default)" -lt "$rmem" ]; then
  sysctl -qw net.core.rmem_default="$rmem" 2>/dev/null ||
    echo "vclab install: cannot raise net.core.rmem_default: probes will be lost under load with no fault"
fi
# Open vSwitch: start ovsdb-server/ovs-vswitchd ourselves when they are not running.
if ! ovs-vsctl --timeout=3 show >/dev/null 2>&1; then
  /usr/share/openvswitch/scripts/ovs-ctl start --system-id=random >/dev/null 2>&1 || true
  restart=0
fi
# TCP through the userspace datapath hangs without TSO support (checksum offload on veths).
if [ "$(ovs-vsctl --timeout=5 get Open_vSwitch . other_config:userspace-tso-enable 2>/dev/null | tr -d '"')" != "true" ]; then
  ovs-vsctl --timeout=5 set Open_vSwitch . other_config:userspace-tso-enable=true
  restart=1
fi
if [ "$restart" = 1 ]; then
  /usr/share/openvswitch/scripts/ovs-ctl restart --system-id=random >/dev/null 2>&1 || true
fi
ovs-vsctl --timeout=5 show >/dev/null
echo "vclab install: ready ($venv)"
