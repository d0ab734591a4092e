import { VbproxyError } from '../errors.js';

/** A command line that cannot be carried out as written (exit code 2). */
export class UsageError extends VbproxyError {
  constructor(message: string) {
    super('CLI_USAGE', message);
  }
}
