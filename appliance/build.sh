#!/usr/bin/env bash
# npm run appliance:build — builds the vbproxy OVA on this machine, without an installer ISO and
# without booting anything:
#   1. npm run build, npm pack, and the production dependencies staged with the host's Node 20
#      (same ABI as Debian 13's nodejs 20) so the image needs no npm and no compiler;
#   2. mmdebstrap: a Debian 13 (trixie) root file system from the Debian mirror, with a kernel and
#      GRUB, then the same provisioning scripts as the Packer template (appliance/provision/) in it;
#   3. a GPT disk image made without loop devices or mounts: an EFI system partition (mkfs.vfat +
#      mtools, holding a standalone GRUB EFI binary) and an ext4 root made by mkfs.ext4 -d;
#   4. appliance/ova.sh: streamOptimized VMDK, OVF descriptor, SHA-256 manifest, OVA.
# Needs root (mmdebstrap --mode=root and chroot). Environment:
#   VBPROXY_APPLIANCE_OUT  output directory (default /var/tmp/vbproxy-appliance, outside the
#                          repository so that lint and git never see the root file system)
#   DEBIAN_MIRROR          Debian mirror (default: the host's deb.debian.org)
#   VBPROXY_DISK_SIZE      system disk size (default 16G; sparse)
#   VBPROXY_KEEP_WORK=1    keep the root file system and the raw disk image in <out>/work
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${VBPROXY_APPLIANCE_OUT:-/var/tmp/vbproxy-appliance}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
disk_size="${VBPROXY_DISK_SIZE:-16G}"
esp_mib=128
started=$(date +%s)

say() { echo "appliance:build: [$(( $(date +%s) - started ))s] $*"; }
fail() { echo "appliance:build: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || fail "needs root (mmdebstrap --mode=root and chroot); run it as root or in a root container"
for tool in mmdebstrap mkfs.ext4 mkfs.vfat mmd mcopy sfdisk qemu-img node npm; do
  command -v "$tool" >/dev/null || fail "$tool is missing: apt-get install mmdebstrap e2fsprogs dosfstools mtools fdisk qemu-utils"
done

version="$(node -p "require('$repo/package.json').version")"
name="vbproxy-$version"
work="$out/work"
rm -rf "$work"
mkdir -p "$work/provision"

# 1. vbproxy itself
say "building vbproxy $version and its npm pack tarball"
(cd "$repo" && npm run --silent build)
tgz="$(cd "$repo" && npm pack --silent --pack-destination "$work" | tail -n1)"
mv "$work/$tgz" "$work/provision/vbproxy.tgz"
say "installing production dependencies (host Node $(node --version))"
npm install --global --prefix "$work/npm" --omit=dev --no-audit --no-fund --loglevel=error "$work/provision/vbproxy.tgz" >/dev/null
mkdir -p "$work/provision/node_modules"
mv "$work/npm/lib/node_modules/vbproxy" "$work/provision/node_modules/vbproxy"
cp -r "$repo/appliance/files" "$work/provision/files"
cp -r "$repo/systemd" "$work/provision/systemd"
mkdir -p "$work/provision/docs" && cp "$repo/docs/appliance.md" "$work/provision/docs/"

# The system disk's GPT id: marks it for udev (never handed to the worker as a hot-added disk).
ptuuid="$(cat /proc/sys/kernel/random/uuid)"

# 2. root file system
say "mmdebstrap trixie from $mirror"
cat > "$work/customize.sh" <<'EOF'
#!/bin/bash
# Runs inside the new root file system (mmdebstrap customize hook, chroot).
set -euo pipefail
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d
for s in /tmp/vbproxy-provision/scripts/*.sh; do
  echo "--- $s"
  VBPROXY_PROVISION_DIR=/tmp/vbproxy-provision VBPROXY_SYSTEM_DISK_PTUUID="$1" bash "$s"
done
rm -f /usr/sbin/policy-rc.d
EOF
cp -r "$repo/appliance/provision" "$work/provision/scripts"
cat > "$work/grub.cfg" <<'EOF'
# Standalone GRUB (EFI) of the vbproxy appliance: boots the kernel Debian links at / or /boot.
search --no-floppy --label vbproxy-root --set=root
set timeout=1
menuentry "vbproxy" {
  if [ -e /vmlinuz ]; then
    linux /vmlinuz root=LABEL=vbproxy-root ro console=ttyS0,115200 console=tty0
    initrd /initrd.img
  else
    linux /boot/vmlinuz root=LABEL=vbproxy-root ro console=ttyS0,115200 console=tty0
    initrd /boot/initrd.img
  fi
}
EOF
mmdebstrap --mode=root --variant=minbase --components=main \
  --include=systemd,systemd-sysv,udev,dbus,kmod,iproute2,iputils-ping,procps,login,passwd,linux-image-amd64,initramfs-tools,grub-efi-amd64-bin,e2fsprogs \
  --setup-hook='mkdir -p "$1/etc/kernel" && printf "do_symlinks = yes\n" > "$1/etc/kernel-img.conf"' \
  --customize-hook="cp -r '$work/provision' \"\$1/tmp/vbproxy-provision\"" \
  --customize-hook="cp '$work/customize.sh' \"\$1/tmp/customize.sh\" && chroot \"\$1\" bash /tmp/customize.sh $ptuuid" \
  --customize-hook="cp '$work/grub.cfg' \"\$1/tmp/grub-embed.cfg\" && chroot \"\$1\" grub-mkstandalone -O x86_64-efi -o /tmp/BOOTX64.EFI --modules='part_gpt ext2 search_label linux normal echo test' 'boot/grub/grub.cfg=/tmp/grub-embed.cfg' && mv \"\$1/tmp/BOOTX64.EFI\" '$work/BOOTX64.EFI'" \
  --customize-hook='printf "LABEL=vbproxy-root / ext4 errors=remount-ro 0 1\n" > "$1/etc/fstab"; echo vbproxy > "$1/etc/hostname"; rm -rf "$1/tmp/"* "$1/var/cache/apt/archives/"*.deb' \
  trixie "$work/rootfs" "$mirror"
say "root file system: $(du -sh "$work/rootfs" | cut -f1)"

# 3. disk image: GPT, ESP (FAT32, GRUB), ext4 root; no loop device, no mount
say "disk image ($disk_size, sparse)"
disk="$work/$name.raw"
truncate -s "$disk_size" "$disk"
sfdisk --quiet "$disk" <<EOF
label: gpt
label-id: $ptuuid
start=2048, size=${esp_mib}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=ESP
type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=vbproxy-root
EOF
read -r esp_start esp_size root_start root_size < <(sfdisk --json "$disk" | node -e '
  let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
    const p = JSON.parse(s).partitiontable.partitions;
    console.log(p[0].start, p[0].size, p[1].start, p[1].size);
  });')
esp="$work/esp.img"
truncate -s $((esp_size * 512)) "$esp"
mkfs.vfat -F 32 -n VBPROXY-ESP "$esp" >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT
mcopy -i "$esp" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI
dd if="$esp" of="$disk" bs=512 seek="$esp_start" conv=notrunc,sparse status=none
mkfs.ext4 -q -F -L vbproxy-root -E offset=$((root_start * 512)) -d "$work/rootfs" "$disk" $((root_size / 2))k
say "disk image done"

# 4. OVA
mkdir -p "$out"
bash "$repo/appliance/ova.sh" --disk "$disk" --out "$out/$name.ova" --version "$version" --firmware efi
if [[ "${VBPROXY_KEEP_WORK:-}" == 1 ]]; then
  say "work files kept in $work (root file system, raw disk image)"
else
  rm -rf "$work"
fi
say "done: $out/$name.ova ($(du -h "$out/$name.ova" | cut -f1))"
