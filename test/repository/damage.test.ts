import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { cp, readdir, readFile, writeFile, truncate, unlink, stat, access, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { backupImage, cli, mixedImage, newRepo, tempDir, noise, makeImage } from './helpers.js';

let dir: { path: string; cleanup: () => Promise<void> };
let pristine: string;
let pointId: string;
let image: string;

before(async () => {
  dir = await tempDir('damage');
  image = await mixedImage(join(dir.path, 'a.img'));
  const repo = await newRepo(dir.path);
  pristine = repo.location;
  pointId = (await backupImage(repo, image, 'vm-a')).id;
  await repo.close();
});
after(() => dir.cleanup());

let copies = 0;
async function copyRepo(): Promise<string> {
  const to = join(dir.path, `copy${++copies}`);
  await cp(pristine, to, { recursive: true });
  return to;
}

async function chunkFiles(repo: string): Promise<string[]> {
  const out: string[] = [];
  for (const d of await readdir(join(repo, 'chunks'))) {
    if (d === '.keep') continue;
    for (const f of await readdir(join(repo, 'chunks', d))) out.push(join(repo, 'chunks', d, f));
  }
  return out.sort();
}

async function flipByte(path: string, at?: number): Promise<void> {
  const b = await readFile(path);
  const i = at ?? Math.floor(b.length / 2);
  b[i] = b[i]! ^ 0x40;
  await writeFile(path, b);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

test('a flipped byte in a chunk: verify names the point and chunk and exits 3; restore fails instead of writing bad data', async () => {
  const repo = await copyRepo();
  const victim = (await chunkFiles(repo))[0]!;
  const id = victim.split('/').pop()!;
  await flipByte(victim);
  const v = cli(['repo', 'verify', '--repo', repo]);
  assert.equal(v.status, 3, v.stderr);
  assert.match(v.stdout, new RegExp(`${pointId}\\s+vm-a\\s+DAMAGED`));
  assert.match(v.stdout, new RegExp(`chunk .*${id}`));
  assert.match(v.stdout, /authentication failed/);
  const vj = cli(['repo', 'verify', '--repo', repo, '--json']);
  assert.equal(vj.status, 3);
  const report = JSON.parse(vj.stdout) as {
    ok: boolean;
    damagedChunks: string[];
    points: Array<{ id: string; ok: boolean }>;
  };
  assert.deepEqual(report.damagedChunks, [id]);
  assert.deepEqual(
    report.points.map((p) => [p.id, p.ok]),
    [[pointId, false]],
  );
  const out = join(dir.path, 'restore-bad.img');
  const r = cli(['repo', 'restore', '--repo', repo, '--point', pointId, '--disk', '0', '--output', out]);
  assert.equal(r.status, 3);
  assert.match(r.stderr, new RegExp(`damaged chunk ${id}`));
  assert.equal(await exists(out), false, 'no half-restored image is left behind');
});

test('a truncated chunk and a missing chunk are named by verify and by restore', async () => {
  const repo = await copyRepo();
  const [a, b] = await chunkFiles(repo);
  await truncate(a!, 20);
  await unlink(b!);
  const v = cli(['repo', 'verify', '--repo', repo]);
  assert.equal(v.status, 3);
  assert.match(v.stdout, new RegExp(`${a!.split('/').pop()}\\): damaged chunk .*truncated`));
  assert.match(
    v.stdout,
    new RegExp(
      `missing chunk ${b!.split('/').pop()}: referenced by restore point ${pointId} disk 0 chunk \\d+`,
    ),
  );
  const r = cli([
    'repo',
    'restore',
    '--repo',
    repo,
    '--point',
    pointId,
    '--disk',
    '0',
    '--output',
    join(dir.path, 'x.img'),
  ]);
  assert.equal(r.status, 3);
  assert.match(r.stderr, /(damaged|missing) chunk [0-9a-f]{64}/);
});

test('a bit-flipped or truncated index, and a bit-flipped manifest, are reported with the object named', async () => {
  const repo1 = await copyRepo();
  const index = join(repo1, 'indexes', pointId, '0.fidx');
  await flipByte(index, 64 + 30);
  let v = cli(['repo', 'verify', '--repo', repo1]);
  assert.equal(v.status, 3);
  assert.match(
    v.stdout,
    new RegExp(`index disk 0: damaged index ${pointId}/disk 0: block 0 .*fails authentication`),
  );
  const r = cli([
    'repo',
    'restore',
    '--repo',
    repo1,
    '--point',
    pointId,
    '--disk',
    '0',
    '--output',
    join(dir.path, 'y.img'),
  ]);
  assert.equal(r.status, 3);
  assert.match(r.stderr, /damaged index/);

  const repo2 = await copyRepo();
  const index2 = join(repo2, 'indexes', pointId, '0.fidx');
  await truncate(index2, (await stat(index2)).size - 100);
  v = cli(['repo', 'verify', '--repo', repo2]);
  assert.equal(v.status, 3);
  assert.match(v.stdout, /damaged index .*truncated/);

  const repo3 = await copyRepo();
  await flipByte(join(repo3, 'points', pointId));
  v = cli(['repo', 'verify', '--repo', repo3]);
  assert.equal(v.status, 3);
  assert.match(v.stdout, new RegExp(`manifest: damaged manifest ${pointId}: authentication failed`));
  const l = cli(['repo', 'list', '--repo', repo3]);
  assert.equal(l.status, 0);
  assert.match(l.stdout, new RegExp(`${pointId}  DAMAGED`));
});

test('wrong passphrase, newer format, missing image and bad command lines get specific errors and exit codes', async () => {
  const repo = await copyRepo();
  let r = cli(['repo', 'list', '--repo', repo], { VBPROXY_REPO_PASSPHRASE: 'not the passphrase' });
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`wrong passphrase for repository ${repo}`));

  r = cli(['repo', 'list', '--repo', repo], {});
  assert.equal(r.status, 2);
  assert.match(r.stderr, /no repository passphrase: set VBPROXY_REPO_PASSPHRASE or pass --passphrase-file/);

  const pf = join(dir.path, 'pass.txt');
  await writeFile(pf, 'correct horse battery staple 7f3a\n');
  r = cli(['repo', 'list', '--repo', repo, '--passphrase-file', pf], {});
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, new RegExp(pointId));

  r = cli(['repo', 'list']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /--repo/);

  r = cli(['repo', 'backup-image', '--repo', repo, '--image', join(dir.path, 'nope.img'), '--name', 'x']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, new RegExp(`image file ${join(dir.path, 'nope.img')} does not exist`));

  r = cli(['repo', 'list', '--repo', join(dir.path, 'no-repo-here')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /no vbproxy repository at/);

  r = cli([
    'repo',
    'restore',
    '--repo',
    repo,
    '--point',
    'nonsense',
    '--disk',
    '0',
    '--output',
    join(dir.path, 'z.img'),
  ]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /restore point "nonsense" not found/);

  const cfgPath = join(repo, 'config');
  const cfg = JSON.parse(await readFile(cfgPath, 'utf8')) as { version: number };
  cfg.version = 99;
  await writeFile(cfgPath, JSON.stringify(cfg));
  r = cli(['repo', 'list', '--repo', repo]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /has format version 99, this vbproxy reads up to version 1: upgrade vbproxy/);
});

test('a full disk (ENOSPC) fails the backup with a specific error and commits nothing', async (t) => {
  const mnt = join(dir.path, 'small');
  await mkdir(mnt);
  const m = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mnt], { encoding: 'utf8' });
  assert.equal(m.status, 0, `this test mounts a 3 MiB tmpfs (needs root, as in CI): ${m.stderr}`);
  t.after(() => {
    spawnSync('umount', [mnt]);
  });
  const repo = join(mnt, 'repo');
  let r = cli(['repo', 'init', '--repo', repo, '--chunk-size', '64K']);
  assert.equal(r.status, 0, r.stderr);
  const big = await makeImage(join(dir.path, 'random.img'), 6 * 1024 * 1024, [
    [0, noise(6 * 1024 * 1024, 5)],
  ]);
  r = cli(['repo', 'backup-image', '--repo', repo, '--image', big, '--name', 'full-disk']);
  assert.equal(r.status, 1);
  assert.match(
    r.stderr,
    new RegExp(`no space left on the device holding ${mnt}/repo/.*nothing was committed`),
  );
  r = cli(['repo', 'list', '--repo', repo, '--json']);
  assert.equal(r.status, 0, r.stderr);
  assert.deepEqual((JSON.parse(r.stdout) as { points: unknown[] }).points, []);
  r = cli(['repo', 'verify', '--repo', repo]);
  assert.equal(r.status, 0);
});
