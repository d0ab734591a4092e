import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Polls `cond` until it holds, and fails naming `what` once `limitMs` has passed. Tests wait on
 * the condition itself, never on a delay assumed long enough: the limit only ends a broken run,
 * so it is generous (a slow, loaded machine may take far longer than the steps need here).
 */
export async function until(
  what: string,
  cond: () => boolean | Promise<boolean>,
  limitMs = 120_000,
): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}
