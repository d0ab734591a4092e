#!/usr/bin/env bash
# npm run appliance:smoke — boots the disk of the OVA that appliance:build made, under qemu (TCG
# where KVM does not work), close to how vCenter runs it: vmxnet3 adapter, EFI firmware, a PVSCSI
# controller with a "hot-added" guest disk, and the OVF environment on a CD-ROM (the ISO
# transport). The system disk sits on virtio-scsi because Debian's OVMF cannot boot from PVSCSI.
# User networking with forwarded ports only.
#
#   1. good properties: first boot completes; over SSH (key from the vApp property, forwarded
#      port) the host name, config and secret modes, firewall, services and udev rules are checked;
#      then registration with the lab manager and /healthz and /metrics through the forwarded API port;
#   2. a bad property: first boot stops with a message naming the property on the console.
#
# Environment:
#   VBPROXY_APPLIANCE_OUT   where appliance:build left the OVA (default /var/tmp/vbproxy-appliance)
#   VBPROXY_SMOKE_MANAGER   command that starts the manager on port $VBPROXY_SMOKE_MANAGER_PORT,
#                           accepting the enrollment token in the file $VBPROXY_SMOKE_TOKEN_FILE
#                           (run from the repository root); default: the lab manager,
#                           node dist/src/lab/manager-main.js (built by appliance:build)
#   VBPROXY_SMOKE_TIMEOUT   seconds to wait for first boot (default 900)
#   VBPROXY_SMOKE_ACCEL     qemu accelerator: tcg (default) or kvm
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
out="${VBPROXY_APPLIANCE_OUT:-/var/tmp/vbproxy-appliance}"
timeout_s="${VBPROXY_SMOKE_TIMEOUT:-900}"
version="$(node -p "require('$repo/package.json').version")"
ova="$out/vbproxy-$version.ova"
started=$(date +%s)
failures=()
not_run=()

say() { echo "appliance:smoke: [$(( $(date +%s) - started ))s] $*"; }
fail() { echo "appliance:smoke: $*" >&2; exit 1; }
check() { # check NAME COMMAND...: runs a check and records its result
  local what="$1"; shift
  if "$@"; then say "ok: $what"; else say "FAILED: $what"; failures+=("$what"); fi
}

[[ -f "$ova" ]] || fail "no OVA at $ova: run npm run appliance:build first"
for tool in qemu-system-x86_64 qemu-img xorriso ssh ssh-keygen curl tar; do
  command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install qemu-system-x86 qemu-utils xorriso openssh-client curl)"
done
ovmf_code=/usr/share/OVMF/OVMF_CODE_4M.fd
ovmf_vars=/usr/share/OVMF/OVMF_VARS_4M.fd
[[ -f "$ovmf_code" ]] || fail "EFI firmware $ovmf_code is missing (apt-get install ovmf)"

work="$(mktemp -d "${TMPDIR:-/tmp}/vbproxy-smoke.XXXXXX")"
qemu_pid=""
manager_pid=""
cleanup() {
  [[ -n "$qemu_pid" ]] && kill "$qemu_pid" 2>/dev/null || true
  [[ -n "$manager_pid" ]] && kill "$manager_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }

# The OVA's own disk, as vCenter would import it.
tar -xf "$ova" -C "$work" --wildcards '*.vmdk' '*.ovf'
vmdk="$(ls "$work"/*.vmdk)"
say "OVA $(basename "$ova"): $(du -h "$ova" | cut -f1)"

ssh-keygen -q -t ed25519 -N '' -C smoke@vbproxy -f "$work/id_ed25519"

# make_env_iso NAME KEY=VALUE...: an ISO 9660 image with ovf-env.xml, as vCenter's ISO transport.
make_env_iso() {
  local name="$1"; shift
  mkdir -p "$work/$name"
  {
    echo '<?xml version="1.0" encoding="UTF-8"?>'
    echo '<Environment xmlns="http://schemas.dmtf.org/ovf/environment/1" xmlns:oe="http://schemas.dmtf.org/ovf/environment/1" oe:id="">'
    echo '  <PlatformSection><Kind>qemu (vbproxy smoke test)</Kind></PlatformSection>'
    echo '  <PropertySection>'
    local kv
    for kv in "$@"; do
      local v="${kv#*=}"
      v="${v//&/&amp;}"; v="${v//\"/&quot;}"; v="${v//</&lt;}"
      echo "    <Property oe:key=\"${kv%%=*}\" oe:value=\"$v\"/>"
    done
    echo '  </PropertySection>'
    echo '</Environment>'
  } > "$work/$name/ovf-env.xml"
  xorriso -as mkisofs -quiet -R -J -V 'OVF ENV' -o "$work/$name.iso" "$work/$name"
}

# boot NAME ISO [HOSTFWD]: boots a fresh copy of the OVA's disk; serial console to NAME.console.
boot() {
  local name="$1" iso="$2" fwd="${3:-}"
  qemu-img create -q -f qcow2 -F vmdk -b "$vmdk" "$work/$name.qcow2"
  # A guest disk as VDDK would hot-add it (PVSCSI, second controller), with a partition table.
  qemu-img create -q -f qcow2 "$work/$name-guest.qcow2" 1G
  cp "$ovmf_vars" "$work/$name.vars"
  # TCG unless VBPROXY_SMOKE_ACCEL=kvm: here /dev/kvm exists but nested KVM stops the guest with
  # "KVM internal error ... emulation failure", and qemu does not fall back to TCG by itself.
  local accel="${VBPROXY_SMOKE_ACCEL:-tcg}"
  say "booting $name ($accel, 2 vCPU, 4 GiB)"
  qemu-system-x86_64 -accel "$accel" -machine q35 -smp 2 -m 4096 -display none -no-reboot \
    -drive if=pflash,format=raw,readonly=on,file="$ovmf_code" \
    -drive if=pflash,format=raw,file="$work/$name.vars" \
    -device virtio-scsi-pci,id=scsi0 \
    -drive if=none,id=sys,file="$work/$name.qcow2",format=qcow2 -device scsi-hd,drive=sys,bus=scsi0.0,scsi-id=0 \
    -device pvscsi,id=scsi1 \
    -drive if=none,id=guest,file="$work/$name-guest.qcow2",format=qcow2 -device scsi-hd,drive=guest,bus=scsi1.0,scsi-id=1,serial=6000c29smoke \
    -drive if=none,id=cd,file="$iso",format=raw,readonly=on,media=cdrom -device ide-cd,drive=cd \
    -netdev "user,id=net0${fwd}" -device vmxnet3,netdev=net0 \
    -serial "file:$work/$name.console" &
  qemu_pid=$!
}

# wait_console NAME REGEX: waits until the serial console shows REGEX (or first boot's end).
wait_console() {
  local name="$1" re="$2" deadline=$(( $(date +%s) + timeout_s ))
  while (( $(date +%s) < deadline )); do
    if grep -aqE "$re" "$work/$name.console" 2>/dev/null; then return 0; fi
    if ! kill -0 "$qemu_pid" 2>/dev/null; then say "qemu exited"; return 1; fi
    sleep 5
  done
  say "timed out after ${timeout_s}s waiting for /$re/ on the console of $name"
  return 1
}

stop_vm() {
  kill "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=""
}

# ---- 1. good properties ----
ssh_port="$(free_port)"
api_port="$(free_port)"
manager_port="$(free_port)"
# The enrollment token in the OVF environment and the one the manager accepts (a file, as an
# administrator would copy it from the manager). 10.0.2.2 is the host's loopback seen from qemu's
# user network, so the manager listens on 127.0.0.1 only.
enrollment_token="smoke-$(node -e 'process.stdout.write(require("crypto").randomBytes(18).toString("base64url"))')"
printf '%s\n' "$enrollment_token" > "$work/enrollment-token"
chmod 600 "$work/enrollment-token"
manager_cmd="${VBPROXY_SMOKE_MANAGER:-node dist/src/lab/manager-main.js --listen 127.0.0.1 --port \"\$VBPROXY_SMOKE_MANAGER_PORT\" --token-file \"\$VBPROXY_SMOKE_TOKEN_FILE\" --heartbeat-interval 5}"
say "starting the manager on port $manager_port: $manager_cmd"
(cd "$repo" && VBPROXY_SMOKE_MANAGER_PORT="$manager_port" VBPROXY_SMOKE_TOKEN_FILE="$work/enrollment-token" exec bash -c "$manager_cmd") > "$work/manager.log" 2>&1 &
manager_pid=$!
for _ in $(seq 1 30); do grep -q 'listening on' "$work/manager.log" 2>/dev/null && break; sleep 1; done
grep -q 'listening on' "$work/manager.log" || fail "the manager did not start: $(cat "$work/manager.log")"
make_env_iso good \
  "manager.url=http://10.0.2.2:$manager_port/" \
  "manager.enrollment_token=$enrollment_token" \
  "system.hostname=vbproxy-smoke.lab.example" \
  "system.ssh_authorized_key=$(cat "$work/id_ed25519.pub")" \
  "network.mode=dhcp" \
  "network.prefix=24"
boot_start=$(date +%s)
boot good "$work/good.iso" ",hostfwd=tcp:127.0.0.1:$ssh_port-:22,hostfwd=tcp:127.0.0.1:$api_port-:8443"
if wait_console good 'vbproxy firstboot: (done|FAILED)'; then
  say "first boot finished $(( $(date +%s) - boot_start ))s after power-on"
fi
check "first boot completed" grep -aq 'vbproxy firstboot: done' "$work/good.console"

ssh_vm() {
  ssh -q -i "$work/id_ed25519" -p "$ssh_port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o ConnectTimeout=10 -o BatchMode=yes vbadmin@127.0.0.1 "$@"
}
for _ in $(seq 1 60); do ssh_vm true 2>/dev/null && break; sleep 5; done
check "SSH with the key from the vApp property" ssh_vm true
# The server lists the methods it accepts: publickey alone means no password, no keyboard-interactive.
check "SSH offers public keys only" bash -c "ssh -p $ssh_port -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o PreferredAuthentications=none -o BatchMode=yes vbadmin@127.0.0.1 true 2>&1 | grep -q 'Permission denied (publickey)'"
check "host name from the vApp property" bash -c "[[ \$(ssh -q -i '$work/id_ed25519' -p $ssh_port -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null vbadmin@127.0.0.1 hostname) == vbproxy-smoke ]]"
check "config written, secrets 0600" ssh_vm 'sudo test -f /etc/vbproxy/config.json && [ "$(sudo stat -c %a /etc/vbproxy/secrets/enrollment-token)" = 600 ] && [ "$(sudo stat -c %a /etc/vbproxy/secrets/catalog.key)" = 600 ]'
check "firewall loaded (input policy drop)" ssh_vm 'sudo nft list chain inet filter input | grep -q "policy drop"'
check "PostgreSQL and Redis running" ssh_vm 'systemctl is-active --quiet postgresql redis-server'
check "catalog database reachable as vbproxy at the config's database.url (peer auth)" ssh_vm 'u=$(sudo sed -n "s/.*\"url\": \"\(postgres[^\"]*\)\".*/\1/p" /etc/vbproxy/config.json); [ -n "$u" ] && sudo -u vbproxy psql "$u" -tAc "select 1" | grep -qx 1'
check "Redis answers" ssh_vm 'redis-cli ping | grep -qx PONG'
# The system disk is the one holding /; the PVSCSI disk stands for a hot-added guest disk.
check "system disk marked for udev, not in the vbproxy-disk group" ssh_vm 'd=/dev/$(lsblk -ndo PKNAME "$(findmnt -no SOURCE /)"); udevadm info "$d" | grep -q VBPROXY_SYSTEM_DISK=1 && [ "$(stat -c %G "$d")" = disk ]'
check "hot-added PVSCSI disk: group vbproxy-disk, scheduler none, not claimed" ssh_vm 'd=/dev/disk/by-id/scsi-*6000c29smoke; d=$(readlink -f $d); [ "$(stat -c %G "$d")" = vbproxy-disk ] && grep -q "\[none\]" /sys/block/${d#/dev/}/queue/scheduler && udevadm info "$d" | grep -q UDISKS_IGNORE=1'
check "worker could open the hot-added disk as vbproxy (group), not other users" ssh_vm 'd=$(readlink -f /dev/disk/by-id/scsi-*6000c29smoke); sudo -u vbproxy dd if="$d" of=/dev/null bs=4096 count=1 status=none && ! dd if="$d" of=/dev/null bs=4096 count=1 status=none 2>/dev/null'
check "vbproxy installed" ssh_vm 'vbproxy --version'
ssh_vm 'sudo journalctl -b --no-pager -u vbproxy-firstboot -u vbproxy-api -u vbproxy-worker' > "$work/journal.txt" 2>&1 || true
ssh_vm 'systemctl --failed --no-legend' > "$work/failed-units.txt" 2>&1 || true
say "failed units in the VM: $(tr '\n' ';' < "$work/failed-units.txt")"
for u in vbproxy-firstboot vbproxy-api vbproxy-worker; do
  say "$u: $(ssh_vm "systemctl show -p ActiveState -p SubState -p Result -p ExecMainStatus --value $u" 2>/dev/null | tr '\n' ' ')"
done

if kill -0 "$manager_pid" 2>/dev/null; then
  for _ in $(seq 1 60); do ssh_vm 'sudo test -f /var/lib/vbproxy/secrets/manager-credentials.json' && break; sleep 5; done
  check "registered with the lab manager" ssh_vm 'sudo test -f /var/lib/vbproxy/secrets/manager-credentials.json'
  for _ in $(seq 1 30); do curl -ksf "https://127.0.0.1:$api_port/healthz" >/dev/null && break; sleep 5; done
  check "/healthz through the forwarded API port" curl -ksf "https://127.0.0.1:$api_port/healthz" -o /dev/null
  check "/metrics through the forwarded API port" bash -c "curl -ksf https://127.0.0.1:$api_port/metrics | grep -q '^# HELP'"
else
  not_run+=("registration, /healthz, /metrics: the manager exited ($(tail -n 3 "$work/manager.log" | tr '\n' ' '))")
fi
stop_vm

# ---- 2. a bad property ----
make_env_iso bad \
  "manager.url=http://10.0.2.2:$manager_port/" \
  "manager.enrollment_token=$enrollment_token" \
  "system.hostname=vbproxy-smoke" \
  "network.mode=static" \
  "network.address=10.0.2.15" \
  "network.prefix=99"
boot_start=$(date +%s)
boot bad "$work/bad.iso"
wait_console bad 'vbproxy firstboot: (done|FAILED)' || true
sleep 2
check "a bad property is reported on the console by label and key" \
  grep -aqE 'Prefix length \(network\.prefix\): "99" is not a prefix length' "$work/bad.console"
say "bad-property boot reported $(( $(date +%s) - boot_start ))s after power-on"
stop_vm

mkdir -p "$out/smoke"
cp "$work"/*.console "$work"/journal.txt "$work"/failed-units.txt "$out/smoke/" 2>/dev/null || true
[[ -f "$work/manager.log" ]] && cp "$work/manager.log" "$out/smoke/"
say "consoles and journal kept in $out/smoke/"
for n in "${not_run[@]}"; do say "NOT RUN: $n"; done
if ((${#failures[@]} > 0 || ${#not_run[@]} > 0)); then
  say "smoke run incomplete: ${#failures[@]} failed, ${#not_run[@]} not run"
  exit 1
fi
say "all checks passed in $(( $(date +%s) - started ))s"
