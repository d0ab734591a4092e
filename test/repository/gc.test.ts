import { test } from 'node:test';
import assert from 'node:assert/strict';
import { until } from '../until.js';
import { join } from 'node:path';
import { RawImageSource } from '../../src/pipeline/image-file.js';
import type { DiskSource } from '../../src/pipeline/disk.js';
import type { Manifest } from '../../src/repository/manifest.js';
import {
  assertSameFile,
  backupImage,
  makeImage,
  mixedImage,
  newRepo,
  noise,
  tempDir,
  text,
} from './helpers.js';

/**
 * A source whose reads wait for `gate` (given the read's number, from 0), so that GC runs while
 * the backup is in progress however fast the machine is. It has no descriptor for the workers, so
 * every read goes through `read`.
 */
async function gatedSource(
  path: string,
  gate: (read: number) => Promise<void>,
): Promise<DiskSource & { inner: RawImageSource }> {
  const inner = await RawImageSource.open(path);
  let reads = 0;
  return {
    inner,
    capacity: inner.capacity,
    description: `${path} (gated)`,
    extents: () => inner.extents(),
    read: async (o, l) => {
      await gate(reads++);
      return inner.read(o, l);
    },
    close: () => inner.close(),
  };
}

test('GC running concurrently with backups loses nothing, and still collects what nothing references', async () => {
  const t = await tempDir('gc');
  const repo = await newRepo(t.path);
  try {
    const imageA = await mixedImage(join(t.path, 'a.img'), 1);
    const p1 = await backupImage(repo, imageA, 'vm-a');

    // Orphaned chunks: a backup of B that was aborted (its chunks stay, unreferenced), and one of
    // unique content C.
    const content = Buffer.concat([noise(1024 * 1024, 21), text(512 * 1024, 22)]);
    const imageB = await makeImage(join(t.path, 'b.img'), 2 * 1024 * 1024, [[0, content]]);
    const imageC = await makeImage(join(t.path, 'c.img'), 1024 * 1024, [[0, noise(1024 * 1024, 23)]]);
    for (const img of [imageB, imageC]) {
      const s = await repo.beginBackup({ name: 'aborted' });
      const src = await RawImageSource.open(img);
      await s.backupDisk(src, { disk: 0 });
      await src.close();
      await s.abort();
    }
    await new Promise((r) => setTimeout(r, 20));

    // A backup of B that reuses the orphaned chunks (found, touched, not rewritten), then a GC
    // with no grace period before that backup commits: the reused chunks must survive it.
    const s1 = await repo.beginBackup({ name: 'vm-b' });
    const srcB = await RawImageSource.open(imageB);
    const statsB = await s1.backupDisk(srcB, { disk: 0 });
    assert.ok(statsB.dedupChunks >= 16, `the backup of B reused the orphaned chunks (${statsB.dedupChunks})`);
    const first = await repo.gc({ graceMs: 0 });
    assert.ok(
      first.chunksDeleted >= 16,
      `the unique orphaned chunks of C were collected (${first.chunksDeleted})`,
    );

    // An incremental based on p1 while GC runs again and again with no grace period: each of the
    // incremental's 48 reads, every 16th waits for one more GC to finish (three in all).
    const s2 = await repo.beginBackup({ name: 'vm-a' });
    let running = true;
    let gcRuns = 0;
    const srcA = await gatedSource(imageA, (n) =>
      until(`GC run ${1 + Math.floor(n / 16)}`, () => !running || gcRuns >= 1 + Math.floor(n / 16), 60_000),
    );
    const gcLoop = (async () => {
      while (running) {
        await repo.gc({ graceMs: 0, lockWaitMs: 30_000 });
        gcRuns++;
        // The maintenance lock is not a queue: the prune below polls for it every 100 ms, and a GC
        // that took it back at once could starve that prune for its whole 30 s wait.
        await new Promise((r) => setTimeout(r, 250));
      }
    })();
    let p2: Manifest, pb: Manifest, pa: Manifest;
    try {
      const backups = s2.backupDisk(srcA, {
        disk: 0,
        base: { pointId: p1.id, disk: 0 },
        changedExtents: [{ offset: 0, length: 3 * 1024 * 1024 }],
      });
      // Prune while the incremental runs: its base p1 is in use and must be kept.
      p2 = await backupImage(repo, imageA, 'vm-a');
      const pruned = await repo.prune({ keepLast: 1 }, { name: 'vm-a', lockWaitMs: 30_000 });
      assert.deepEqual(
        pruned.kept.map((k) => [k.id, k.rule]).sort(),
        [
          [p1.id, 'in-use'],
          [p2.id, 'last'],
        ].sort(),
      );
      await backups;
      pb = await s1.commit({ consistency: 'crash' });
      pa = await s2.commit({ consistency: 'crash' });
    } finally {
      // Stop the GC loop whatever happened, or it would keep this test file running.
      running = false;
      await gcLoop;
    }
    await srcA.close();
    await srcB.close();
    assert.ok(gcRuns >= 3, `gc ran ${gcRuns} times during the backups`);

    await repo.gc({ graceMs: 0 });
    const v = await repo.verify();
    assert.ok(v.ok, JSON.stringify(v.points.filter((p) => !p.ok)));
    for (const [point, image] of [
      [pb.id, imageB],
      [pa.id, imageA],
      [p2.id, imageA],
    ] as const) {
      const out = join(t.path, `${point}.img`);
      await repo.restoreToFile(point, 0, out);
      await assertSameFile(out, image);
    }
  } finally {
    // Always: an open repository keeps its chunk workers, and with them this test file, running.
    await repo.close();
    await t.cleanup();
  }
});
