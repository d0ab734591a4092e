import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { RawImageSource } from '../../src/pipeline/image-file.js';
import { normaliseExtents, touchedChunks } from '../../src/pipeline/chunk-grid.js';
import { mutateImage, writeSampleImage } from '../../src/lab/sample-image.js';
import { tempDir } from '../repository/helpers.js';

test('a raw image source lists only allocated extents (SEEK_DATA/SEEK_HOLE), reads holes as zeros', async () => {
  const t = await tempDir('src');
  try {
    const path = join(t.path, 'sparse.img');
    const fh = await open(path, 'w');
    await fh.truncate(64 * 1024 * 1024);
    await fh.write(Buffer.alloc(4096, 1), 0, 4096, 0);
    await fh.write(Buffer.alloc(8192, 2), 0, 8192, 10 * 1024 * 1024);
    await fh.close();
    const src = await RawImageSource.open(path);
    const ex = await src.extents();
    const covered = ex.reduce((s, e) => s + e.length, 0);
    assert.ok(covered < 4 * 1024 * 1024, `holes are not listed (${covered} bytes listed)`);
    assert.ok(ex.some((e) => e.offset <= 0 && e.offset + e.length >= 4096));
    assert.ok(ex.some((e) => e.offset <= 10 * 1024 * 1024 && e.offset + e.length >= 10 * 1024 * 1024 + 8192));
    const hole = await src.read(5 * 1024 * 1024, 1024);
    assert.ok(hole.equals(Buffer.alloc(1024)));
    const buf = await src.read(10 * 1024 * 1024, 8192);
    assert.equal(buf.byteOffset, 0);
    assert.equal(buf.buffer.byteLength, 8192, 'read buffers own their ArrayBuffer (transferable)');
    await src.close();
  } finally {
    await t.cleanup();
  }
});

test('extents map onto the chunk grid: each touched chunk once, in order', () => {
  const ex = normaliseExtents(
    [
      { offset: 100, length: 10 },
      { offset: 0, length: 5 },
      { offset: 1023, length: 2 },
      { offset: 4096, length: 0 },
      { offset: 2048, length: 2048 },
    ],
    5000,
    'test',
  );
  assert.deepEqual([...touchedChunks(ex, 1024)], [0, 1, 2, 3]);
  assert.deepEqual([...touchedChunks(ex, 1024, 2)], [2, 3]);
  assert.throws(
    () => normaliseExtents([{ offset: 4990, length: 20 }], 5000, 'disk 0'),
    /beyond the disk capacity 5000/,
  );
});

test('sample images are deterministic, sparse, VM-like, and mutateImage reports exactly what changed', async () => {
  const t = await tempDir('sample');
  try {
    const a = join(t.path, 'a.img');
    const b = join(t.path, 'b.img');
    const size = 32 * 1024 * 1024 + 512;
    await writeSampleImage(a, { sizeBytes: size, seed: 3 });
    await writeSampleImage(b, { sizeBytes: size, seed: 3 });
    const ha = createHash('sha256')
      .update(await readFile(a))
      .digest('hex');
    assert.equal(
      ha,
      createHash('sha256')
        .update(await readFile(b))
        .digest('hex'),
      'same seed, same bytes',
    );
    const st = await stat(a);
    assert.equal(st.size, size);
    assert.ok(st.blocks * 512 < size, 'holes are left unallocated');
    const head = await readFile(a);
    assert.equal(head[510], 0x55);
    assert.equal(head[511], 0xaa);

    const before = await readFile(a);
    const extents = await mutateImage(a, { fraction: 0.1, blockSize: 64 * 1024, seed: 4 });
    const after = await readFile(a);
    const blocks = Math.ceil(size / 65536);
    const inExtents = (blk: number) =>
      extents.some((e) => e.offset <= blk * 65536 && blk * 65536 < e.offset + e.length);
    let changed = 0;
    let listed = 0;
    for (let blk = 0; blk < blocks; blk++) {
      const s = blk * 65536;
      const differs = !before.subarray(s, s + 65536).equals(after.subarray(s, s + 65536));
      if (differs) {
        changed++;
        assert.ok(inExtents(blk), `changed block ${blk} is in the extents`);
      }
      if (inExtents(blk)) listed++;
    }
    assert.equal(listed, Math.round(blocks * 0.1));
    assert.ok(changed >= listed - 1);

    const clone = join(t.path, 'clone.img');
    await writeSampleImage(clone, { sizeBytes: size, seed: 99, template: 3, divergence: 0.05 });
    const tpl = join(t.path, 'tpl.img');
    await writeSampleImage(tpl, { sizeBytes: size, seed: 3 });
    const c = await readFile(clone);
    const p = await readFile(tpl);
    let same = 0;
    for (let blk = 0; blk < blocks; blk++)
      if (c.subarray(blk * 65536, (blk + 1) * 65536).equals(p.subarray(blk * 65536, (blk + 1) * 65536)))
        same++;
    assert.equal(
      same,
      blocks - Math.round(blocks * 0.05),
      'a clone shares all but the diverged blocks with its template',
    );
  } finally {
    await t.cleanup();
  }
});
