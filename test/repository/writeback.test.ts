import { test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { SessionError } from '../../src/repository/errors.js';
import { backupImage, makeImage, newRepo, noise, tempDir } from './helpers.js';

// A session starts a flush of the repository's file system in the background after every 64 MiB
// of new chunk objects (src/repository/session.ts, WRITEBACK_STEP); the commit still flushes itself.
const IMAGE_BYTES = 96 * 1024 * 1024;

async function bigImage(dir: string): Promise<string> {
  return makeImage(join(dir, 'big.img'), IMAGE_BYTES, [[0, noise(IMAGE_BYTES, 5)]]);
}

test('a large backup flushes its chunks in the background and still flushes before it commits', async (t2) => {
  const t = await tempDir('wb');
  t2.after(() => t.cleanup());
  const repo = await newRepo(t.path);
  t2.after(() => repo.close());
  const image = await bigImage(t.path);
  const backend = repo.backend;
  const real = backend.syncAll.bind(backend);
  const flushes: string[] = [];
  backend.syncAll = async () => {
    flushes.push(new Error().stack ?? '');
    await real();
  };
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
  const t = await tempDir('wbfail');
  t2.after(() => t.cleanup());
  const repo = await newRepo(t.path);
  t2.after(() => repo.close());
  const image = await bigImage(t.path);
  const backend = repo.backend;
  const real = backend.syncAll.bind(backend);
  let calls = 0;
  backend.syncAll = async () => {
    calls++;
    if (calls === 1) throw Object.assign(new Error('EIO: i/o error, syncfs'), { code: 'EIO' });
    await real();
  };
  await assert.rejects(backupImage(repo, image, 'big'), (err: unknown) => {
    assert.ok(err instanceof SessionError);
    assert.match(err.message, /flushing its chunk objects to disk failed/);
    assert.match(String((err.cause as Error).message), /EIO/);
    return true;
  });
  assert.deepEqual((await repo.listPoints()).points, []);
});
