import { test } from 'node:test';
import { createHmac } from 'node:crypto';
import assert from 'node:assert/strict';
import { open, readFile, readdir, stat } from 'node:fs/promises';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import { Repository } from '../../src/repository/repository.js';
import { IndexReader } from '../../src/repository/index-file.js';
import { RepositoryError } from '../../src/repository/errors.js';
import { RawImageSource } from '../../src/pipeline/image-file.js';
import { DiskIoError } from '../../src/pipeline/errors.js';
import {
  assertSameFile,
  backupImage,
  mixedImage,
  newRepo,
  tempDir,
  PASSPHRASE,
  CHUNK,
  TEST_KDF,
  makeImage,
  noise,
  text,
} from './helpers.js';
import { mutateImage, writeSampleImage } from '../../src/lab/sample-image.js';
import {
  CHUNK_ID_ALGORITHMS,
  ChunkCodec,
  DEFAULT_CHUNK_ID_ALGORITHM,
} from '../../src/repository/chunk-codec.js';

test('full backup and restore are byte-identical for holes, written zeros, duplicates and a ragged end', async (t2) => {
  const t = await tempDir('rt');
  try {
    const repo = await newRepo(t.path);
    t2.after(() => repo.close());
    const image = await mixedImage(join(t.path, 'a.img'));
    const m = await backupImage(repo, image, 'vm-a');
    const s = m.disks[0]!.stats;
    assert.equal(m.disks[0]!.capacity, (await stat(image)).size);
    assert.ok(s.zeroChunks > 40, 'holes and written zeros are zero chunks');
    assert.ok(s.dedupChunks >= 4, 'the chunk-aligned duplicate is deduplicated');
    const out = join(t.path, 'out.img');
    await repo.restoreToFile(m.id, 0, out);
    await assertSameFile(out, image);
    const st = await stat(out);
    assert.ok(st.blocks * 512 < st.size / 2, 'zero chunks are restored as holes');
    // The same repository opened again (another process would do the same) restores the same.
    await repo.close();
    const again = await Repository.open(join(t.path, 'repo'), PASSPHRASE);
    t2.after(() => again.close());
    const range = await again.readRange(m.id, 0, 2 * 1024 * 1024 - 100, 300 * 1024);
    assert.deepEqual(
      range,
      (await readFile(image)).subarray(2 * 1024 * 1024 - 100, 2 * 1024 * 1024 - 100 + 300 * 1024),
    );
    const rangeFile = join(t.path, 'range.img');
    await again.restoreToFile(m.id, 0, rangeFile, { range: { offset: 5 * 1024 * 1024, length: 12345 } });
    assert.deepEqual(await readFile(rangeFile), (await readFile(image)).subarray(5 * 1024 * 1024));
    await again.close();
  } finally {
    await t.cleanup();
  }
});

test('with direct I/O turned off (VBPROXY_DIRECT_IO=off) a repository backs up, verifies and restores the same bytes', async (t2) => {
  // By default chunk objects and restored disks go past the page cache with O_DIRECT (the file
  // system may refuse, and then they go through it); this is the page-cache path on its own.
  const saved = process.env.VBPROXY_DIRECT_IO;
  process.env.VBPROXY_DIRECT_IO = 'off';
  const t = await tempDir('nodirect');
  try {
    const repo = await newRepo(t.path);
    t2.after(() => repo.close());
    const image = await mixedImage(join(t.path, 'a.img'));
    const m = await backupImage(repo, image, 'vm');
    assert.ok((await repo.verify({ pointId: m.id })).ok, 'the point verifies');
    const out = join(t.path, 'out.img');
    await repo.restoreToFile(m.id, 0, out);
    await assertSameFile(out, image);
    await repo.close();
  } finally {
    if (saved === undefined) delete process.env.VBPROXY_DIRECT_IO;
    else process.env.VBPROXY_DIRECT_IO = saved;
    await t.cleanup();
  }
});

test('bad VBPROXY_DIRECT_IO and VBPROXY_CHUNK_WORKERS values are refused with the variable named', async () => {
  const saved = { io: process.env.VBPROXY_DIRECT_IO, workers: process.env.VBPROXY_CHUNK_WORKERS };
  const t = await tempDir('settings');
  try {
    const repo = await newRepo(t.path);
    await repo.close();
    for (const [name, value, expected] of [
      ['VBPROXY_DIRECT_IO', 'yes', /VBPROXY_DIRECT_IO must be "on" or "off", not "yes"/],
      ['VBPROXY_CHUNK_WORKERS', '0', /VBPROXY_CHUNK_WORKERS must be a whole number from 1 to 64, not "0"/],
      [
        'VBPROXY_CHUNK_WORKERS',
        'two',
        /VBPROXY_CHUNK_WORKERS must be a whole number from 1 to 64, not "two"/,
      ],
    ] as const) {
      process.env[name] = value;
      await assert.rejects(
        Repository.open(join(t.path, 'repo'), PASSPHRASE, { startWorkers: true }),
        (err: Error) => err instanceof RepositoryError && expected.test(err.message),
      );
      delete process.env[name];
    }
  } finally {
    for (const [name, value] of [
      ['VBPROXY_DIRECT_IO', saved.io],
      ['VBPROXY_CHUNK_WORKERS', saved.workers],
    ] as const) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
    await t.cleanup();
  }
});

test('every chunk-id algorithm names chunks by content under the repository key and round trips', async (t2) => {
  const t = await tempDir('idalg');
  try {
    const image = await mixedImage(join(t.path, 'a.img'));
    const ids: Record<string, string[]> = {};
    for (const algorithm of CHUNK_ID_ALGORITHMS) {
      const repo = await Repository.init(join(t.path, algorithm), PASSPHRASE, {
        chunkIdAlgorithm: algorithm,
        chunkSize: CHUNK,
        kdf: TEST_KDF,
      });
      t2.after(() => repo.close());
      assert.equal(repo.config.chunkId, algorithm);
      const m = await backupImage(repo, image, 'vm');
      const out = join(t.path, `${algorithm}.img`);
      await repo.restoreToFile(m.id, 0, out);
      await assertSameFile(out, image);
      ids[algorithm] = (await readdir(join(t.path, algorithm, 'chunks'), { recursive: true }))
        .filter((n) => /[0-9a-f]{64}$/.test(n))
        .sort();
      assert.ok(ids[algorithm].length > 10);
      await repo.close();
      // Reopened, the repository keeps its algorithm (it is in the authenticated config).
      const again = await Repository.open(join(t.path, algorithm), PASSPHRASE);
      t2.after(() => again.close());
      assert.equal(again.config.chunkId, algorithm);
      assert.deepEqual(await again.readRange(m.id, 0, 0, 4096), (await readFile(image)).subarray(0, 4096));
      await again.close();
    }
    assert.notDeepEqual(ids['hmac-sha256'], ids['blake2b-256-keyed']);
    assert.notDeepEqual(ids['blake3-keyed'], ids['hmac-sha256']);
    assert.notDeepEqual(ids['blake3-keyed'], ids['blake2b-256-keyed']);
  } finally {
    await t.cleanup();
  }
});

test('chunk ids are the documented keyed functions (BLAKE3 keyed_hash by default: its published test vectors)', () => {
  // BLAKE3's test_vectors.json: key "whats the Elvish word for friend", input byte i = i % 251.
  const key = Buffer.from('whats the Elvish word for friend');
  const input = (n: number): Buffer => Buffer.from(Array.from({ length: n }, (_, i) => i % 251));
  const codec = (algorithm: (typeof CHUNK_ID_ALGORITHMS)[number]): ChunkCodec =>
    new ChunkCodec({ chunkId: key, chunkEnc: Buffer.alloc(32) }, 64 * 1024, algorithm);
  assert.equal(DEFAULT_CHUNK_ID_ALGORITHM, 'blake3-keyed');
  const b3 = codec('blake3-keyed');
  assert.equal(
    b3.digest(input(0)).toString('hex'),
    '92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26',
  );
  assert.equal(
    b3.digest(input(1025)).toString('hex'),
    '357dc55de0c7e382c900fd6e320acc04146be01db6a8ce7210b7189bd664ea69',
  );
  // An all-zero chunk has no id (the index's zero sentinel), whatever the algorithm.
  for (const a of CHUNK_ID_ALGORITHMS) assert.equal(codec(a).id(Buffer.alloc(64 * 1024)), null);
  assert.equal(
    codec('hmac-sha256').digest(input(1025)).toString('hex'),
    createHmac('sha256', key).update(input(1025)).digest('hex'),
  );
});

test('an incremental from changed extents equals a full backup of the same content', async () => {
  const t = await tempDir('incr');
  try {
    const repo = await newRepo(t.path);
    const image = join(t.path, 'disk.img');
    await writeSampleImage(image, { sizeBytes: 24 * 1024 * 1024 + 4096, seed: 7 });
    const full = await backupImage(repo, image, 'vm');
    const changed = await mutateImage(image, { fraction: 0.03, blockSize: 64 * 1024, seed: 8 });
    // A write into a hole and a write of zeros over data, as a guest would do.
    const hole = { offset: 20 * 1024 * 1024, length: 8192 };
    const fh = await open(image, 'r+');
    await fh.write(noise(8192, 3), 0, 8192, hole.offset);
    await fh.write(Buffer.alloc(65536), 0, 65536, 1024 * 1024);
    await fh.close();
    const extents = [...changed, hole, { offset: 1024 * 1024, length: 65536 }];
    const incr = await backupImage(repo, image, 'vm', { base: full.id, extents });
    assert.equal(incr.disks[0]!.mode, 'incremental');
    assert.ok(
      incr.disks[0]!.stats.readBytes < 0.2 * (await stat(image)).size,
      'only the changed chunks are read',
    );
    assert.ok(incr.disks[0]!.stats.reusedChunks > 0);
    const fullAgain = await backupImage(repo, image, 'vm');
    const a = await IndexReader.open(repo.backend, repo.keys.indexEnc, incr.id, 0, {
      capacity: incr.disks[0]!.capacity,
      chunkSize: repo.chunkSize,
    });
    const b = await IndexReader.open(repo.backend, repo.keys.indexEnc, fullAgain.id, 0, {
      capacity: fullAgain.disks[0]!.capacity,
      chunkSize: repo.chunkSize,
    });
    for (let i = 0; i < a.blockCount; i++)
      assert.deepEqual(await a.block(i), await b.block(i), `index block ${i}`);
    const out = join(t.path, 'incr.img');
    await repo.restoreToFile(incr.id, 0, out);
    await assertSameFile(out, image);
    // The earlier point still restores its own content.
    await repo.restoreToFile(full.id, 0, join(t.path, 'full.img'));
    assert.ok(!(await readFile(join(t.path, 'full.img'))).equals(await readFile(image)));
    await repo.close();
  } finally {
    await t.cleanup();
  }
});

test('a failed disk read resumes from the last durable chunk', async () => {
  const t = await tempDir('resume');
  try {
    const repo = await newRepo(t.path);
    // 2048 chunks of 64 KiB fill one index block: make the disk 3 blocks long, mostly holes.
    const size = 3 * 2048 * 64 * 1024 - 1000;
    const image = await makeImage(join(t.path, 'big.img'), size, [
      [0, text(200 * 1024, 1)],
      [150 * 1024 * 1024, noise(300 * 1024, 2)],
      [size - 70 * 1024, noise(70 * 1024, 3)],
    ]);
    const real = await RawImageSource.open(image);
    let failAt: number | undefined = 140 * 1024 * 1024;
    const reads: number[] = [];
    const flaky = {
      capacity: real.capacity,
      description: 'flaky source',
      extents: () => real.extents(),
      close: () => real.close(),
      read: async (offset: number, length: number) => {
        if (failAt !== undefined && offset >= failAt) throw new Error('connection dropped');
        reads.push(offset);
        return real.read(offset, length);
      },
    };
    const s = await repo.beginBackup({ name: 'vm' });
    await assert.rejects(s.backupDisk(flaky, { disk: 0 }), /connection dropped/);
    const durable = s.durableChunks(0);
    assert.equal(durable, 2048, 'the first index block (2048 chunks) is durable');
    failAt = undefined;
    reads.length = 0;
    await s.backupDisk(flaky, { disk: 0 });
    assert.ok(
      reads.every((o) => o >= durable * 64 * 1024),
      'the retry does not re-read durable chunks',
    );
    const m = await s.commit({ consistency: 'crash' });
    await real.close();
    const out = join(t.path, 'out.img');
    await repo.restoreToFile(m.id, 0, out);
    await assertSameFile(out, image);
    await repo.close();
  } finally {
    await t.cleanup();
  }
});

test('chunk workers that read the image themselves store what reads through the event loop store, and a failed read names the source', async (t2) => {
  const t = await tempDir('wr');
  try {
    const repo = await newRepo(t.path);
    t2.after(() => repo.close());
    const image = await mixedImage(join(t.path, 'a.img'));
    const direct = await backupImage(repo, image, 'workers-read'); // RawImageSource: workers read
    const real = await RawImageSource.open(image);
    t2.after(() => real.close());
    // The same file without its descriptors: the pipeline reads it on the event loop.
    const plain = {
      capacity: real.capacity,
      description: 'plain',
      extents: () => real.extents(),
      read: (o: number, l: number) => real.read(o, l),
      close: async () => undefined,
    };
    const s1 = await repo.beginBackup({ name: 'loop-reads' });
    await s1.backupDisk(plain, { disk: 0 });
    const looped = await s1.commit({ consistency: 'image' });
    // Same chunk ids both ways: the second backup finds every chunk the first one stored.
    assert.equal(looped.disks[0]!.stats.zeroChunks, direct.disks[0]!.stats.zeroChunks);
    assert.equal(looped.disks[0]!.stats.newChunks, 0, 'every chunk the workers stored is found again');
    assert.ok(direct.disks[0]!.stats.newChunks > 0);

    // A descriptor the workers cannot read (a directory): the backup fails with the source named.
    const dirFd = openSync(t.path, 'r');
    t2.after(() => closeSync(dirFd));
    const broken = { ...plain, description: 'broken.img', positionalReadFd: dirFd };
    const s2 = await repo.beginBackup({ name: 'broken' });
    await assert.rejects(s2.backupDisk(broken, { disk: 0 }), (err: unknown) => {
      assert.ok(err instanceof DiskIoError, String(err));
      assert.equal(err.code, 'IMAGE_READ');
      assert.match(err.message, /read from broken\.img failed: \d+ bytes at \d+: EISDIR/);
      return true;
    });
    await s2.abort();
    // The workers let go of what they held: the next backup runs and restores exactly.
    const again = await backupImage(repo, image, 'after-failure');
    const out = join(t.path, 'out.img');
    await repo.restoreToFile(again.id, 0, out);
    await assertSameFile(out, image);
    assert.equal((await repo.listPoints()).points.length, 3);
  } finally {
    await t.cleanup();
  }
});
