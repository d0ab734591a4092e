import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/**
 * Builds the vcsim Go main (test/conformance/vcsim/main.go) with Debian's golang-go and
 * golang-github-vmware-govmomi-dev in GOPATH mode, cached by source hash, and starts it.
 */

const here = dirname(fileURLToPath(import.meta.url));
/** The Go source lives in the source tree, next to this file's TypeScript original. */
const source = join(here, '..', '..', '..', 'test', 'conformance', 'vcsim', 'main.go');
const GOPATH_SYSTEM = '/usr/share/gocode';

export interface VcsimInfo {
  readonly url: string;
  readonly username: string;
  readonly password: string;
  readonly fingerprint256: string;
}

export type VcsimAvailability = { ok: true } | { ok: false; reason: string };

export function vcsimAvailability(): VcsimAvailability {
  const go = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (go.status !== 0)
    return { ok: false, reason: 'the Go toolchain (Debian package golang-go) is not installed' };
  if (!existsSync(join(GOPATH_SYSTEM, 'src/github.com/vmware/govmomi/simulator'))) {
    return {
      ok: false,
      reason: 'govmomi (Debian package golang-github-vmware-govmomi-dev) is not installed',
    };
  }
  return { ok: true };
}

/** Builds (or reuses) the binary; returns its path. */
export function buildVcsim(): string {
  const src = readFileSync(source);
  const goVersion = spawnSync('go', ['version'], { encoding: 'utf8' }).stdout.trim();
  const hash = createHash('sha256').update(src).update(goVersion).digest('hex').slice(0, 16);
  const cache = join(tmpdir(), 'vbproxy-vcsim-cache');
  const bin = join(cache, `vcsim-${hash}`);
  if (existsSync(bin)) return bin;
  mkdirSync(join(cache, 'gopath'), { recursive: true });
  // One build at a time (test files run in parallel): the others wait for the binary.
  const lock = `${bin}.lock`;
  const deadline = Date.now() + 300_000;
  for (;;) {
    try {
      mkdirSync(lock);
      break;
    } catch {
      if (existsSync(bin)) return bin;
      if (Date.now() > deadline) rmSync(lock, { recursive: true, force: true });
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 500);
    }
  }
  try {
    if (existsSync(bin)) return bin;
    buildInto(bin, cache);
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
  return bin;
}

function buildInto(bin: string, cache: string): void {
  const tmp = `${bin}.tmp-${process.pid}`;
  const r = spawnSync('go', ['build', '-o', tmp, source], {
    encoding: 'utf8',
    env: {
      ...process.env,
      GO111MODULE: 'off',
      GOPATH: `${GOPATH_SYSTEM}:${join(cache, 'gopath')}`,
      GOCACHE: join(cache, 'gocache'),
      GOFLAGS: '',
    },
    timeout: 300_000,
  });
  if (r.status !== 0) throw new Error(`building vcsim failed: ${r.stderr || r.error?.message}`);
  renameSync(tmp, bin);
}

export interface RunningVcsim {
  readonly info: VcsimInfo;
  stop(): Promise<void>;
}

export async function startVcsim(args: string[] = []): Promise<RunningVcsim> {
  const bin = buildVcsim();
  const child: ChildProcess = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  const line = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.once('line', (l) => resolve(l));
    child.once('exit', (code) => reject(new Error(`vcsim exited (${code}): ${stderr}`)));
    setTimeout(() => reject(new Error(`vcsim did not start within 30 s: ${stderr}`)), 30_000).unref();
  });
  const info = JSON.parse(line) as VcsimInfo;
  return {
    info,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.stdin?.end();
        setTimeout(() => child.kill('SIGKILL'), 5000).unref();
      }),
  };
}
