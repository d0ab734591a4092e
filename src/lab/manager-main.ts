#!/usr/bin/env node
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { LabManager } from './manager.js';

/**
 * The lab manager as a process, for the demo and manual runs:
 *   node dist/src/lab/manager-main.js [--listen 127.0.0.1] [--port 0] [--token-file FILE] [--heartbeat-interval 30]
 * Prints `lab manager listening on <url>` and, when no token file is given, a fresh enrollment
 * token on the next line. Stops on SIGTERM/SIGINT.
 */
const { values } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    'token-file': { type: 'string' },
    'heartbeat-interval': { type: 'string', default: '30' },
  },
});
const lab = new LabManager({ heartbeatIntervalSeconds: Number(values['heartbeat-interval']) });
let printed: string | undefined;
if (values['token-file'] !== undefined)
  lab.addEnrollmentToken(readFileSync(values['token-file'], 'utf8').trim());
else printed = lab.newEnrollmentToken();
const url = await lab.start(Number(values.port), values.listen);
process.stdout.write(`lab manager listening on ${url}\n`);
if (printed !== undefined) process.stdout.write(`enrollment token: ${printed}\n`);
await new Promise<void>((resolve) => {
  process.once('SIGTERM', () => resolve());
  process.once('SIGINT', () => resolve());
});
await lab.stop();
