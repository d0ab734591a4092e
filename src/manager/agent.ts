import { readSecretFileAt } from '../config/load.js';
import { describeError } from '../errors.js';
import type { Logger } from '../log.js';
import type { ManagerClient } from './client.js';
import {
  deleteCredentials,
  readCredentials,
  tokenFingerprint,
  writeCredentials,
  type Credentials,
} from './credentials.js';
import { ManagerRejectedError, ManagerUnreachableError } from './errors.js';
import { PROTOCOL_VERSION, type HeartbeatRequest, type RegisterRequest } from './protocol.js';

export type RegistrationState =
  | 'starting'
  | 'registered'
  | 'manager-unreachable'
  | 'waiting-for-token'
  | 'enrollment-rejected'
  | 'revoked'
  | 'error'
  | 'stopped';

export interface AgentStatus {
  state: RegistrationState;
  proxyId: string | null;
  lastError: string | null;
  lastHeartbeatAt: Date | null;
  heartbeats: number;
}

export interface AgentOptions {
  client: ManagerClient;
  enrollmentTokenFile: string;
  credentialsFile: string;
  /** What this proxy is (identity, version, VM, hosts and datastores it sees, capacity). */
  describe: () => Promise<Omit<RegisterRequest, 'protocolVersion'>>;
  /** Current status and load for a heartbeat. */
  load: () => Promise<Omit<HeartbeatRequest, 'protocolVersion' | 'time'>>;
  logger: Logger;
  /** First retry delay and the cap of the exponential backoff (defaults 2 s and 5 min). */
  backoff?: { initialMs: number; maxMs: number };
}

/**
 * Keeps this proxy registered with the manager: registers with the enrollment token when there are
 * no credentials, then sends heartbeats. It never throws and never blocks local work: an
 * unreachable manager is retried with exponential backoff (with jitter); a rejected token waits
 * for a different token in the token file; a revoked proxy drops its credentials and registers
 * again once a new token is written.
 */
export class RegistrationAgent {
  readonly #o: AgentOptions;
  readonly #initial: number;
  readonly #max: number;
  #failures = 0;
  #stopped = false;
  #wake: (() => void) | undefined;
  #loop: Promise<void> | undefined;
  /** Token fingerprints that must not be tried again (rejected, or used by a revoked registration). */
  readonly #spent = new Set<string>();
  #status: AgentStatus = {
    state: 'starting',
    proxyId: null,
    lastError: null,
    lastHeartbeatAt: null,
    heartbeats: 0,
  };

  constructor(options: AgentOptions) {
    this.#o = options;
    this.#initial = options.backoff?.initialMs ?? 2000;
    this.#max = options.backoff?.maxMs ?? 300_000;
  }

  status(): AgentStatus {
    return { ...this.#status };
  }

  start(): void {
    this.#loop ??= this.#run();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#loop;
    this.#set({ state: 'stopped' });
  }

  /** One registration attempt (for `vbproxy register`): throws on any failure. */
  async registerOnce(): Promise<Credentials> {
    const token = this.#readToken();
    const info = await this.#o.describe();
    const r = await this.#o.client.register(token, { protocolVersion: PROTOCOL_VERSION, ...info });
    const creds: Credentials = {
      managerUrl: this.#o.client.url,
      proxyId: r.proxyId,
      secret: r.secret,
      registeredAt: new Date().toISOString(),
      enrollmentTokenSha256: tokenFingerprint(token),
    };
    writeCredentials(this.#o.credentialsFile, creds);
    this.#set({ state: 'registered', proxyId: r.proxyId, lastError: null });
    return creds;
  }

  #set(patch: Partial<AgentStatus>): void {
    this.#status = { ...this.#status, ...patch };
  }

  #readToken(): string {
    return readSecretFileAt(
      this.#o.enrollmentTokenFile,
      'manager.enrollmentTokenFile',
      this.#o.enrollmentTokenFile,
    )
      .toString('utf8')
      .trim();
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms);
      t.unref();
      function done() {
        clearTimeout(t);
        resolve();
      }
      this.#wake = done;
    });
  }

  #backoffMs(): number {
    const base = Math.min(this.#max, this.#initial * 2 ** Math.min(this.#failures, 30));
    this.#failures++;
    return Math.round(base * (0.8 + Math.random() * 0.4));
  }

  async #run(): Promise<void> {
    let nextInterval = 0;
    while (!this.#stopped) {
      try {
        nextInterval = await this.#step();
      } catch (err) {
        this.#set({ state: 'error', lastError: describeError(err) });
        this.#o.logger.error({ err: describeError(err) }, 'manager registration step failed');
        nextInterval = this.#backoffMs();
      }
      if (this.#stopped) break;
      await this.#sleep(nextInterval);
    }
  }

  /** One step of the loop; returns how long to wait before the next. */
  async #step(): Promise<number> {
    let creds = readCredentials(this.#o.credentialsFile);
    if (creds !== undefined && creds.managerUrl !== this.#o.client.url) creds = undefined; // manager moved
    if (creds === undefined) return this.#tryRegister();
    try {
      const hb = await this.#o.load();
      const r = await this.#o.client.heartbeat(creds.proxyId, creds.secret, {
        protocolVersion: PROTOCOL_VERSION,
        time: new Date().toISOString(),
        ...hb,
      });
      this.#failures = 0;
      this.#set({
        state: 'registered',
        proxyId: creds.proxyId,
        lastError: null,
        lastHeartbeatAt: new Date(),
        heartbeats: this.#status.heartbeats + 1,
      });
      return r.heartbeatIntervalSeconds * 1000;
    } catch (err) {
      if (
        err instanceof ManagerRejectedError &&
        ['proxy_revoked', 'unknown_proxy', 'invalid_credentials'].includes(err.managerCode)
      ) {
        deleteCredentials(this.#o.credentialsFile);
        this.#spent.add(creds.enrollmentTokenSha256);
        this.#set({ state: 'revoked', proxyId: null, lastError: err.message });
        this.#o.logger.warn(
          { proxyId: creds.proxyId, reason: err.managerCode },
          'the manager revoked this proxy; write a new enrollment token to register again',
        );
        return this.#backoffMs();
      }
      return this.#unreachable(err);
    }
  }

  async #tryRegister(): Promise<number> {
    let token: string;
    try {
      token = this.#readToken();
    } catch (err) {
      this.#set({ state: 'waiting-for-token', lastError: describeError(err) });
      return this.#backoffMs();
    }
    if (token.length === 0 || this.#spent.has(tokenFingerprint(token))) {
      if (this.#status.state !== 'revoked' && this.#status.state !== 'enrollment-rejected') {
        this.#set({ state: 'waiting-for-token' });
      }
      return this.#backoffMs();
    }
    try {
      const creds = await this.registerOnce();
      this.#failures = 0;
      this.#o.logger.info(
        { proxyId: creds.proxyId, manager: this.#o.client.url },
        'registered with the manager',
      );
      return 0;
    } catch (err) {
      if (err instanceof ManagerRejectedError && err.managerCode === 'invalid_token') {
        this.#spent.add(tokenFingerprint(token));
        this.#set({ state: 'enrollment-rejected', lastError: err.message });
        this.#o.logger.error(
          { manager: this.#o.client.url },
          'the manager rejected the enrollment token; write a valid one to the token file',
        );
        return this.#backoffMs();
      }
      return this.#unreachable(err);
    }
  }

  #unreachable(err: unknown): number {
    const transient = err instanceof ManagerUnreachableError;
    this.#set({ state: transient ? 'manager-unreachable' : 'error', lastError: describeError(err) });
    const delay = this.#backoffMs();
    this.#o.logger.warn({ err: describeError(err), retryInMs: delay }, 'manager request failed; retrying');
    return delay;
  }
}
