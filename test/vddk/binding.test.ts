/**
 * The binding against the lab VDDK, through the public API (worker thread, ReadAsync/WriteAsync,
 * typed errors). One Vddk per process: VDDK allows InitEx once.
 */
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import koffi from 'koffi';
import { readFileSync, readdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { isTransient } from '../../src/errors.js';
import { createLogger } from '../../src/log.js';
import {
  Vddk,
  VddkDiskSource,
  VddkDiskTarget,
  VddkConnectionError,
  VddkNotFoundError,
  VddkOutOfRangeError,
  VddkPermissionError,
  VddkRuleViolationError,
  VddkTransportError,
  VddkError,
  thumbprintFromPem,
  sessionCookie,
  type VddkConnectionSpec,
} from '../../src/vddk/index.js';
import {
  createLab,
  createBaseDisk,
  createDelta,
  pattern,
  LAB_THUMBPRINT,
  GRAIN,
  type Lab,
} from './fixtures.js';

const MiB = 1024 * 1024;
let lab: Lab;
let vddk: Vddk;

function spec(over: Partial<VddkConnectionSpec> = {}): VddkConnectionSpec {
  return {
    server: 'vcenter.lab',
    thumbprint: LAB_THUMBPRINT,
    credentials: {
      kind: 'session',
      cookie: 'vmware_soap_session="52a01262-bf93"',
      userName: 'backup@vsphere.local',
    },
    vmMoref: 'vm-42',
    snapshotMoref: 'snapshot-17',
    transports: ['nbdssl'],
    ...over,
  };
}

before(async () => {
  lab = createLab({ proxyVm: 'vm-9', hotaddDatastores: 'ds1' });
  vddk = await Vddk.start({
    configFile: lab.configFile,
    logger: createLogger('vddk-test', { level: 'silent' }),
  });
});

after(async () => {
  await vddk.exit();
  lab.remove();
});

test('start reports the lab library, its version and transports; a second start is the same instance', async () => {
  assert.equal(vddk.isLab, true);
  assert.equal(vddk.identity.version, '8.0.0');
  assert.deepEqual(vddk.identity.transports, ['file', 'san', 'hotadd', 'nbdssl', 'nbd']);
  assert.equal(await Vddk.start(), vddk);
  assert.equal(await vddk.errorText(16007), 'The requested sectors are beyond the end of the disk');
});

test('a snapshot chain reads through deltas, with GetInfo, metadata and allocated blocks', async () => {
  const base = createBaseDisk(lab, {
    folder: 'chain',
    name: 'chain',
    capacity: 4 * MiB,
    writes: [
      { offset: 0, data: pattern(GRAIN, 1) },
      { offset: 2 * MiB, data: pattern(3 * GRAIN, 2) },
    ],
  });
  const d1 = createDelta(base, { n: 1, writes: [{ offset: 100, data: pattern(1000, 3) }] });
  const d2 = createDelta(d1, { n: 2, writes: [{ offset: 3 * MiB + 512, data: pattern(GRAIN, 4) }] });
  const conn = await vddk.connect(spec());
  try {
    const disk = await conn.open(d2.dsPath);
    assert.equal(disk.transport, 'nbdssl');
    assert.equal(disk.capacity, 4 * MiB);
    assert.equal(disk.info.numLinks, 3);
    assert.equal(disk.info.parentFileNameHint, 'chain-000001.vmdk');
    assert.equal(disk.info.uuid, base.uuid);
    assert.deepEqual(disk.info.geometry, { cylinders: 261, heads: 255, sectors: 63 });
    assert.equal(disk.info.logicalSectorSize, 512);
    const all = await disk.read(0, 4 * MiB);
    assert.ok(all.equals(d2.content!), 'the chain reads as the topmost view');
    // The middle snapshot still reads as it was (frozen file).
    const mid = await conn.open(d1.dsPath);
    assert.ok((await mid.read(0, 4 * MiB)).equals(d1.content!));
    await mid.close();
    const meta = await disk.metadata();
    assert.equal(meta['ddb.uuid'], base.uuid);
    assert.equal(meta['ddb.grainSize'], '4096');
    assert.deepEqual(Object.keys(meta).slice(0, 2), ['ddb.adapterType', 'ddb.uuid']);
    assert.deepEqual(await disk.allocatedExtents(), [
      { offset: 0, length: 64 * 1024 },
      { offset: 2 * MiB, length: 64 * 1024 },
      { offset: 3 * MiB, length: 64 * 1024 },
    ]);
    // Several reads in flight on one disk, each Buffer owning its whole ArrayBuffer.
    const parts = await Promise.all([0, 1, 2, 3].map((i) => disk.read(i * MiB, MiB)));
    for (const [i, p] of parts.entries()) {
      assert.equal(p.byteOffset, 0);
      assert.equal(p.buffer.byteLength, p.length);
      assert.ok(p.equals(d2.content!.subarray(i * MiB, (i + 1) * MiB)));
    }
    const sync = await disk.read(2 * MiB, 8192, { synchronous: true });
    assert.ok(sync.equals(d2.content!.subarray(2 * MiB, 2 * MiB + 8192)));
    await disk.close();
    // Unbuffered (how backups open snapshot disks): aligned buffers, and the same bytes through
    // the lab's direct reads, for whole grains and for ranges that are not 4 KiB-aligned.
    const raw = await conn.open(d2.dsPath, { unbuffered: true });
    assert.equal(raw.unbuffered, true);
    for (const [offset, length] of [
      [0, 4 * MiB],
      [2 * MiB, 256 * 1024],
      [512, 3 * 512],
      [3 * MiB + 512, 8192],
    ] as const) {
      const got = await raw.read(offset, length);
      assert.equal(koffi.address(got) % 4096n, 0n, 'sector-aligned buffer');
      assert.ok(got.equals(d2.content!.subarray(offset, offset + length)), `bytes at ${offset}+${length}`);
    }
    await raw.close();
  } finally {
    await conn.disconnect();
  }
});

test('writes to a delta copy grains on write, set the grain map, journal CBT, and flush', async () => {
  const base = createBaseDisk(lab, {
    folder: 'restore',
    name: 'restore',
    capacity: MiB,
    writes: [{ offset: 0, data: pattern(MiB, 9) }],
    ctk: true,
  });
  const delta = createDelta(base, { n: 1 });
  const conn = await vddk.connect(spec({ readOnly: false, transports: ['nbd'] }));
  try {
    const disk = await conn.open(delta.dsPath, { readOnly: false });
    const expected = Buffer.from(delta.content!);
    const a = pattern(1024, 10);
    const b = pattern(512, 11);
    await Promise.all([disk.write(GRAIN + 512, a), disk.write(5 * GRAIN, b)]);
    await disk.write(8 * GRAIN, pattern(512, 12), { synchronous: true });
    expected.set(a, GRAIN + 512);
    expected.set(b, 5 * GRAIN);
    expected.set(pattern(512, 12), 8 * GRAIN);
    await disk.flush();
    assert.ok((await disk.read(0, MiB)).equals(expected));
    await disk.close();
    const map = readFileSync(delta.descriptor.replace(/\.vmdk$/, '-delta.map'));
    assert.equal(map[0], 0b00100010, 'grains 1 and 5 present');
    assert.equal(map[1], 0b00000001, 'grain 8 present');
    // The base disk is untouched (frozen); the delta extent holds the whole copied grain.
    const flat = readFileSync(base.descriptor.replace(/\.vmdk$/, '-flat.vmdk'));
    assert.ok(flat.equals(base.content!));
    const ctk = readFileSync(base.ctk!, 'utf8').trim().split('\n');
    assert.deepEqual(
      ctk.slice(2).sort(),
      [`w ${GRAIN + 512} 1024`, `w ${5 * GRAIN} 512`, `w ${8 * GRAIN} 512`].sort(),
    );
  } finally {
    await conn.disconnect();
  }
});

test('a local connection opens a file path with transport "file", and a read-only open refuses writes', async () => {
  const base = createBaseDisk(lab, {
    folder: 'local',
    name: 'local',
    capacity: MiB,
    writes: [{ offset: 512, data: pattern(512, 5) }],
  });
  const conn = await vddk.connectLocal();
  try {
    const disk = await conn.open(base.descriptor);
    assert.equal(disk.transport, 'file');
    assert.ok((await disk.read(0, 4096)).equals(base.content!.subarray(0, 4096)));
    await assert.rejects(disk.write(0, Buffer.alloc(512)), (err: unknown) => {
      assert.ok(err instanceof VddkPermissionError);
      assert.equal(err.vixCode, 11);
      assert.equal(isTransient(err), false);
      return true;
    });
    await disk.close();
  } finally {
    await conn.disconnect();
  }
});

test('transport choice: hotadd when allowed (attach record), else the next mode; none usable is a transport error', async () => {
  const base = createBaseDisk(lab, { folder: 'tp', name: 'tp', capacity: MiB });
  const hot = await vddk.connect(spec({ transports: ['hotadd', 'nbdssl'] }));
  const disk = await hot.open(base.dsPath);
  assert.equal(disk.transport, 'hotadd');
  const records = readdirSync(lab.attachDir('vm-9'));
  assert.deepEqual(records, ['1001-0.attach']);
  const rec = readFileSync(`${lab.attachDir('vm-9')}/1001-0.attach`, 'utf8');
  assert.match(
    rec,
    /^vm=vm-9\ncontrollerKey=1001\nunitNumber=0\ndeviceKey=2016\nfileName=\[ds1\] tp\/tp.vmdk\n/,
  );
  assert.match(
    rec,
    /attachedBy=vddk-hotadd\nsourceVm=vm-42\nsnapshot=snapshot-17\npid=\d+\nconnectionId=[0-9a-f]{16}\ncreatedAt=\S+Z\n$/,
  );
  // A second hot-added disk takes the next unit.
  const second = await hot.open(base.dsPath);
  assert.deepEqual(readdirSync(lab.attachDir('vm-9')).sort(), ['1001-0.attach', '1001-1.attach']);
  await second.close();
  await disk.close();
  assert.deepEqual(readdirSync(lab.attachDir('vm-9')), [], 'Close detaches');
  await hot.disconnect();

  // Without a snapshot, hotadd is refused and nbd is used.
  const noSnap = await vddk.connect(spec({ snapshotMoref: undefined, transports: ['hotadd', 'nbd'] }));
  const d2 = await noSnap.open(base.dsPath);
  assert.equal(d2.transport, 'nbd');
  await d2.close();
  await noSnap.disconnect();

  // Only hotadd, on a datastore the proxy cannot see: no transport.
  const other = createBaseDisk(lab, { ds: 'ds2', folder: 'x', name: 'x', capacity: MiB });
  const onlyHot = await vddk.connect(spec({ transports: ['hotadd'] }));
  await assert.rejects(onlyHot.open(other.dsPath), (err: unknown) => {
    assert.ok(err instanceof VddkTransportError, String(err));
    assert.equal(err.vixCode, 6);
    assert.match(err.message, /none of the transport modes hotadd can open \[ds2\] x\/x.vmdk/);
    return true;
  });
  await onlyHot.disconnect();
});

test('errors: wrong thumbprint, missing disk, beyond capacity, unaligned range', async () => {
  const base = createBaseDisk(lab, { folder: 'err', name: 'err', capacity: MiB });
  const wrong = await vddk.connect(spec({ thumbprint: LAB_THUMBPRINT.replace('5E', '00') }));
  await assert.rejects(wrong.open(base.dsPath), (err: unknown) => {
    assert.ok(err instanceof VddkConnectionError);
    assert.equal(err.vixCode, 1);
    assert.equal(err.transient, false);
    assert.match(err.message, /thumbprint/);
    return true;
  });
  await wrong.disconnect();
  const conn = await vddk.connect(spec());
  try {
    await assert.rejects(conn.open('[ds1] nope/nope.vmdk'), (err: unknown) => {
      assert.ok(err instanceof VddkNotFoundError);
      assert.equal(err.vixCode, 4);
      assert.match(err.message, /\[ds1\] nope\/nope.vmdk/);
      return true;
    });
    const disk = await conn.open(base.dsPath);
    await assert.rejects(disk.read(MiB - 512, 1024), (err: unknown) => {
      assert.ok(err instanceof VddkOutOfRangeError);
      assert.equal(err.vixCode, 16007);
      assert.equal(err.operation, 'VixDiskLib_ReadAsync');
      return true;
    });
    await assert.rejects(disk.read(100, 512), VddkRuleViolationError);
    await disk.close();
  } finally {
    await conn.disconnect();
  }
});

test('fault injection: failed read, dropped connection, failing Open', async () => {
  const base = createBaseDisk(lab, {
    folder: 'fault',
    name: 'fault',
    capacity: MiB,
    writes: [{ offset: 0, data: pattern(MiB, 7) }],
  });
  lab.writeFaults({ 'read.fail.nth': 2, 'read.fail.code': 16002 });
  let conn = await vddk.connect(spec());
  let disk = await conn.open(base.dsPath);
  await disk.read(0, 4096);
  await assert.rejects(disk.read(4096, 4096), (err: unknown) => {
    assert.ok(err instanceof VddkError);
    assert.equal(err.vixCode, 16002);
    assert.equal(err.transient, true);
    return true;
  });
  assert.ok(
    (await disk.read(4096, 4096)).equals(base.content!.subarray(4096, 8192)),
    'only the 2nd read fails',
  );
  await disk.close();
  await conn.disconnect();

  lab.writeFaults({ 'connection.dropAfterBytes': 65536 });
  conn = await vddk.connect(spec());
  disk = await conn.open(base.dsPath);
  await disk.read(0, 65536);
  await assert.rejects(disk.read(65536, 512), (err: unknown) => {
    assert.ok(err instanceof VddkConnectionError);
    assert.equal(err.vixCode, 14011);
    assert.equal(err.transient, true);
    return true;
  });
  await assert.rejects(disk.read(0, 512), VddkConnectionError, 'the connection stays dropped');
  await disk.close();
  await conn.disconnect();

  lab.writeFaults({ 'open.fail.code': 13003, 'open.fail.count': 1 });
  conn = await vddk.connect(spec());
  await assert.rejects(
    conn.open(base.dsPath),
    (err: unknown) => err instanceof VddkNotFoundError && err.vixCode === 13003,
  );
  disk = await conn.open(base.dsPath);
  await disk.close();
  await conn.disconnect();
  lab.clearFaults();
});

test('DiskSource and DiskTarget move a disk through the pipeline interfaces', async () => {
  const src = createBaseDisk(lab, {
    folder: 'src',
    name: 'src',
    capacity: 2 * MiB,
    writes: [
      { offset: 0, data: pattern(128 * 1024, 20) },
      { offset: MiB + 64 * 1024, data: pattern(64 * 1024, 21) },
    ],
  });
  const dst = createBaseDisk(lab, { folder: 'dst', name: 'dst', capacity: 2 * MiB, ctk: true });
  const rconn = await vddk.connect(spec());
  const wconn = await vddk.connect(spec({ readOnly: false, vmMoref: 'vm-77', snapshotMoref: undefined }));
  const source = new VddkDiskSource(await rconn.open(src.dsPath), {
    maxConcurrentReads: 3,
    disconnectOnClose: true,
  });
  const target = new VddkDiskTarget(await wconn.open(dst.dsPath, { readOnly: false }), {
    disconnectOnClose: true,
  });
  assert.equal(source.capacity, 2 * MiB);
  assert.match(source.description, /\[ds1\] src\/src.vmdk \(VDDK nbdssl\)/);
  const extents = await source.extents();
  assert.deepEqual(extents, [
    { offset: 0, length: 128 * 1024 },
    { offset: MiB + 64 * 1024, length: 64 * 1024 },
  ]);
  await Promise.all(extents.map(async (e) => target.write(e.offset, await source.read(e.offset, e.length))));
  await target.flush();
  // A buffer given back (recycle) is read into again by the next read of its length.
  const first = await source.read(0, 64 * 1024);
  const where = koffi.address(first);
  source.recycle(first);
  const again = await source.read(MiB + 64 * 1024, 64 * 1024);
  assert.equal(koffi.address(again), where, 'the recycled memory is reused');
  assert.ok(again.equals(pattern(64 * 1024, 21)));
  await source.close();
  await target.close();
  assert.ok(readFileSync(dst.descriptor.replace(/\.vmdk$/, '-flat.vmdk')).equals(src.content!));
  // Caller-given (CBT) extents are sorted, merged and clipped to the capacity.
  const conn = await vddk.connect(spec());
  const cbt = new VddkDiskSource(await conn.open(src.dsPath), {
    extents: [
      { offset: MiB, length: 4096 },
      { offset: 0, length: 512 },
      { offset: MiB + 2048, length: 4096 },
      { offset: 2 * MiB - 512, length: 4096 },
    ],
    disconnectOnClose: true,
  });
  assert.deepEqual(await cbt.extents(), [
    { offset: 0, length: 512 },
    { offset: MiB, length: 6144 },
    { offset: 2 * MiB - 512, length: 512 },
  ]);
  await cbt.close();
});

test('Cleanup, PrepareForAccess and EndAccess with vCenter parameters', async () => {
  assert.deepEqual(await vddk.cleanup(spec({ vmMoref: undefined })), { cleanedUp: 0, remaining: 0 });
  await vddk.prepareForAccess(spec(), 'vbproxy-job-1');
  await vddk.endAccess(spec(), 'vbproxy-job-1');
  await assert.rejects(
    vddk.prepareForAccess(spec({ vmMoref: undefined }), 'vbproxy-job-1'),
    VddkRuleViolationError,
  );
  await assert.rejects(vddk.prepareForAccess(spec(), 'x'.repeat(51)), VddkRuleViolationError);
});

test('connection parameters: thumbprint from a PEM certificate, session cookie form, bad thumbprint', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-cert-'));
  try {
    const gen = spawnSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:P-256',
        '-nodes',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
        '-subj',
        '/CN=vcenter.lab',
        '-days',
        '1',
      ],
      { encoding: 'utf8' },
    );
    assert.equal(gen.status, 0, gen.stderr);
    const fp = spawnSync(
      'openssl',
      ['x509', '-in', join(dir, 'cert.pem'), '-noout', '-fingerprint', '-sha1'],
      { encoding: 'utf8' },
    );
    const expected = fp.stdout.trim().replace(/^.*=/, '').toUpperCase();
    assert.equal(thumbprintFromPem(readFileSync(join(dir, 'cert.pem'))), expected);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  assert.throws(() => thumbprintFromPem('not a certificate'), VddkError);
  assert.equal(
    sessionCookie('vmware_soap_session="abc-123"; Path=/; HttpOnly'),
    'vmware_soap_session="abc-123"',
  );
  assert.equal(sessionCookie('abc-123'), 'vmware_soap_session="abc-123"');
  await assert.rejects(vddk.connect(spec({ thumbprint: 'AA:BB' })), /not a SHA-1 thumbprint/);
});
