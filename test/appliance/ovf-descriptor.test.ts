import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { VAPP_PROPERTIES } from '../../src/appliance/properties.js';
import { childElements, childText, descendants, NS, parseXml } from '../../src/appliance/xml.js';
import { repoRoot, tempDir } from './helpers.js';

const templatePath = join(repoRoot, 'appliance/ovf/vbproxy.ovf.template');
const ovaScript = join(repoRoot, 'appliance/ova.sh');

function attr(e: Element, ns: string, name: string): string | null {
  return e.hasAttributeNS(ns, name) ? e.getAttributeNS(ns, name) : null;
}

interface HardwareItem {
  instanceId: string;
  resourceType: number;
  subType?: string;
  parent?: string;
  address?: string;
  addressOnParent?: string;
  quantity?: string;
  hostResource?: string;
}

function hardwareItems(vhs: Element): HardwareItem[] {
  return childElements(vhs, NS.ovf, 'Item').map((item) => {
    const t = (name: string): string | undefined => childText(item, NS.rasd, name);
    const out: HardwareItem = { instanceId: t('InstanceID')!, resourceType: Number(t('ResourceType')) };
    const opt: Array<[keyof HardwareItem, string]> = [
      ['subType', 'ResourceSubType'],
      ['parent', 'Parent'],
      ['address', 'Address'],
      ['addressOnParent', 'AddressOnParent'],
      ['quantity', 'VirtualQuantity'],
      ['hostResource', 'HostResource'],
    ];
    for (const [k, n] of opt) {
      const v = t(n);
      if (v !== undefined) (out as unknown as Record<string, string>)[k] = v;
    }
    return out;
  });
}

/** The descriptor as ova.sh fills it (default 2 vCPU, 4 GiB, EFI). */
function assemble(t: import('node:test').TestContext) {
  const dir = tempDir(t);
  const disk = join(dir, 'tiny.raw');
  // A tiny disk: 8 MiB, mostly zero, some data at 1 MiB and at the end.
  const buf = Buffer.alloc(8 * 1024 * 1024);
  buf.write('vbproxy test disk', 1024 * 1024);
  for (let i = buf.length - 65536; i < buf.length; i++) buf[i] = (i * 7919) & 0xff;
  writeFileSync(disk, buf);
  const ova = join(dir, 'out', 'vbproxy-9.9.9.ova');
  const r = spawnSync('bash', [ovaScript, '--disk', disk, '--out', ova, '--version', '9.9.9'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const x = join(dir, 'x');
  mkdirSync(x);
  assert.equal(spawnSync('tar', ['-xf', ova, '-C', x]).status, 0);
  const members = spawnSync('tar', ['-tf', ova], { encoding: 'utf8' }).stdout.trim().split('\n');
  return { dir, disk, ova, x, members, descriptor: readFileSync(join(x, 'vbproxy-9.9.9.ovf'), 'utf8') };
}

test('the descriptor template is well-formed OVF with every section the appliance needs', () => {
  const doc = parseXml(readFileSync(templatePath, 'utf8'));
  const env = doc.documentElement!;
  assert.equal(env.localName, 'Envelope');
  assert.equal(env.namespaceURI, NS.ovf);
  for (const s of ['References', 'DiskSection', 'NetworkSection', 'VirtualSystem']) {
    assert.equal(childElements(env, NS.ovf, s).length, 1, s);
  }
  const vs = childElements(env, NS.ovf, 'VirtualSystem')[0]!;
  for (const s of ['AnnotationSection', 'OperatingSystemSection', 'VirtualHardwareSection', 'ProductSection']) {
    assert.equal(childElements(vs, NS.ovf, s).length, 1, s);
  }
  const vhs = childElements(vs, NS.ovf, 'VirtualHardwareSection')[0]!;
  // Both OVF environment transports: VMware Tools (guestinfo) and ISO.
  assert.deepEqual(attr(vhs, NS.ovf, 'transport')?.split(' ').sort(), ['com.vmware.guestInfo', 'iso']);
  const disk = descendants(env, NS.ovf, 'Disk')[0]!;
  assert.match(attr(disk, NS.ovf, 'format')!, /vmdk\.html#streamOptimized$/);
  assert.equal(attr(disk, NS.ovf, 'fileRef'), attr(descendants(env, NS.ovf, 'File')[0]!, NS.ovf, 'id'));
});

test('the ProductSection declares exactly the properties first boot reads, with types, labels, descriptions, categories', () => {
  const doc = parseXml(readFileSync(templatePath, 'utf8'));
  const product = descendants(doc, NS.ovf, 'ProductSection')[0]!;
  assert.equal(childText(product, NS.ovf, 'Product'), 'vbproxy VMware backup proxy');
  assert.ok(childText(product, NS.ovf, 'Version'));

  // Walk the children in order: each Property belongs to the Category before it.
  let category: string | undefined;
  const seen = new Map<string, { type: string; password: boolean; category?: string; label?: string; description?: string; element: Element }>();
  for (let n = product.firstChild; n; n = n.nextSibling) {
    if (n.nodeType !== 1) continue;
    const e = n as Element;
    if (e.localName === 'Category') category = e.textContent?.trim();
    if (e.localName === 'Property') {
      const key = attr(e, NS.ovf, 'key')!;
      assert.ok(!seen.has(key), `duplicate property ${key}`);
      const entry: { type: string; password: boolean; category?: string; label?: string; description?: string; element: Element } = {
        type: attr(e, NS.ovf, 'type')!,
        password: attr(e, NS.ovf, 'password') === 'true',
        element: e,
      };
      if (category !== undefined) entry.category = category;
      const label = childText(e, NS.ovf, 'Label');
      const description = childText(e, NS.ovf, 'Description');
      if (label !== undefined) entry.label = label;
      if (description !== undefined) entry.description = description;
      seen.set(key, entry);
      assert.equal(attr(e, NS.ovf, 'userConfigurable'), 'true', `${key} is editable at deploy time`);
    }
  }
  assert.deepEqual([...seen.keys()].sort(), VAPP_PROPERTIES.map((p) => p.key).sort());
  for (const p of VAPP_PROPERTIES) {
    const d = seen.get(p.key)!;
    assert.equal(d.type, p.type, `${p.key} type`);
    assert.equal(d.password, p.password, `${p.key} password flag`);
    assert.equal(d.category, p.category, `${p.key} category`);
    assert.equal(d.label, p.label, `${p.key} label`);
    assert.ok((d.description ?? '').length >= 20, `${p.key} has a description`);
  }
  assert.equal(seen.get('manager.enrollment_token')!.password, true);
  const mode = seen.get('network.mode')!.element;
  assert.equal(attr(mode, NS.ovf, 'qualifiers'), 'ValueMap{"dhcp","static"}');
  assert.equal(attr(mode, NS.ovf, 'value'), 'dhcp');
});

test('the assembled OVA: 2 vCPU, 4 GiB, PVSCSI controllers with free units, system disk at SCSI 0:0, vmxnet3, disk.EnableUUID, Tools settings', (t) => {
  const { descriptor } = assemble(t);
  assert.doesNotMatch(descriptor, /@@/);
  const doc = parseXml(descriptor);
  const vhs = descendants(doc, NS.ovf, 'VirtualHardwareSection')[0]!;
  const items = hardwareItems(vhs);
  assert.equal(items.find((i) => i.resourceType === 3)?.quantity, '2');
  assert.equal(items.find((i) => i.resourceType === 4)?.quantity, '4096');
  const scsi = items.filter((i) => i.resourceType === 6);
  assert.ok(scsi.length >= 2, 'a dedicated controller for hot-add');
  for (const c of scsi) assert.equal(c.subType, 'VirtualSCSI', 'paravirtual SCSI');
  const disks = items.filter((i) => i.resourceType === 17);
  assert.equal(disks.length, 1);
  const sys = scsi.find((c) => c.instanceId === disks[0]!.parent)!;
  assert.equal(sys.address, '0');
  assert.equal(disks[0]!.addressOnParent, '0');
  assert.equal(disks[0]!.hostResource, 'ovf:/disk/vmdisk1');
  const used = scsi.map((c) => items.filter((i) => i.parent === c.instanceId).length);
  const free = scsi.reduce((n, _c, i) => n + 15 - used[i]!, 0);
  assert.ok(free >= 44, `${free} free SCSI units for hot-added disks`);
  assert.equal(items.find((i) => i.resourceType === 10)?.subType, 'VmxNet3');
  assert.ok(items.some((i) => i.resourceType === 15), 'a CD-ROM for the ISO transport');

  const settings = new Map<string, string>();
  for (const local of ['Config', 'ExtraConfig']) {
    for (const e of childElements(vhs, NS.vmw, local)) settings.set(`${local}:${attr(e, NS.vmw, 'key')}`, attr(e, NS.vmw, 'value')!);
  }
  assert.equal(settings.get('ExtraConfig:disk.EnableUUID'), 'TRUE');
  assert.equal(settings.get('Config:firmware'), 'efi');
  assert.equal(settings.get('Config:tools.syncTimeWithHost'), 'false');
  assert.equal(settings.get('Config:tools.toolsUpgradePolicy'), 'manual');
  assert.equal(settings.get('Config:powerOpInfo.powerOffType'), 'soft');
  const version = descendants(doc, NS.ovf, 'Version')[0]?.textContent;
  assert.equal(version, '9.9.9');
});

test('the OVA is a ustar archive in OVF order whose manifest SHA-256 sums and sizes match', (t) => {
  const { disk, x, members, descriptor, ova } = assemble(t);
  assert.deepEqual(members, ['vbproxy-9.9.9.ovf', 'vbproxy-9.9.9.mf', 'vbproxy-9.9.9-disk1.vmdk']);
  const head = readFileSync(ova).subarray(257, 262).toString('latin1');
  assert.equal(head, 'ustar');

  const manifest = readFileSync(join(x, 'vbproxy-9.9.9.mf'), 'utf8').trim().split('\n');
  assert.equal(manifest.length, 2);
  for (const line of manifest) {
    const m = /^SHA256\(([^)]+)\)= ([0-9a-f]{64})$/.exec(line);
    assert.ok(m, line);
    const actual = createHash('sha256').update(readFileSync(join(x, m[1]!))).digest('hex');
    assert.equal(actual, m[2], `checksum of ${m[1]}`);
  }
  assert.deepEqual(readdirSync(x).sort(), [...members].sort());

  const doc = parseXml(descriptor);
  const file = descendants(doc, NS.ovf, 'File')[0]!;
  assert.equal(attr(file, NS.ovf, 'href'), 'vbproxy-9.9.9-disk1.vmdk');
  assert.equal(Number(attr(file, NS.ovf, 'size')), statSync(join(x, 'vbproxy-9.9.9-disk1.vmdk')).size);
  const d = descendants(doc, NS.ovf, 'Disk')[0]!;
  assert.equal(Number(attr(d, NS.ovf, 'capacity')), 8 * 1024 * 1024);

  const info = JSON.parse(
    spawnSync('qemu-img', ['info', '--output=json', join(x, 'vbproxy-9.9.9-disk1.vmdk')], { encoding: 'utf8' }).stdout,
  ) as { format: string; 'virtual-size': number; 'format-specific'?: { data?: { 'create-type'?: string } } };
  assert.equal(info.format, 'vmdk');
  assert.equal(info['format-specific']?.data?.['create-type'], 'streamOptimized');
  const cmp = spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'vmdk', disk, join(x, 'vbproxy-9.9.9-disk1.vmdk')], {
    encoding: 'utf8',
  });
  assert.equal(cmp.status, 0, `the VMDK holds the same data as the image: ${cmp.stdout}${cmp.stderr}`);
});

test('ova.sh refuses bad arguments with a message', (t) => {
  const dir = tempDir(t);
  const missing = spawnSync('bash', [ovaScript, '--disk', join(dir, 'none.raw'), '--out', join(dir, 'a.ova')], { encoding: 'utf8' });
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /disk image .*none\.raw does not exist/);
  writeFileSync(join(dir, 'd.raw'), Buffer.alloc(65536));
  const name = spawnSync('bash', [ovaScript, '--disk', join(dir, 'd.raw'), '--out', join(dir, 'a.tar')], { encoding: 'utf8' });
  assert.equal(name.status, 2);
  assert.match(name.stderr, /must end in \.ova/);
  const fw = spawnSync('bash', [ovaScript, '--disk', join(dir, 'd.raw'), '--out', join(dir, 'a.ova'), '--firmware', 'uefi'], {
    encoding: 'utf8',
  });
  assert.equal(fw.status, 2);
  assert.match(fw.stderr, /--firmware is bios or efi/);
});
