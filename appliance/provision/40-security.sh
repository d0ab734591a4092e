#!/usr/bin/env bash
# Security: key-only SSH for the vbadmin account (no root login, no passwords), a firewall that
# admits only SSH and the API port, unattended security upgrades, fresh SSH host keys per appliance.
set -euo pipefail
P="${VBPROXY_PROVISION_DIR:-/tmp/vbproxy-provision}"
F="$P/files"

if ! id vbadmin >/dev/null 2>&1; then
  useradd --create-home --shell /bin/bash --groups sudo --comment "vbproxy administrator" vbadmin
fi
passwd --lock vbadmin >/dev/null
echo 'vbadmin ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vbadmin
chmod 0440 /etc/sudoers.d/vbadmin
install -d -m 0755 /etc/ssh/authorized_keys
passwd --lock root >/dev/null

# Takes effect at the next start of sshd (not now: packer is still connected with a password).
install -D -m 0644 "$F/ssh/50-vbproxy.conf" /etc/ssh/sshd_config.d/50-vbproxy.conf
install -D -m 0644 "$F/ssh/ssh-hostkeys.conf" /etc/systemd/system/ssh.service.d/vbproxy-hostkeys.conf

install -m 0755 "$F/nftables/nftables.conf" /etc/nftables.conf
nft -c -f /etc/nftables.conf 2>/dev/null || echo "40-security.sh: nft cannot check the ruleset here (no netlink in a chroot); checked at boot"
systemctl enable nftables.service

install -m 0644 "$F/apt/20auto-upgrades" /etc/apt/apt.conf.d/20auto-upgrades
install -m 0644 "$F/apt/52vbproxy-unattended-upgrades" /etc/apt/apt.conf.d/52vbproxy-unattended-upgrades

# Secrets are written by first boot with mode 0600; nothing secret exists in the image.
chmod 0750 /etc/vbproxy/secrets
