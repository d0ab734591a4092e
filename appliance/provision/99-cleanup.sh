#!/usr/bin/env bash
# Seals the image: no build account, no SSH host keys, no machine id (each deployed appliance makes
# its own), no package lists or caches, no logs, no provisioning files.
set -euo pipefail
P="${VBPROXY_PROVISION_DIR:-/tmp/vbproxy-provision}"

if id vbbuild >/dev/null 2>&1; then
  userdel --force --remove vbbuild 2>/dev/null || userdel --force vbbuild
fi
rm -f /etc/sudoers.d/vbbuild
apt-get purge -y -q npm 2>/dev/null || true
apt-get autoremove -y -q --purge
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
rm -f /etc/ssh/ssh_host_*
: > /etc/machine-id
rm -f /var/lib/dbus/machine-id
rm -rf /var/lib/vbproxy/firstboot.done /etc/vbproxy/config.json /etc/vbproxy/secrets/* /var/lib/vbproxy/secrets/*
find /var/log -type f -exec truncate -s 0 {} +
rm -rf /root/.npm /root/.bash_history /tmp/* /var/tmp/*
rm -rf "$P"
