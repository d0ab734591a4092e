#!/usr/bin/env bash
# Backup-proxy OS tuning: guest disks hot-added for backup are never scanned, activated,
# assembled or mounted (LVM, MD, multipath, udisks); they belong to the vbproxy-disk group;
# I/O scheduler none; network buffers and dirty-page limits.
set -euo pipefail
P="${VBPROXY_PROVISION_DIR:-/tmp/vbproxy-provision}"
F="$P/files"

install -D -m 0644 "$F/lvm/lvmlocal.conf" /etc/lvm/lvmlocal.conf
install -D -m 0644 "$F/mdadm/mdadm.conf" /etc/mdadm/mdadm.conf
install -D -m 0644 "$F/multipath.conf" /etc/multipath.conf
# Mask the udev rules that would activate LVM or assemble MD arrays on a hot-add event.
mkdir -p /etc/udev/rules.d
for r in 64-md-raid-assembly.rules 69-lvm.rules 69-lvm-metad.rules 69-dm-lvm.rules; do
  ln -sf /dev/null "/etc/udev/rules.d/$r"
done
systemctl mask lvm2-monitor.service mdmonitor.service mdcheck_start.timer mdcheck_continue.timer \
  mdmonitor-oneshot.timer 2>/dev/null || true

# The system disk: identified by its partition table id, which build.sh sets, or read from the
# disk holding / when provisioning runs inside the VM (packer).
ptuuid="${VBPROXY_SYSTEM_DISK_PTUUID:-}"
if [[ -z "$ptuuid" ]]; then
  rootdev="$(findmnt -n -o SOURCE /)"
  ptuuid="$(lsblk -n -d -o PTUUID "/dev/$(lsblk -n -d -o PKNAME "$rootdev")")"
fi
[[ "$ptuuid" =~ ^[0-9a-fA-F-]+$ ]] || { echo "30-tuning.sh: cannot tell the system disk's partition table id" >&2; exit 1; }
sed "s/@@PTUUID@@/${ptuuid,,}/g" "$F/udev/60-vbproxy-system-disk.rules.in" > /etc/udev/rules.d/60-vbproxy-system-disk.rules
install -m 0644 "$F/udev/61-vbproxy-hotadd.rules" /etc/udev/rules.d/61-vbproxy-hotadd.rules

install -D -m 0644 "$F/sysctl/90-vbproxy.conf" /etc/sysctl.d/90-vbproxy.conf
