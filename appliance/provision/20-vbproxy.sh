#!/usr/bin/env bash
# vbproxy itself: the npm pack tarball with its production dependencies under /opt/vbproxy, the
# vbproxy system user and its group for hot-added disks, directories, systemd units.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
P="${VBPROXY_PROVISION_DIR:-/tmp/vbproxy-provision}"
[[ -f "$P/vbproxy.tgz" ]] || { echo "20-vbproxy.sh: $P/vbproxy.tgz is missing (npm pack)" >&2; exit 1; }

install -D -m 0644 "$P/systemd/vbproxy.sysusers" /usr/lib/sysusers.d/vbproxy.conf
install -D -m 0644 "$P/systemd/vbproxy.tmpfiles" /usr/lib/tmpfiles.d/vbproxy.conf
systemd-sysusers /usr/lib/sysusers.d/vbproxy.conf
systemd-tmpfiles --create /usr/lib/tmpfiles.d/vbproxy.conf
install -d -m 0750 -o vbproxy -g vbproxy /srv/vbproxy

# Production dependencies only; native modules build here if no prebuilt binary fits.
if [[ -d "$P/node_modules" ]]; then
  # build.sh staged the package with its dependencies already (same Node ABI): copy it as is.
  rm -rf /opt/vbproxy && mkdir -p /opt/vbproxy/lib/node_modules
  cp -a "$P/node_modules/vbproxy" /opt/vbproxy/lib/node_modules/vbproxy
  mkdir -p /opt/vbproxy/bin && ln -sf ../lib/node_modules/vbproxy/dist/src/cli/main.js /opt/vbproxy/bin/vbproxy
else
  npm install --global --prefix /opt/vbproxy --omit=dev --no-audit --no-fund "$P/vbproxy.tgz"
fi
chmod 0755 /opt/vbproxy/lib/node_modules/vbproxy/dist/src/cli/main.js
ln -sf /opt/vbproxy/bin/vbproxy /usr/bin/vbproxy
/usr/bin/vbproxy --version

for u in vbproxy-firstboot.service vbproxy-api.service vbproxy-worker.service; do
  install -m 0644 "$P/systemd/$u" "/usr/lib/systemd/system/$u"
done
systemctl enable vbproxy-firstboot.service vbproxy-api.service vbproxy-worker.service

install -D -m 0644 "$P/files/vddk.conf" /etc/vbproxy/vddk.conf
install -d -m 0755 /opt/vmware-vix-disklib-distrib
if [[ -f "$P/docs/appliance.md" ]]; then install -D -m 0644 "$P/docs/appliance.md" /usr/share/doc/vbproxy/appliance.md; fi

# systemd-networkd: DHCP until first boot writes the vApp network settings; wait-online bounded.
install -D -m 0644 "$P/files/network/99-default-dhcp.network" /etc/systemd/network/99-default-dhcp.network
install -D -m 0644 "$P/files/network/wait-online.conf" \
  /etc/systemd/system/systemd-networkd-wait-online.service.d/vbproxy.conf
