import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Repository } from '../../src/repository/repository.js';
import { assertSameFile, cli, mixedImage, PASSPHRASE, tempDir } from './helpers.js';

async function allFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await allFiles(p)));
    else out.push(p);
  }
  return out;
}

test('no passphrase or key appears in any output or repository file; change-passphrase rewrites no data', async () => {
  const t = await tempDir('secrets');
  try {
    const repo = join(t.path, 'repo');
    const image = await mixedImage(join(t.path, 'a.img'));
    const newPass = 'a brand new passphrase 91c2';
    const outputs: string[] = [];
    const run = (args: string[], env?: Record<string, string | undefined>) => {
      const r = cli(args, env);
      outputs.push(r.stdout, r.stderr);
      return r;
    };
    assert.equal(run(['repo', 'init', '--repo', repo, '--chunk-size', '64K', '--json']).status, 0);
    assert.equal(run(['repo', 'backup-image', '--repo', repo, '--image', image, '--name', 'vm']).status, 0);
    assert.equal(
      run(['repo', 'backup-image', '--repo', repo, '--image', image, '--name', 'vm', '--json']).status,
      0,
    );
    const list = run(['repo', 'list', '--repo', repo, '--json']);
    const points = (JSON.parse(list.stdout) as { points: Array<{ id: string }> }).points;
    assert.equal(points.length, 2);
    run(['repo', 'list', '--repo', repo]);
    assert.equal(run(['repo', 'verify', '--repo', repo, '--json']).status, 0);
    assert.equal(run(['repo', 'verify', '--repo', repo, '--sample', '0.5']).status, 0);
    assert.equal(
      run(['repo', 'list', '--repo', repo], { VBPROXY_REPO_PASSPHRASE: `${PASSPHRASE}x` }).status,
      1,
    );

    const chunkDir = join(repo, 'chunks');
    const before = new Map<string, number>();
    for (const f of await allFiles(chunkDir)) before.set(f, (await stat(f)).mtimeMs);

    const newFile = join(t.path, 'new-pass');
    await writeFile(newFile, `${newPass}\n`);
    assert.equal(
      run(['repo', 'change-passphrase', '--repo', repo, '--new-passphrase-file', newFile]).status,
      0,
    );
    const old = run(['repo', 'list', '--repo', repo]);
    assert.equal(old.status, 1);
    assert.match(old.stderr, /wrong passphrase/);
    const env = { VBPROXY_REPO_PASSPHRASE: newPass };
    assert.equal(run(['repo', 'verify', '--repo', repo], env).status, 0);
    const out = join(t.path, 'out.img');
    assert.equal(
      run(['repo', 'restore', '--repo', repo, '--point', points[1]!.id, '--disk', '0', '--output', out], env)
        .status,
      0,
    );
    await assertSameFile(out, image);
    for (const f of await allFiles(chunkDir))
      assert.equal((await stat(f)).mtimeMs, before.get(f), `${f} was not rewritten`);
    assert.equal(run(['repo', 'prune', '--repo', repo, '--keep-last', '1'], env).status, 0);
    assert.equal(run(['repo', 'gc', '--repo', repo, '--grace-seconds', '0'], env).status, 0);
    assert.equal(run(['repo', 'verify', '--repo', repo], env).status, 0);

    const r = await Repository.open(repo, newPass);
    const secrets: string[] = [PASSPHRASE, newPass];
    for (const k of Object.values(r.keys) as Buffer[]) secrets.push(k.toString('hex'), k.toString('base64'));
    await r.close();
    const all = outputs.join('\n');
    for (const s of secrets) assert.ok(!all.includes(s), 'a secret appeared in command output');
    for (const f of await allFiles(repo)) {
      const content = await readFile(f);
      for (const s of secrets) {
        assert.equal(content.includes(Buffer.from(s)), false, `a secret appeared in ${f}`);
      }
      for (const k of Object.values(r.keys) as Buffer[])
        assert.equal(content.includes(k), false, `a raw key appeared in ${f}`);
    }
  } finally {
    await t.cleanup();
  }
});

test('a master key sealed to the manager opens the repository without the passphrase', async () => {
  const t = await tempDir('seal');
  try {
    const sodium = (await import('sodium-native')).default;
    const pk = Buffer.alloc(sodium.crypto_box_PUBLICKEYBYTES);
    const sk = Buffer.alloc(sodium.crypto_box_SECRETKEYBYTES);
    sodium.crypto_box_keypair(pk, sk);
    const dir = join(t.path, 'repo');
    const repo = await Repository.init(dir, PASSPHRASE, {
      chunkSize: 64 * 1024,
      managerPublicKey: pk,
      kdf: { opslimit: 1, memlimit: 1024 * 1024 },
    });
    const image = await mixedImage(join(t.path, 'a.img'));
    const { backupImage } = await import('./helpers.js');
    const point = await backupImage(repo, image, 'vm');
    await repo.close();
    const byManager = await Repository.openWithManagerKey(dir, pk, sk);
    const out = join(t.path, 'out.img');
    await byManager.restoreToFile(point.id, 0, out);
    await assertSameFile(out, image);
    await byManager.close();
    const otherPk = Buffer.alloc(32);
    const otherSk = Buffer.alloc(32);
    sodium.crypto_box_keypair(otherPk, otherSk);
    await assert.rejects(
      Repository.openWithManagerKey(dir, otherPk, otherSk),
      /wrong passphrase|could not be unlocked/,
    );
  } finally {
    await t.cleanup();
  }
});
