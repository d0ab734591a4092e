#!/usr/bin/env bash
# Debian 13 packages of the appliance: Node.js, PostgreSQL, Redis, VMware Tools, networking,
# firewall, SSH, unattended upgrades. Runs as root in the image (packer) or in its chroot (build.sh).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

. /etc/os-release
if [[ "${VERSION_CODENAME:-}" != trixie ]]; then
  echo "10-packages.sh: expected Debian 13 (trixie), found ${PRETTY_NAME:-unknown}" >&2
  exit 1
fi

P="${VBPROXY_PROVISION_DIR:-/tmp/vbproxy-provision}"
# npm only when vbproxy's dependencies must be installed here (packer); build.sh stages them.
npm=npm
if [[ -d "$P/node_modules/vbproxy" ]]; then npm=""; fi

apt-get update -q
# shellcheck disable=SC2086 # $npm is empty or one word
apt-get install -y -q --no-install-recommends \
  nodejs $npm \
  postgresql redis-server \
  open-vm-tools \
  systemd-resolved systemd-timesyncd \
  nftables openssh-server sudo unattended-upgrades apt-listchanges \
  ca-certificates openssl xorriso \
  less nano curl

# The installer's ifupdown would fight systemd-networkd for the adapter.
apt-get purge -y -q ifupdown isc-dhcp-client 2>/dev/null || true
rm -f /etc/network/interfaces
systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service
# pg_createcluster takes the next free port when 5432 is in use where the image is built (a build
# machine running its own PostgreSQL gets a cluster on 5433): the appliance's cluster is on 5432,
# the port of database.url in the config first boot writes.
for conf in /etc/postgresql/*/main/postgresql.conf; do
  sed -i -E 's/^#?port = [0-9]+/port = 5432/' "$conf"
  grep -q '^port = 5432' "$conf"
done
systemctl enable postgresql.service redis-server.service open-vm-tools.service nftables.service ssh.service

node --version
