import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Wall and CPU seconds and peak RSS of one whole process, from GNU time. */
export interface Measured {
  wallS: number;
  cpuS: number;
  maxRssKiB: number;
}

/**
 * Flushes the page cache's dirty data and waits for the file system's pending work. Every measured
 * step starts after one, so that no tool pays for what an earlier step left behind: the previous
 * tool's unsynced writes, or the discards of files the benchmark just deleted (on a file system
 * mounted with `discard`, such as this machine's root, deleting a 2 GiB file queues seconds of
 * TRIM that the next fsync or syncfs of anyone waits for).
 */
export function settle(): void {
  execFileSync('sync');
}

/**
 * `settle`, then a pause, after a step that deleted gigabytes (the previous run's repositories).
 * On this VM the next process right after such a delete ran much slower and used more CPU, user
 * time included: a full vbproxy backup took 5.7-6.7 s and 8.8-9.3 CPU s right after deleting 6 GB,
 * and 3.7-4.7 s and 6.4-7.1 CPU s ten seconds later (the freed memory and the discards are worked
 * off outside the guest's accounting). Whichever tool ran first after the delete paid for it.
 */
export async function quiesce(seconds = 10): Promise<void> {
  settle();
  await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
}

/** Runs a command under /usr/bin/time; throws with its stderr when it fails. */
export async function measure(
  cmd: string,
  args: string[],
  options: {
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    /**
     * Start without `settle` (default true): for a step that must find what the previous step
     * left in the page cache, such as the fsync of a file a tool just restored.
     */
    settleFirst?: boolean;
  } = {},
): Promise<Measured> {
  if (options.settleFirst !== false) settle();
  const dir = mkdtempSync(join(tmpdir(), 'vbproxy-time-'));
  const out = join(dir, 'time');
  try {
    const stderr = await new Promise<string>((resolve, reject) => {
      const child = spawn('/usr/bin/time', ['-f', '%e %U %S %M', '-o', out, cmd, ...args], {
        env: { ...process.env, ...options.env },
        cwd: options.cwd,
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      child.stderr.on('data', (d: Buffer) => (err += d.toString()));
      child.on('error', reject);
      child.on('close', (code) => {
        if (code === 0) resolve(err);
        else reject(new Error(`${cmd} ${args.join(' ')} failed (exit ${code}): ${err.slice(-2000)}`));
      });
    });
    void stderr;
    const [wall, user, sys, rss] = readFileSync(out, 'utf8').trim().split(/\s+/).slice(-4).map(Number);
    return { wallS: wall!, cpuS: user! + sys!, maxRssKiB: rss! };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Apparent size in bytes of everything under a directory. */
export function storedBytes(dir: string): number {
  const r = spawnSync('du', ['-sb', dir], { encoding: 'utf8' });
  return Number(r.stdout.split(/\s+/)[0]);
}

export function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv, cwd?: string): string {
  const r = spawnSync(cmd, args, {
    env: { ...process.env, ...env },
    cwd,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${r.stderr}`);
  return r.stdout;
}

export function have(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Installs Debian packages when their commands are missing (the bench compares against them). */
export function ensureDebian(commands: Record<string, string>): void {
  const missing = Object.entries(commands).filter(([cmd]) => !have(cmd));
  if (missing.length === 0) return;
  const pkgs = missing.map(([, pkg]) => pkg);
  console.error(`installing ${pkgs.join(', ')} with apt-get ...`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  spawnSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
  const r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...pkgs], {
    stdio: 'inherit',
    env,
  });
  const still = missing.filter(([cmd]) => !have(cmd));
  if (r.status !== 0 || still.length > 0) {
    throw new Error(
      `could not install ${still.map(([, p]) => p).join(', ')} (apt-get exit ${r.status}); install them and re-run`,
    );
  }
}

/**
 * How long making one restored file durable takes (`sync FILE`: fsync of that file), measured right
 * after the tool that wrote it, without settling first. vbproxy's restore ends with an fsync of its
 * output; restic's and borg's do not (their restores leave the image in the page cache), so a
 * like-for-like restore time is theirs plus this.
 */
export async function fsyncTime(file: string): Promise<Measured> {
  return measure('sync', [file], { settleFirst: false });
}
