/**
 * The root of every error vbproxy raises on purpose.
 *
 * Each module defines its own subclasses (RepositoryError, VddkError, VimFault, ...) so that callers
 * can tell failures apart by class, and so that the job layer can decide on retries from
 * `transient` alone: a transient error (a dropped connection, an expired session, a busy object)
 * may succeed when retried; a permanent one (a wrong passphrase, a missing VM, a corrupt chunk)
 * never will.
 */
export class VbproxyError extends Error {
  /** A stable, machine-readable identifier such as `REPO_WRONG_PASSPHRASE`. */
  readonly code: string;
  /** True when the same operation may succeed if retried later. */
  readonly transient: boolean;

  constructor(code: string, message: string, options: { cause?: unknown; transient?: boolean } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.transient = options.transient ?? false;
  }
}

/** True when `err` is a vbproxy error marked transient (worth a retry with backoff). */
export function isTransient(err: unknown): boolean {
  return err instanceof VbproxyError && err.transient;
}

/** The message of `err` followed by the messages of its causes, for one-line reports. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let current: unknown = err;
  for (let depth = 0; current !== undefined && current !== null && depth < 8; depth++) {
    if (current instanceof Error) {
      // A ZodError's message is a JSON dump of its issues; our errors already name each issue.
      if (depth > 0 && current.name === 'ZodError') break;
      parts.push(current.message);
      current = current.cause;
    } else {
      parts.push(String(current));
      break;
    }
  }
  return parts.join(': caused by: ');
}
