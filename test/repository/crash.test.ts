import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { assertSameFile, cli, cliPath, mixedImage, PASSPHRASE, tempDir } from './helpers.js';
import { writeSampleImage } from '../../src/lab/sample-image.js';

async function countChunks(repo: string): Promise<number> {
  let n = 0;
  for (const d of await readdir(join(repo, 'chunks')).catch(() => [] as string[])) {
    if (d !== '.keep') n += (await readdir(join(repo, 'chunks', d))).length;
  }
  return n;
}

test('a backup killed with SIGKILL leaves a repository that verifies clean and accepts the next backup', async () => {
  const t = await tempDir('crash');
  try {
    const repo = join(t.path, 'repo');
    assert.equal(cli(['repo', 'init', '--repo', repo, '--chunk-size', '64K']).status, 0);
    const small = await mixedImage(join(t.path, 'small.img'));
    assert.equal(
      cli(['repo', 'backup-image', '--repo', repo, '--image', small, '--name', 'small']).status,
      0,
    );
    const before = await countChunks(repo);
    const big = join(t.path, 'big.img');
    // Large enough that the writer is still busy while the test polls the chunk directories.
    await writeSampleImage(big, { sizeBytes: 256 * 1024 * 1024, seed: 11, mix: { hole: 0, zero: 0 } });

    // Kill the writer in the middle: once it has stored some chunks, but long before it is done.
    const child = spawn(
      process.execPath,
      [cliPath, 'repo', 'backup-image', '--repo', repo, '--image', big, '--name', 'big'],
      {
        env: { ...process.env, VBPROXY_REPO_PASSPHRASE: PASSPHRASE },
        stdio: 'ignore',
      },
    );
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on('exit', (_code, signal) => resolve(signal)),
    );
    const deadline = Date.now() + 60_000;
    while ((await countChunks(repo)) < before + 30 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 10));
    child.kill('SIGKILL');
    assert.equal(await exited, 'SIGKILL', 'the backup was killed before it finished');

    let r = cli(['repo', 'list', '--repo', repo, '--json']);
    const names = (JSON.parse(r.stdout) as { points: Array<{ name: string }> }).points.map((p) => p.name);
    assert.deepEqual(names, ['small'], 'the killed backup committed no point');
    r = cli(['repo', 'verify', '--repo', repo]);
    assert.equal(r.status, 0, r.stdout + r.stderr);

    r = cli(['repo', 'backup-image', '--repo', repo, '--image', big, '--name', 'big']);
    assert.equal(r.status, 0, r.stderr);
    r = cli(['repo', 'gc', '--repo', repo, '--grace-seconds', '0', '--json']);
    assert.equal(r.status, 0, r.stderr);
    const gc = JSON.parse(r.stdout) as { indexesDeleted: number; staleSessionsRemoved: number };
    assert.equal(gc.indexesDeleted, 1, "the killed backup's unfinished index is collected");
    assert.equal(gc.staleSessionsRemoved, 1, "the killed backup's session object is collected");
    r = cli(['repo', 'verify', '--repo', repo]);
    assert.equal(r.status, 0, r.stdout);
    const points = (
      JSON.parse(cli(['repo', 'list', '--repo', repo, '--json']).stdout) as {
        points: Array<{ id: string; name: string }>;
      }
    ).points;
    const bigPoint = points.find((p) => p.name === 'big')!;
    const out = join(t.path, 'big-restored.img');
    assert.equal(
      cli(['repo', 'restore', '--repo', repo, '--point', bigPoint.id, '--disk', '0', '--output', out]).status,
      0,
    );
    await assertSameFile(out, big);
  } finally {
    await t.cleanup();
  }
});
