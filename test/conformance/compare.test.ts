import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { withLab, type TestLab } from '../lab/support.js';
import { collectShapes, ETHERNET_CARD_TYPES, type Shapes } from './shapes.js';
import { startVcsim, vcsimAvailability, type RunningVcsim } from './vcsim.js';

/**
 * The lab must answer the client's calls the way vcsim does (element names, xsi:types, shapes).
 * Where they differ, vcsim is right, except for what vcsim does not implement (documented gaps,
 * docs/lab.md 6.6), which the lab does like vCenter.
 */
const VCSIM_GAPS: { pattern: RegExp; label?: RegExp; why: string }[] = [
  {
    pattern: /backing\[VirtualDiskFlatVer2BackingInfo\]\/(changeId|parent|deltaDiskFormat|deltaGrainSize)/,
    why: 'vcsim has no CBT and no delta disks',
  },
  {
    pattern: /backing\[VirtualDiskFlatVer2BackingInfo\]\/(uuid|contentId)/,
    why: 'vcsim 0.24 leaves the disk uuid and content id unset',
  },
  { pattern: /VirtualDevice\[VirtualDisk\]\/capacityInBytes/, why: 'vcsim 0.24 reports capacityInKB only' },
  { pattern: /TaskInfo\]\/progress/, why: 'vcsim 0.24 tasks complete synchronously, without progress' },
  {
    pattern:
      /VirtualDevice\[VirtualEthernetCard\]\/(wakeOnLanEnabled|connectable\[VirtualDeviceConnectInfo\]\/status|backing\[VirtualEthernetCardNetworkBackingInfo\]\/useAutoDetect)\[/,
    label: /^nic:/,
    why:
      'vcsim 0.24 keeps the cards of a VM it creates as the spec gave them, without wakeOnLanEnabled, ' +
      "connectable.status or the backing's useAutoDetect (its own VMs' cards have the first two)",
  },
  {
    pattern: /^\/val\[xsd:boolean\]$/,
    why: 'vcsim leaves changeTrackingEnabled, changeTrackingSupported, consolidationNeeded unset',
  },
];

const DEVICES = '/val[ArrayOfVirtualDevice]';
const CARD = /^\/val\[ArrayOfVirtualDevice\]\/VirtualDevice\[(\w+)\]/;

/**
 * Device lists differ by configuration (controllers, CD-ROMs, card types), not by dialect: compare
 * disks and network cards, cards under one name whatever their type (vcsim's VMs have E1000s, the
 * lab's Vmxnet3s and E1000es). Card backings are compared where both have the same configuration,
 * the VM that `collectShapes` creates on the standard network "VM Network" (step `nic`): vcsim's
 * own VMs are on a distributed port group, and the lab has no distributed switches.
 * Returns the path to compare, or undefined to leave it out.
 */
function relevant(label: string, path: string): string | undefined {
  // The lab has no distributed switches (docs/lab.md 6.6): hostNetworks reads them on vcsim only.
  if (/^nic:Distributed/.test(label)) return undefined;
  // Values (`=`) depend on the configuration, apart from the MAC address format: compare them on
  // the VM created alike on both (step `nic`).
  if (path.includes('=') && !label.startsWith('nic:') && !path.includes('/macAddress=')) return undefined;
  if (!label.endsWith('config.hardware.device')) return path;
  if (path === DEVICES || path.startsWith(`${DEVICES}/VirtualDevice[VirtualDisk]`)) return path;
  const card = CARD.exec(path);
  if (!card || !ETHERNET_CARD_TYPES.test(card[1]!)) return undefined;
  if (path.includes('/backing[') && !label.startsWith('nic:')) return undefined;
  return path.replace(CARD, `${DEVICES}/VirtualDevice[VirtualEthernetCard]`);
}

/** The relevant paths of one answer, normalised. */
function relevantSet(label: string, paths: Set<string> | undefined): Set<string> {
  const out = new Set<string>();
  for (const p of paths ?? []) {
    const r = relevant(label, p);
    if (r !== undefined) out.add(r);
  }
  return out;
}

const avail = vcsimAvailability();
if (!avail.ok && process.env.CI === 'true') {
  test('vcsim prerequisites', () => assert.fail(`vcsim cannot be built: ${avail.reason}`));
} else if (!avail.ok) {
  test('vcsim prerequisites', { skip: avail.reason }, () => undefined);
} else {
  let sim: RunningVcsim;
  let t: TestLab;
  let vcsim: Shapes;
  let lab: Shapes;
  before(async () => {
    sim = await startVcsim();
    t = await withLab();
    vcsim = await collectShapes(sim.info);
    lab = await collectShapes({
      url: t.lab.url,
      username: t.lab.username,
      password: t.lab.password,
      fingerprint256: t.lab.fingerprint256,
    });
  });
  after(async () => {
    await t.close();
    await sim.stop();
  });

  test('the same calls produce answers on both (including the faults)', () => {
    for (const label of [
      'connect:RetrieveServiceContent',
      'connect:Login',
      'missing:RetrievePropertiesEx:fault',
      'unauthenticated:CurrentTime:fault',
      'inventory:VirtualMachine.config.firmware',
      'nic:VirtualMachine.config.hardware.device',
      'nic:VirtualMachine.config.firmware',
    ]) {
      assert.ok(vcsim.has(label), `vcsim answered ${label}`);
      assert.ok(lab.has(label), `the lab answered ${label}`);
    }
  });

  test('network cards and firmware are compared by value too: address type, MAC format, firmware', () => {
    for (const [name, s] of [
      ['vcsim', vcsim],
      ['lab', lab],
    ] as const) {
      assert.ok(s.get('nic:VirtualMachine.config.firmware')?.has('/val=efi'), `${name} firmware`);
      const cards = [
        ...relevantSet(
          'nic:VirtualMachine.config.hardware.device',
          s.get('nic:VirtualMachine.config.hardware.device'),
        ),
      ];
      assert.ok(
        cards.some((p) => /\/addressType=\w+$/.test(p)),
        `${name} addressType`,
      );
      assert.ok(
        cards.some((p) => p.endsWith('/macAddress=hh:hh:hh:hh:hh:hh')),
        `${name} MAC format`,
      );
      assert.ok(
        cards.some((p) => p.includes('/backing[VirtualEthernetCardNetworkBackingInfo]/network[')),
        `${name} backing`,
      );
    }
  });

  test('every element vcsim sends for these calls, the lab sends with the same type', () => {
    const missing: string[] = [];
    for (const [label, v] of vcsim) {
      const l = relevantSet(label, lab.get(label));
      for (const p of relevantSet(label, v)) if (!l.has(p)) missing.push(`${label} ${p}`);
    }
    assert.deepEqual(missing, []);
  });

  test('every element the lab sends, vcsim sends too, apart from documented vcsim gaps', () => {
    const extra: string[] = [];
    for (const [label, l] of lab) {
      const v = relevantSet(label, vcsim.get(label));
      for (const p of relevantSet(label, l)) {
        if (v.has(p)) continue;
        if (VCSIM_GAPS.some((g) => g.pattern.test(p) && (g.label?.test(label) ?? true))) continue;
        extra.push(`${label} ${p}`);
      }
    }
    assert.deepEqual(extra, []);
  });
}
