import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express, { type NextFunction, type Request, type Response } from 'express';
import {
  heartbeatRequest,
  PROTOCOL_VERSION,
  registerRequest,
  type HeartbeatRequest,
  type RegisterRequest,
} from '../manager/protocol.js';

/** A proxy as the lab manager knows it. */
export interface LabProxy {
  proxyId: string;
  registration: RegisterRequest;
  registeredAt: Date;
  revoked: boolean;
  heartbeats: HeartbeatRequest[];
}

export interface LabManagerOptions {
  /** Enrollment tokens accepted at start (more with addEnrollmentToken). */
  enrollmentTokens?: string[];
  /** The interval the manager asks proxies to heartbeat at (seconds, default 30). */
  heartbeatIntervalSeconds?: number;
}

const sha = (s: string) => createHash('sha256').update(s, 'utf8').digest();

function fail(res: Response, status: number, code: string, message: string): void {
  res.status(status).json({ error: { code, message } });
}

/**
 * The manager side of the registration protocol (docs/manager-protocol.md), small enough for the
 * demo and the tests to start in-process. State is in memory. Enrollment tokens may be used any
 * number of times until removed; proxy secrets are kept as SHA-256 hashes.
 */
export class LabManager {
  readonly #tokens = new Set<string>();
  readonly #proxies = new Map<string, LabProxy & { secretHash: Buffer }>();
  readonly #interval: number;
  #server: Server | undefined;
  /** Every request the manager received (method, path, status), for tests. */
  readonly requests: { method: string; path: string; status: number }[] = [];

  constructor(options: LabManagerOptions = {}) {
    for (const t of options.enrollmentTokens ?? []) this.addEnrollmentToken(t);
    this.#interval = options.heartbeatIntervalSeconds ?? 30;
  }

  addEnrollmentToken(token: string): void {
    this.#tokens.add(sha(token).toString('hex'));
  }

  removeEnrollmentToken(token: string): void {
    this.#tokens.delete(sha(token).toString('hex'));
  }

  /** A fresh random enrollment token, already accepted. */
  newEnrollmentToken(): string {
    const t = `enr_${randomBytes(24).toString('base64url')}`;
    this.addEnrollmentToken(t);
    return t;
  }

  revoke(proxyId: string): void {
    const p = this.#proxies.get(proxyId);
    if (p === undefined) throw new Error(`lab manager: no proxy ${proxyId}`);
    p.revoked = true;
  }

  proxies(): LabProxy[] {
    return [...this.#proxies.values()].map(({ secretHash: _s, ...p }) => p);
  }

  proxy(proxyId: string): LabProxy | undefined {
    const p = this.#proxies.get(proxyId);
    if (p === undefined) return undefined;
    const { secretHash: _s, ...rest } = p;
    return rest;
  }

  #bearer(req: Request): string | undefined {
    return /^Bearer\s+(\S+)$/i.exec(req.get('authorization') ?? '')?.[1];
  }

  app(): express.Express {
    const app = express();
    app.use(express.json({ limit: '1mb' }));
    app.use((req, res, next) => {
      res.on('finish', () =>
        this.requests.push({ method: req.method, path: req.path, status: res.statusCode }),
      );
      next();
    });
    app.post('/api/v1/proxies/register', (req, res) => {
      const token = this.#bearer(req);
      if (token === undefined || !this.#tokens.has(sha(token).toString('hex'))) {
        fail(res, 401, 'invalid_token', 'the enrollment token is not valid (expired, removed or mistyped)');
        return;
      }
      const body = registerRequest.safeParse(req.body);
      if (!body.success) {
        const v = (req.body as { protocolVersion?: unknown } | undefined)?.protocolVersion;
        if (v !== undefined && v !== PROTOCOL_VERSION) {
          fail(
            res,
            400,
            'unsupported_protocol',
            `protocol version ${String(v)} is not supported (use ${PROTOCOL_VERSION})`,
          );
          return;
        }
        const i = body.error.issues[0];
        fail(res, 400, 'invalid_request', `${i?.path.join('.') ?? ''}: ${i?.message ?? 'invalid'}`);
        return;
      }
      const proxyId = randomUUID();
      const secret = randomBytes(32).toString('base64url');
      this.#proxies.set(proxyId, {
        proxyId,
        registration: body.data,
        registeredAt: new Date(),
        revoked: false,
        heartbeats: [],
        secretHash: sha(secret),
      });
      res.status(201).json({ proxyId, secret, heartbeatIntervalSeconds: this.#interval });
    });
    app.post('/api/v1/proxies/:id/heartbeat', (req, res) => {
      const p = this.#proxies.get(String(req.params.id));
      if (p === undefined) {
        fail(res, 404, 'unknown_proxy', `no proxy ${String(req.params.id)}; register again`);
        return;
      }
      const secret = this.#bearer(req);
      if (secret === undefined || !timingSafeEqual(sha(secret), p.secretHash)) {
        fail(res, 401, 'invalid_credentials', 'the proxy credentials are not valid');
        return;
      }
      if (p.revoked) {
        fail(
          res,
          403,
          'proxy_revoked',
          'this proxy was revoked by an administrator; register it with a new token',
        );
        return;
      }
      const body = heartbeatRequest.safeParse(req.body);
      if (!body.success) {
        const i = body.error.issues[0];
        fail(res, 400, 'invalid_request', `${i?.path.join('.') ?? ''}: ${i?.message ?? 'invalid'}`);
        return;
      }
      p.heartbeats.push(body.data);
      res.json({ heartbeatIntervalSeconds: this.#interval });
    });
    app.use((req, res) => fail(res, 404, 'invalid_request', `no route ${req.method} ${req.path}`));
    app.use((err: unknown, _req: Request, res: Response, _next: NextFunction) => {
      const status = (err as { status?: number }).status ?? 500;
      fail(res, status, 'invalid_request', (err as Error).message);
    });
    return app;
  }

  /** Listens on host:port (port 0 = ephemeral); returns the base URL. */
  async start(port = 0, host = '127.0.0.1'): Promise<string> {
    const server = createServer(this.app());
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => resolve());
    });
    this.#server = server;
    return this.url;
  }

  get url(): string {
    if (this.#server === undefined) throw new Error('lab manager is not started');
    const a = this.#server.address() as AddressInfo;
    return `http://${a.address}:${a.port}`;
  }

  async stop(): Promise<void> {
    const s = this.#server;
    if (s === undefined) return;
    this.#server = undefined;
    await new Promise<void>((resolve) => {
      s.close(() => resolve());
      s.closeAllConnections();
    });
  }
}
