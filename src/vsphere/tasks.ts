import { setTimeout as sleep } from 'node:timers/promises';
import type { VimClient } from './client.js';
import { localizedFaultToError, VimProtocolError } from './errors.js';
import { retrieveOne } from './property.js';
import { isMoRef, isVimObject, type MoRef, type VimValue } from './wire/values.js';

export interface TaskProgress {
  readonly task: MoRef;
  readonly state: string;
  /** 0-100, when the server reports it. */
  readonly progress: number | undefined;
}

export interface WaitOptions {
  readonly onProgress?: (p: TaskProgress) => void;
  /** First poll interval; it doubles up to `maxPollMs`. */
  readonly pollMs?: number;
  readonly maxPollMs?: number;
  readonly signal?: AbortSignal;
}

/**
 * Waits for a Task by polling `info` (RetrievePropertiesEx), reporting progress, and returns
 * `info.result`. A task error becomes the typed fault error naming the task's entity.
 */
export async function waitForTask(
  client: VimClient,
  task: MoRef,
  method: string,
  opts: WaitOptions = {},
): Promise<VimValue | undefined> {
  let delay = opts.pollMs ?? 50;
  const maxDelay = opts.maxPollMs ?? 1000;
  let lastProgress: number | undefined = -1;
  let lastState = '';
  for (;;) {
    opts.signal?.throwIfAborted();
    const { props } = await retrieveOne(client, task, ['info']);
    const info = props.get('info');
    if (!isVimObject(info)) throw new VimProtocolError(`task ${task.value} has no info`);
    const state = typeof info.state === 'string' ? info.state : '';
    const progress = typeof info.progress === 'number' ? info.progress : undefined;
    if (progress !== lastProgress || state !== lastState) {
      opts.onProgress?.({ task, state, progress });
      lastProgress = progress;
      lastState = state;
    }
    if (state === 'success') return info.result;
    if (state === 'error') {
      const entity = isMoRef(info.entity) ? info.entity : undefined;
      throw localizedFaultToError(info.error, { method, target: entity, task });
    }
    await sleep(delay, undefined, opts.signal ? { signal: opts.signal } : undefined);
    delay = Math.min(delay * 2, maxDelay);
  }
}

/** Calls a `*_Task` method and waits for it. */
export async function runTask(
  client: VimClient,
  method: string,
  args: Record<string, VimValue | undefined>,
  opts: WaitOptions = {},
): Promise<VimValue | undefined> {
  const task = await client.call(method, args);
  if (!isMoRef(task)) throw new VimProtocolError(`${method} returned no Task`);
  return waitForTask(client, task, method, opts);
}
