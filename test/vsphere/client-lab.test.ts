import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { changeIdUuid, queryChangedAreas } from '../../src/vsphere/cbt.js';
import { VimClient } from '../../src/vsphere/client.js';
import { attachDisk, detachDisk, listProxyDisks } from '../../src/vsphere/devices.js';
import {
  FileFaultError,
  FileLockedError,
  InvalidPowerStateError,
  InvalidStateError,
  ManagedObjectNotFoundError,
  NotAuthenticatedError,
  QuiesceFaultError,
  RestrictedVersionError,
  TaskInProgressError,
  VimConnectionError,
  VimFaultError,
  VimLookupError,
  VimTlsError,
} from '../../src/vsphere/errors.js';
import {
  datastoresVisibleTo,
  findSelfVm,
  findVmByPath,
  getVm,
  readSelfIdentity,
} from '../../src/vsphere/inventory.js';
import { retrieveOne } from '../../src/vsphere/property.js';
import {
  consolidateDisks,
  createSnapshot,
  enableCbt,
  listSnapshots,
  removeSnapshot,
} from '../../src/vsphere/snapshots.js';
import { moref, type MoRef } from '../../src/vsphere/wire/values.js';
import { testDefinition, withLab, type TestLab } from '../lab/support.js';

let t: TestLab;
let c: VimClient;
const vm = async (name: string): Promise<MoRef> => findVmByPath(c, `dc1/vm/${name}`);

before(async () => {
  const def = testDefinition();
  t = await withLab({
    ...def,
    hosts: [
      { name: 'esx1', datastores: ['ds1'] },
      { name: 'esxfree', datastores: ['ds1'], license: 'free' },
    ],
    vms: [
      ...(def.vms ?? []),
      { name: 'tmpl01', template: true, disks: [{ sizeMiB: 1 }] },
      { name: 'freevm', host: 'esxfree', disks: [{ sizeMiB: 1 }] },
      { name: 'off01', powerState: 'poweredOff', cbt: true, disks: [{ sizeMiB: 1 }] },
      { name: 'busy01', disks: [{ sizeMiB: 1 }] },
      { name: 'dupA', biosUuid: '4a1c2b3d-0000-4000-8000-000000000001', disks: [] },
      { name: 'dupB', biosUuid: '4a1c2b3d-0000-4000-8000-000000000001', disks: [] },
    ],
  });
  c = await t.connect();
});
after(async () => {
  await t.close();
});

describe('TLS trust', () => {
  test('a wrong pinned fingerprint is refused before anything is sent', async () => {
    const wrong = t.lab.fingerprint256.replace(/^../, t.lab.fingerprint256.startsWith('00') ? '11' : '00');
    await assert.rejects(
      VimClient.connect({
        url: t.lab.url,
        username: t.lab.username,
        password: t.lab.password,
        fingerprint256: wrong,
      }),
      (err: unknown) => err instanceof VimTlsError && /not the pinned/.test(err.message),
    );
  });

  test('the lab CA verifies the host name, and the SHA-1 thumbprint for VDDK is derived', async () => {
    const ca = await VimClient.connect({
      url: t.lab.url,
      username: t.lab.username,
      password: t.lab.password,
      ca: t.lab.certificatePem,
    });
    assert.equal(ca.peerCertificate?.thumbprintSha1, t.lab.thumbprintSha1);
    assert.equal(ca.peerCertificate?.fingerprint256, t.lab.fingerprint256);
    await ca.close();
    assert.match(
      readFileSync(t.lab.vddkConf, 'utf8'),
      new RegExp(`vixDiskLib.lab.serverThumbprint = "${t.lab.thumbprintSha1}"`),
    );
  });

  test('no CA, no fingerprint, or plain http is refused', async () => {
    await assert.rejects(VimClient.connect({ url: t.lab.url, username: 'u', password: 'p' }), VimTlsError);
    await assert.rejects(
      VimClient.connect({ url: t.lab.url.replace('https', 'http'), username: 'u', password: 'p' }),
      VimTlsError,
    );
  });
});

describe('sessions', () => {
  test('an expired session is re-established once per call, transparently', async () => {
    const client = await t.connect();
    const web = await vm('web01');
    t.lab.expireSessions();
    const info = await getVm(client, web);
    assert.equal(info.name, 'web01');
    assert.equal(client.relogins, 1);
    // Sessions idle for 100 ms expire; once the client logs in again, the timeout goes back to its
    // long value, so that the new session outlives the retried call however slow the machine is.
    const invoke = client.transport.invoke.bind(client.transport);
    client.transport.invoke = (method, args) => {
      if (method === 'Login') t.lab.server.sessionTimeoutMs = 1800_000;
      return invoke(method, args);
    };
    t.lab.server.sessionTimeoutMs = 100;
    try {
      await new Promise((r) => setTimeout(r, 250));
      await getVm(client, web);
      assert.equal(client.relogins, 2);
    } finally {
      t.lab.server.sessionTimeoutMs = 1800_000;
    }
  });

  test('concurrent calls that all see the expiry share one re-login', async () => {
    const client = await t.connect();
    const web = await vm('web01');
    t.lab.expireSessions();
    const infos = await Promise.all([getVm(client, web), getVm(client, web), getVm(client, web)]);
    assert.deepEqual(
      infos.map((i) => i.name),
      ['web01', 'web01', 'web01'],
    );
    assert.equal(client.relogins, 1);
  });

  test('a session rejected again right after re-login fails clearly', async () => {
    const client = await t.connect();
    const web = await vm('web01');
    t.lab.server.sessionTimeoutMs = -1;
    try {
      await assert.rejects(getVm(client, web), (err: unknown) => {
        assert.ok(err instanceof NotAuthenticatedError);
        assert.match(err.message, /rejected again right after a fresh login/);
        assert.match(err.message, /on PropertyCollector propertyCollector/);
        return true;
      });
    } finally {
      t.lab.server.sessionTimeoutMs = 1800_000;
    }
  });

  test('a bad password is InvalidLogin, and logout ends the session', async () => {
    await assert.rejects(
      VimClient.connect({
        url: t.lab.url,
        username: t.lab.username,
        password: 'wrong',
        fingerprint256: t.lab.fingerprint256,
      }),
      (err: unknown) => err instanceof VimFaultError && err.faultType === 'InvalidLogin',
    );
    const client = await t.connect();
    await client.close();
    await assert.rejects(
      client.transport.invoke('CurrentTime', { _this: moref('ServiceInstance', 'ServiceInstance') }),
      NotAuthenticatedError,
    );
  });

  test('the SOAPAction carries the version from about.apiVersion, and the session cookie is carried', async () => {
    await c.keepAlive();
    assert.equal(t.lab.server.lastSoapAction, '"urn:vim25/8.0.3.0"');
    assert.match(c.transport.sessionCookie ?? '', /^"[0-9a-f]{40}"$/);
  });

  test('an idle client sends CurrentTime keep-alives', async () => {
    const client = await VimClient.connect({
      url: t.lab.url,
      username: t.lab.username,
      password: t.lab.password,
      fingerprint256: t.lab.fingerprint256,
      keepAliveMs: 1000,
    });
    const before = t.lab.server.calls.get('CurrentTime') ?? 0;
    // The first keep-alive is due about 2 s from now; wait for it, with a generous limit.
    const end = Date.now() + 60_000;
    while ((t.lab.server.calls.get('CurrentTime') ?? 0) <= before && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok((t.lab.server.calls.get('CurrentTime') ?? 0) > before, 'a CurrentTime keep-alive was sent');
    await client.close();
  });

  test('a NotAuthenticated in missingSet is a per-property fault and never a re-login', async () => {
    const client = await t.connect();
    const web = await vm('web01');
    t.lab.injectFault({
      method: 'RetrievePropertiesEx',
      action: 'missing',
      object: 'web01',
      path: 'config.hardware.device',
      fault: 'NotAuthenticated',
    });
    await assert.rejects(retrieveOne(client, web, ['name', 'config.hardware.device']), (err: unknown) => {
      assert.ok(err instanceof NotAuthenticatedError);
      assert.equal(err.propertyPath, 'config.hardware.device');
      assert.match(err.message, /property config\.hardware\.device/);
      return true;
    });
    assert.equal(client.relogins, 0);
  });

  test('a dropped connection is a transient VimConnectionError and the next call works', async () => {
    t.lab.injectFault({ method: 'CurrentTime', action: 'drop' });
    await assert.rejects(c.keepAlive(), (err: unknown) => err instanceof VimConnectionError && err.transient);
    assert.match(await c.keepAlive(), /^\d{4}-/);
  });
});

describe('faults map to typed errors naming the object', () => {
  test('NotAuthenticated (without the session layer)', async () => {
    t.lab.expireSessions();
    await assert.rejects(
      c.transport.invoke('CurrentTime', { _this: moref('ServiceInstance', 'ServiceInstance') }),
      (err: unknown) => {
        assert.ok(err instanceof NotAuthenticatedError);
        assert.match(err.message, /ServiceInstance ServiceInstance/);
        return true;
      },
    );
    await c.keepAlive();
  });

  test('the appliance finds its own VM from DMI files (serial in order, uuid byte-swapped)', async () => {
    const proxy = await getVm(c, await vm('proxy01'));
    const dmi = mkdtempSync(join(tmpdir(), 'vbproxy-dmi-'));
    try {
      const hex = proxy.biosUuid!.replace(/-/g, '').match(/../g)!;
      writeFileSync(
        join(dmi, 'product_serial'),
        `VMware-${hex.slice(0, 8).join(' ')}-${hex.slice(8).join(' ')}\n`,
      );
      assert.equal((await findSelfVm(c, readSelfIdentity(dmi))).value, proxy.ref.value);
      rmSync(join(dmi, 'product_serial'));
      const [a, b, cc, ...rest] = proxy.biosUuid!.split('-') as [string, string, string, ...string[]];
      const rev = (h: string): string => h.match(/../g)!.reverse().join('');
      writeFileSync(
        join(dmi, 'product_uuid'),
        `${[rev(a), rev(b), rev(cc), ...rest].join('-').toUpperCase()}\n`,
      );
      assert.equal((await findSelfVm(c, readSelfIdentity(dmi))).value, proxy.ref.value);
      rmSync(join(dmi, 'product_uuid'));
      await assert.rejects(
        findSelfVm(c, readSelfIdentity(dmi)),
        /neither product_serial nor product_uuid was readable/,
      );
    } finally {
      rmSync(dmi, { recursive: true, force: true });
    }
  });

  test('the datastores the proxy can see are those of its host', async () => {
    const visible = await datastoresVisibleTo(c, await vm('proxy01'));
    assert.deepEqual(
      visible.map((d) => d.name),
      ['ds1'],
    );
    assert.ok(visible[0]!.capacityBytes > 0 && visible[0]!.accessible);
  });

  test('two VMs with one BIOS UUID make self-identification ambiguous', async () => {
    await assert.rejects(
      findSelfVm(c, { productUuid: '4a1c2b3d-0000-4000-8000-000000000001' }),
      (err: unknown) => {
        assert.ok(err instanceof VimLookupError);
        assert.match(err.message, /matches 2 VMs .*ambiguous/);
        return true;
      },
    );
  });

  test('ManagedObjectNotFound', async () => {
    await assert.rejects(getVm(c, moref('VirtualMachine', 'vm-424242')), (err: unknown) => {
      assert.ok(err instanceof ManagedObjectNotFoundError);
      assert.equal(err.object, 'VirtualMachine vm-424242');
      return true;
    });
  });

  test('InvalidState (a template cannot be snapshotted)', async () => {
    const tmpl = await vm('tmpl01');
    await assert.rejects(
      createSnapshot(c, tmpl, { name: 'x', description: 'y', quiesce: false }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidStateError);
        assert.equal(err.object, `VirtualMachine ${tmpl.value}`);
        return true;
      },
    );
  });

  test('TaskInProgress (a second task on a busy VM)', async () => {
    const busy = await vm('busy01');
    // The first task runs until the lab stops (nothing else uses busy01), so that it is still
    // running when the second is asked for, however slow the machine.
    t.lab.world.taskDurationMs = 3_600_000;
    await c.call('CreateSnapshot_Task', { _this: busy, name: 'a', memory: false, quiesce: false });
    t.lab.world.taskDurationMs = 20;
    await assert.rejects(
      createSnapshot(c, busy, { name: 'b', description: '', quiesce: false }),
      (err: unknown) => {
        assert.ok(err instanceof TaskInProgressError);
        assert.ok(err.transient);
        assert.equal(err.object, `VirtualMachine ${busy.value}`);
        return true;
      },
    );
  });

  test('FileFault (an unknown changeId)', async () => {
    const web = await vm('web01');
    const s = await createSnapshot(c, web, { name: 'ff', description: '', quiesce: false });
    const d = s.disks[0]!;
    try {
      await assert.rejects(
        queryChangedAreas(c, {
          vm: web,
          snapshot: s.ref,
          deviceKey: d.key,
          capacityBytes: d.capacityBytes,
          changeId: 'nonsense/1',
        }),
        (err: unknown) => {
          assert.ok(err instanceof FileFaultError);
          assert.match(err.object, new RegExp(`web01.*VirtualMachine ${web.value}`));
          return true;
        },
      );
    } finally {
      await removeSnapshot(c, s.ref);
    }
  });

  test('InvalidPowerState (changed areas without a snapshot on a running VM)', async () => {
    const web = await vm('web01');
    await assert.rejects(
      c.call('QueryChangedDiskAreas', { _this: web, deviceKey: 2000, startOffset: 0, changeId: '*' }),
      (err: unknown) => {
        assert.ok(err instanceof InvalidPowerStateError);
        assert.ok(err instanceof InvalidStateError);
        assert.equal(err.object, `VirtualMachine ${web.value}`);
        return true;
      },
    );
  });

  test('RestrictedVersion (a free-licence host refuses writes)', async () => {
    const free = await vm('freevm');
    await assert.rejects(
      createSnapshot(c, free, { name: 'x', description: '', quiesce: false }),
      (err: unknown) => {
        assert.ok(err instanceof RestrictedVersionError);
        assert.match(err.message, /licence forbids/);
        assert.equal(err.object, `VirtualMachine ${free.value}`);
        return true;
      },
    );
  });

  test('quiesce failures: Tools not running, and an injected ApplicationQuiesceFault task error', async () => {
    const nt = await vm('notools');
    await assert.rejects(
      createSnapshot(c, nt, { name: 'q', description: '', quiesce: true }),
      (err: unknown) => {
        assert.ok(err instanceof QuiesceFaultError);
        assert.equal(err.faultType, 'ToolsUnavailable');
        assert.equal(err.object, `VirtualMachine ${nt.value}`);
        assert.ok(err.task !== undefined);
        return true;
      },
    );
    const web = await vm('web01');
    t.lab.injectFault({
      method: 'CreateSnapshot_Task',
      object: 'web01',
      action: 'task',
      fault: 'ApplicationQuiesceFault',
      message: 'pre-freeze script failed',
    });
    await assert.rejects(
      createSnapshot(c, web, { name: 'q', description: '', quiesce: true }),
      (err: unknown) => {
        assert.ok(err instanceof QuiesceFaultError);
        assert.match(err.message, /pre-freeze script failed/);
        assert.equal(err.object, `VirtualMachine ${web.value}`);
        return true;
      },
    );
    assert.equal((await listSnapshots(c, web)).length, 0);
  });
});

describe('CBT', () => {
  test('enabling CBT runs the stun cycle and yields changeIds; refused with snapshots present', async () => {
    const db = await vm('db01');
    assert.equal((await getVm(c, db)).disks[0]!.changeId, undefined);
    assert.equal(await enableCbt(c, db), true);
    const info = await getVm(c, db);
    assert.equal(info.cbtEnabled, true);
    assert.ok(info.disks.every((d) => d.changeId !== undefined));
    assert.equal((await listSnapshots(c, db)).length, 0, 'the stun snapshot is gone');
    assert.equal(await enableCbt(c, db), false);
  });

  test('the changed-areas loop covers the capacity exactly, randomised windows and writes, many seeds', async () => {
    const web = await vm('web01');
    const seeds = 30;
    for (let seed = 1; seed <= seeds; seed++) {
      let x = seed * 2654435761;
      const rnd = (n: number): number => {
        x = (Math.imul(x ^ (x >>> 13), 1103515245) + 12345) >>> 0;
        return x % n;
      };
      t.lab.world.setCbtWindowing({ maxWindow: 512 * (1 + rnd(4096)), seed });
      const s1 = await createSnapshot(c, web, {
        name: `s1-${seed}`,
        description: '',
        quiesce: false,
        pollMs: 5,
      });
      const cap = s1.disks[0]!.capacityBytes;
      const writes: [number, number][] = [];
      const n = 1 + rnd(12);
      for (let i = 0; i < n; i++) {
        const len = 1 + rnd(70_000);
        const off = rnd(cap - len);
        t.lab.guestWrite('web01', 2000, off, Buffer.alloc(len, seed));
        writes.push([off, off + len]);
      }
      const s2 = await createSnapshot(c, web, {
        name: `s2-${seed}`,
        description: '',
        quiesce: false,
        pollMs: 5,
      });
      const d = s2.disks[0]!;
      assert.equal(changeIdUuid(d.changeId!), changeIdUuid(s1.disks[0]!.changeId!));
      const areas = await queryChangedAreas(c, {
        vm: web,
        snapshot: s2.ref,
        deviceKey: d.key,
        capacityBytes: d.capacityBytes,
        changeId: s1.disks[0]!.changeId!,
      });
      const union = (r: [number, number][]): [number, number][] => {
        const out: [number, number][] = [];
        for (const [a, b] of [...r].sort((p, q) => p[0] - q[0])) {
          const last = out[out.length - 1];
          if (last && a <= last[1]) last[1] = Math.max(last[1], b);
          else out.push([a, b]);
        }
        return out;
      };
      assert.deepEqual(union(areas.map((a) => [a.start, a.start + a.length])), union(writes), `seed ${seed}`);
      const all = await queryChangedAreas(c, {
        vm: web,
        snapshot: s2.ref,
        deviceKey: d.key,
        capacityBytes: d.capacityBytes,
        changeId: '*',
      });
      const allocated = union(all.map((r) => [r.start, r.start + r.length]));
      for (const [a, b] of writes) {
        assert.ok(
          allocated.some(([s, e]) => s <= a && e >= b),
          `seed ${seed}: allocated areas include the write ${a}-${b}`,
        );
      }
      await removeSnapshot(c, s1.ref, { pollMs: 5 });
      await removeSnapshot(c, s2.ref, { pollMs: 5 });
    }
    t.lab.world.setCbtWindowing({ maxWindow: 256 * 1024 * 1024, seed: undefined });
  });

  test('a CBT reset makes the old changeId a FileFault and changes the CBT uuid', async () => {
    const web = await vm('web01');
    const s1 = await createSnapshot(c, web, { name: 'r1', description: '', quiesce: false });
    await removeSnapshot(c, s1.ref);
    t.lab.resetCbt('web01');
    const s2 = await createSnapshot(c, web, { name: 'r2', description: '', quiesce: false });
    const d = s2.disks[0]!;
    assert.notEqual(changeIdUuid(d.changeId!), changeIdUuid(s1.disks[0]!.changeId!));
    await assert.rejects(
      queryChangedAreas(c, {
        vm: web,
        snapshot: s2.ref,
        deviceKey: d.key,
        capacityBytes: d.capacityBytes,
        changeId: s1.disks[0]!.changeId!,
      }),
      FileFaultError,
    );
    await removeSnapshot(c, s2.ref);
  });
});

describe('hot-add, locks and consolidation', () => {
  test('a disk attached to the proxy locks the merge; consolidation fails until it is detached', async () => {
    const web = await vm('web01');
    const proxy = await vm('proxy01');
    const before = t.lab.world.readDisk('web01', 2000, 0, 4096);
    const s = await createSnapshot(c, web, { name: 'backup', description: '', quiesce: false });
    t.lab.guestWrite('web01', 2000, 0, Buffer.alloc(4096, 0xab));
    const att = await attachDisk(c, proxy, { fileName: s.disks[0]!.fileName, controllerKey: 1001 });
    assert.equal(att.controllerKey, 1001);
    assert.equal(att.unitNumber, 0);
    const record = readFileSync(`${t.dir}/attached/${proxy.value}/1001-0.attach`, 'utf8');
    assert.match(record, /attachedBy=reconfigure/);
    assert.match(record, /createdAt=.*\n$/);
    const owned = await listProxyDisks(c, proxy);
    const hot = owned.find((p) => p.disk.key === att.disk.key)!;
    assert.equal(hot.owner?.name, 'web01');
    assert.equal(hot.foreign, true);
    assert.equal(owned.find((p) => p.disk.key === 2000)!.owner, undefined);

    await removeSnapshot(c, s.ref);
    assert.equal((await getVm(c, web)).consolidationNeeded, true);
    await assert.rejects(
      consolidateDisks(c, web),
      (err: unknown) => err instanceof FileLockedError && /locked/.test(err.message),
    );

    await detachDisk(c, proxy, att.disk.key);
    assert.equal(existsSync(`${t.dir}/attached/${proxy.value}/1001-0.attach`), false);
    assert.ok(existsSync(t.lab.world.fsPath(s.disks[0]!.fileName)), 'detach kept the file');
    await consolidateDisks(c, web);
    const after = await getVm(c, web);
    assert.equal(after.consolidationNeeded, false);
    assert.equal(after.disks[0]!.fileName, '[ds1] web01/web01.vmdk');
    assert.deepEqual(t.lab.world.readDisk('web01', 2000, 0, 4096), Buffer.alloc(4096, 0xab));
    assert.notDeepEqual(before, Buffer.alloc(4096, 0xab));
  });

  test('a guest write after a snapshot does not change the snapshot view', async () => {
    const off = await vm('off01');
    t.lab.guestWrite('off01', 2000, 8192, Buffer.alloc(512, 1));
    const s = await createSnapshot(c, off, { name: 'view', description: '', quiesce: true });
    assert.equal(s.quiesced, false, 'a powered-off VM is never quiesced');
    t.lab.guestWrite('off01', 2000, 8192, Buffer.alloc(512, 2));
    assert.deepEqual(t.lab.world.readDisk('off01', 2000, 8192, 512, s.ref.value), Buffer.alloc(512, 1));
    assert.deepEqual(t.lab.world.readDisk('off01', 2000, 8192, 512), Buffer.alloc(512, 2));
    await removeSnapshot(c, s.ref);
    assert.deepEqual(t.lab.world.readDisk('off01', 2000, 8192, 512), Buffer.alloc(512, 2));
  });
});

describe('attach records written by the lab VDDK', () => {
  test('show as disks of the proxy, owned by their VM, and a ReconfigVM remove deletes the record only', async () => {
    const { createAttachRecord } = await import('../../src/lab/attach.js');
    const proxy = await vm('proxy01');
    const web = await getVm(c, await vm('web01'));
    const file = web.disks[0]!.fileName;
    const rec = createAttachRecord(t.dir, {
      vm: proxy.value,
      controllerKey: 1001,
      unitNumber: 3,
      fileName: file,
      diskUuid: '',
      capacityBytes: web.disks[0]!.capacityBytes,
      diskMode: 'independent_nonpersistent',
      attachedBy: 'vddk-hotadd',
      sourceVm: web.ref.value,
      snapshot: '',
      pid: 999999,
      connectionId: 'abc',
    });
    const disks = await listProxyDisks(c, proxy);
    const hot = disks.find((d) => d.disk.key === 2019)!;
    assert.equal(hot.disk.controllerKey, 1001);
    assert.equal(hot.disk.unitNumber, 3);
    assert.equal(hot.disk.diskMode, 'independent_nonpersistent');
    assert.equal(hot.owner?.ref.value, web.ref.value);
    await detachDisk(c, proxy, 2019);
    assert.equal(existsSync(rec.path), false);
    assert.ok(existsSync(t.lab.world.fsPath(file)));
  });
});
