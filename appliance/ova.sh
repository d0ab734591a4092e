#!/usr/bin/env bash
# Assembles the vbproxy OVA from a disk image (raw or qcow2):
#   1. converts the disk to a streamOptimized VMDK with qemu-img,
#   2. fills in the OVF descriptor (appliance/ovf/vbproxy.ovf.template),
#   3. writes the manifest (SHA-256 of the descriptor and the disk),
#   4. packs a ustar archive in the order OVF requires: descriptor, manifest, then the files
#      in the order of the descriptor's References.
# Usage: appliance/ova.sh --disk IMAGE --out FILE.ova [--version V] [--cpus N] [--memory-mib N]
#                         [--firmware efi|bios]
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
disk="" out="" version="" cpus=2 memory_mib=4096 firmware=efi
while (($# > 0)); do
  case "$1" in
    --disk) disk="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --cpus) cpus="$2"; shift 2 ;;
    --memory-mib) memory_mib="$2"; shift 2 ;;
    --firmware) firmware="$2"; shift 2 ;;
    *) echo "ova.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -n "$disk" && -n "$out" ]] || { echo "usage: ova.sh --disk IMAGE --out FILE.ova [--version V]" >&2; exit 2; }
[[ -f "$disk" ]] || { echo "ova.sh: disk image $disk does not exist" >&2; exit 1; }
[[ "$out" == *.ova ]] || { echo "ova.sh: the output name must end in .ova: $out" >&2; exit 2; }
[[ "$firmware" == bios || "$firmware" == efi ]] || { echo "ova.sh: --firmware is bios or efi, not $firmware" >&2; exit 2; }
[[ "$cpus" =~ ^[0-9]+$ && "$memory_mib" =~ ^[0-9]+$ ]] || { echo "ova.sh: --cpus and --memory-mib take numbers" >&2; exit 2; }
command -v qemu-img >/dev/null || { echo "ova.sh: qemu-img is missing (apt-get install qemu-utils)" >&2; exit 1; }
if [[ -z "$version" ]]; then
  version="$(node -p "require('$here/../package.json').version")"
fi

name="$(basename "$out" .ova)"
work="$(mktemp -d "${TMPDIR:-/tmp}/vbproxy-ova.XXXXXX")"
trap 'rm -rf "$work"' EXIT

vmdk="${name}-disk1.vmdk"
qemu-img convert -O vmdk -o subformat=streamOptimized,adapter_type=lsilogic "$disk" "$work/$vmdk"
capacity="$(qemu-img info --output=json "$disk" | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s)["virtual-size"]))')"
size="$(stat -c %s "$work/$vmdk")"

sed -e "s|@@DISK_FILE@@|$vmdk|g" \
    -e "s|@@DISK_FILE_SIZE@@|$size|g" \
    -e "s|@@DISK_CAPACITY@@|$capacity|g" \
    -e "s|@@VERSION@@|$version|g" \
    -e "s|@@CPUS@@|$cpus|g" \
    -e "s|@@MEMORY_MIB@@|$memory_mib|g" \
    -e "s|@@FIRMWARE@@|$firmware|g" \
    "$here/ovf/vbproxy.ovf.template" > "$work/$name.ovf"
if grep -q '@@' "$work/$name.ovf"; then
  echo "ova.sh: unfilled placeholder in the descriptor: $(grep -o '@@[A-Z_]*@@' "$work/$name.ovf" | sort -u | tr '\n' ' ')" >&2
  exit 1
fi

(cd "$work" && for f in "$name.ovf" "$vmdk"; do
  echo "SHA256($f)= $(sha256sum "$f" | cut -d' ' -f1)"
done) > "$work/$name.mf"

mkdir -p "$(dirname "$out")"
tar --format=ustar --owner=0 --group=0 --numeric-owner --mode=0644 --mtime=@0 \
  -C "$work" -cf "$out.tmp" "$name.ovf" "$name.mf" "$vmdk"
mv "$out.tmp" "$out"
echo "ova.sh: wrote $out ($(stat -c %s "$out") bytes; disk capacity $capacity bytes, VMDK $size bytes)"
