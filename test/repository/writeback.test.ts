import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SessionError } from '../../src/repository/errors.js';
import type { Repository } from '../../src/repository/repository.js';
import { backupImage, makeImage, newRepo, noise, tempDir } from './helpers.js';

// A session starts a flush of the repository's file system in the background after every 64 MiB
// of new chunk objects (src/repository/session.ts, WRITEBACK_STEP); the commit still flushes itself.
const IMAGE_BYTES = 96 * 1024 * 1024;

/**
 * A repository and a 96 MiB incompressible image in a temporary directory; every flush of the
 * repository's file system goes through `flush`, which gets the real one.
 */
async function setup(
  t2: TestContext,
  flush: (real: () => Promise<void>) => Promise<void>,
): Promise<{ repo: Repository; image: string }> {
  const t = await tempDir('wb');
  t2.after(() => t.cleanup());
  const repo = await newRepo(t.path);
  t2.after(() => repo.close());
  const image = await makeImage(join(t.path, 'big.img'), IMAGE_BYTES, [[0, noise(IMAGE_BYTES, 5)]]);
  const backend = repo.backend;
  const real = backend.syncAll.bind(backend);
  backend.syncAll = () => flush(real);
  return { repo, image };
}

test('a large backup flushes its chunks in the background and still flushes before it commits', async (t2) => {
  const flushes: string[] = [];
  const { repo, image } = await setup(t2, async (real) => {
    flushes.push(new Error().stack ?? '');
    await real();
  });
  const m = await backupImage(repo, image, 'big');
  assert.ok(flushes.length >= 2, `a background flush and the commit's flush (saw ${flushes.length})`);
  assert.ok(
    flushes.some((s) => s.includes('commit')),
    "the commit's own flush",
  );
  assert.ok(
    flushes.some((s) => !s.includes('commit')),
    'a background flush before the commit',
  );
  assert.ok((await repo.verify({ pointId: m.id })).ok, 'the point verifies');
});

test('a failed background flush fails the commit, and no restore point is left', async (t2) => {
  let calls = 0;
  const { repo, image } = await setup(t2, async (real) => {
    calls++;
    if (calls === 1) throw Object.assign(new Error('EIO: i/o error, syncfs'), { code: 'EIO' });
    await real();
  });
  await assert.rejects(backupImage(repo, image, 'big'), (err: unknown) => {
    assert.ok(err instanceof SessionError);
    assert.match(err.message, /flushing its chunk objects to disk failed/);
    assert.match(String((err.cause as Error).message), /EIO/);
    return true;
  });
  assert.deepEqual((await repo.listPoints()).points, []);
});
