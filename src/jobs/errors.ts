import { VbproxyError } from '../errors.js';

/** A failure of the job layer itself (bad job data, a VM that cannot be backed up, a cancelled job). */
export class JobError extends VbproxyError {
  constructor(code: string, message: string, options: { cause?: unknown; transient?: boolean } = {}) {
    super(code, message, options);
  }
}

/** The operator cancelled the job; the worker stopped after cleaning up. */
export class JobCancelledError extends JobError {
  constructor(jobId: string) {
    super('JOB_CANCELLED', `job ${jobId} was cancelled; its snapshot and hot-added disks were cleaned up`);
  }
}
