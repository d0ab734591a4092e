import { hostname } from 'node:os';
import { z } from 'zod';
import type { Backend } from './backend.js';
import { RepositoryBusyError } from './errors.js';
import { paths } from './format.js';

/** A lock or session whose owner stopped refreshing it for this long is considered dead. */
export const STALE_AFTER_MS = 10 * 60_000;
/** How often owners refresh (touch) their lock or session object. */
export const HEARTBEAT_MS = 30_000;

export const ownerSchema = z.object({
  pid: z.number().int(),
  host: z.string(),
  startedAt: z.number(),
  operation: z.string(),
});
export type Owner = z.infer<typeof ownerSchema>;

export function currentOwner(operation: string): Owner {
  return { pid: process.pid, host: hostname(), startedAt: Date.now(), operation };
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}

/**
 * Whether the owner of a lock or session still runs: on this host, by its pid; elsewhere, by
 * the age of its last heartbeat (the object's mtime).
 */
export function ownerAlive(owner: Owner, mtimeMs: number, now = Date.now()): boolean {
  if (owner.host === hostname()) return processAlive(owner.pid);
  return now - mtimeMs < STALE_AFTER_MS;
}

/** Refreshes an object's mtime periodically while an operation holds it. */
export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  lastBeat = Date.now();
  lastError: unknown;

  constructor(
    private readonly backend: Backend,
    private readonly path: string,
  ) {
    this.timer = setInterval(() => {
      this.backend.touch(this.path).then(
        (ok) => {
          if (ok) this.lastBeat = Date.now();
        },
        (err: unknown) => {
          this.lastError = err;
        },
      );
    }, HEARTBEAT_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}

/**
 * The maintenance lock: prune, gc and change-passphrase hold it exclusively, so they never run
 * at the same time. Backups do not take it (see the GC protocol in docs/repository-format.md).
 */
export class MaintenanceLock {
  private constructor(
    private readonly backend: Backend,
    private readonly heartbeat: Heartbeat,
  ) {}

  /** Takes the lock; when it is busy, retries for up to `waitMs` before failing. */
  static async acquire(backend: Backend, operation: string, waitMs = 0): Promise<MaintenanceLock> {
    const deadline = Date.now() + waitMs;
    for (;;) {
      try {
        return await MaintenanceLock.tryAcquire(backend, operation);
      } catch (err) {
        if (!(err instanceof RepositoryBusyError) || Date.now() >= deadline) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private static async tryAcquire(backend: Backend, operation: string): Promise<MaintenanceLock> {
    const me = currentOwner(operation);
    for (let attempt = 0; attempt < 2; attempt++) {
      if (await backend.createExclusive(paths.maintenanceLock, Buffer.from(JSON.stringify(me)))) {
        return new MaintenanceLock(backend, new Heartbeat(backend, paths.maintenanceLock));
      }
      const info = await backend.stat(paths.maintenanceLock);
      let holder: Owner | undefined;
      try {
        holder = ownerSchema.parse(JSON.parse((await backend.read(paths.maintenanceLock)).toString('utf8')));
      } catch {
        holder = undefined;
      }
      const alive =
        holder && info
          ? ownerAlive(holder, info.mtimeMs)
          : Date.now() - (info?.mtimeMs ?? 0) < STALE_AFTER_MS;
      if (alive) {
        const who = holder
          ? `${holder.operation} (pid ${holder.pid} on ${holder.host}, since ${new Date(holder.startedAt).toISOString()})`
          : 'another process';
        throw new RepositoryBusyError(
          `repository ${backend.location} is locked by ${who}; try again when it has finished`,
        );
      }
      await backend.delete(paths.maintenanceLock);
    }
    throw new RepositoryBusyError(`repository ${backend.location}: could not take the maintenance lock`);
  }

  async release(): Promise<void> {
    this.heartbeat.stop();
    await this.backend.delete(paths.maintenanceLock);
  }
}
