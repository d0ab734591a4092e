import tls from 'node:tls';
import { isIP } from 'node:net';
import { VimClient } from './client.js';
import { VimConnectionError, VimTlsError } from './errors.js';
import { normaliseFingerprint, type PeerCertificate } from './transport.js';

/** A vCenter as the catalog stores it: URL, credentials and the certificate pin (SHA-256 or SHA-1). */
export interface VcenterEndpoint {
  readonly url: string;
  readonly username: string;
  readonly password: string;
  /** The certificate pin: a SHA-256 fingerprint (32 hex pairs) or a SHA-1 thumbprint (20 pairs). */
  readonly thumbprint: string | null;
}

const SHA256_PAIRS = 32;
const SHA1_PAIRS = 20;

function pairs(fp: string): number {
  return normaliseFingerprint(fp).split(':').filter(Boolean).length;
}

/**
 * Opens a TLS connection to the endpoint without trusting it, only to read its certificate's
 * fingerprints; nothing is sent. A connection failure is a VimConnectionError naming the URL.
 */
export function probeCertificate(url: string, timeoutMs = 10_000): Promise<PeerCertificate> {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const port = Number(u.port || 443);
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host,
      port,
      rejectUnauthorized: false,
      ...(isIP(host) === 0 ? { servername: host } : {}),
    });
    socket.setTimeout(timeoutMs);
    const fail = (detail: string, cause?: unknown): void => {
      socket.destroy();
      reject(new VimConnectionError(url, detail, cause));
    };
    socket.once('secureConnect', () => {
      const c = socket.getPeerCertificate();
      socket.end();
      if (!c?.fingerprint256) return fail('the server presented no certificate');
      resolve({
        fingerprint256: normaliseFingerprint(c.fingerprint256),
        thumbprintSha1: normaliseFingerprint(c.fingerprint),
      });
    });
    socket.once('timeout', () => fail(`no TLS handshake within ${timeoutMs} ms`));
    socket.once('error', (err: NodeJS.ErrnoException) => fail(err.code ?? err.message, err));
  });
}

/**
 * The SHA-256 fingerprint to pin for an endpoint. A SHA-256 pin is used as is. A SHA-1 thumbprint
 * (what vSphere shows) is compared with the server's certificate, whose SHA-256 is then pinned for
 * the session. Without a pin the connection is refused, naming the fingerprint the server presents
 * so that an administrator can check it and pin it.
 */
export async function pinFor(ep: VcenterEndpoint, timeoutMs?: number): Promise<string> {
  const pin = ep.thumbprint === null ? '' : normaliseFingerprint(ep.thumbprint);
  if (pin !== '' && pairs(pin) === SHA256_PAIRS) return pin;
  const peer = await probeCertificate(ep.url, timeoutMs);
  if (pin === '') {
    throw new VimTlsError(
      `no certificate pin is stored for ${ep.url}: the server presents SHA-256 fingerprint ${peer.fingerprint256}; ` +
        'check it against the vCenter certificate and give it as the thumbprint',
    );
  }
  if (pairs(pin) !== SHA1_PAIRS) {
    throw new VimTlsError(`the pinned thumbprint ${pin} of ${ep.url} is neither SHA-256 nor SHA-1`);
  }
  if (pin !== peer.thumbprintSha1) {
    throw new VimTlsError(
      `the server at ${ep.url} presented certificate SHA-1 ${peer.thumbprintSha1} (SHA-256 ${peer.fingerprint256}), ` +
        `not the pinned ${pin}; check that this is the right vCenter, then update the pinned thumbprint`,
    );
  }
  return peer.fingerprint256;
}

/** Connects and logs in to a vCenter endpoint with its pinned certificate. */
export async function connectEndpoint(
  ep: VcenterEndpoint,
  opts: { timeoutMs?: number } = {},
): Promise<VimClient> {
  const fingerprint256 = await pinFor(ep, opts.timeoutMs);
  return VimClient.connect({
    url: ep.url,
    username: ep.username,
    password: ep.password,
    fingerprint256,
    ...(opts.timeoutMs === undefined ? {} : { timeoutMs: opts.timeoutMs }),
  });
}
