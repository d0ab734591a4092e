import type { Request } from 'express';
import type { z } from 'zod';
import type { Scope } from './auth.js';
import type { ApiDeps } from './deps.js';

/** A validated request as a handler sees it. */
export interface RouteInput<P, Q, B> {
  params: P;
  query: Q;
  body: B;
  deps: ApiDeps;
  req: Request;
  /** The name of the token that authorized the request (null on unauthenticated routes). */
  tokenName: string | null;
}

/** A handler's answer: the status and the JSON body (or a raw text body for /metrics). */
export type RouteResult =
  { status?: number; json: unknown } | { status?: number; text: string; contentType: string };

/**
 * One API route: everything the router, the validator and the OpenAPI generator need. Adding a
 * route anywhere else is a bug the OpenAPI test catches.
 */
export interface RouteDef {
  method: 'get' | 'post' | 'put' | 'delete';
  /** Full path in Express syntax, e.g. /api/v1/jobs/:id */
  path: string;
  summary: string;
  tag: string;
  /** Required scope; null for the unauthenticated routes (/healthz, /readyz, /metrics, the document). */
  scope: Scope | null;
  params?: z.ZodType;
  query?: z.ZodType;
  body?: z.ZodType;
  /** The success status and its body schema (undefined for an empty 204 or a non-JSON body). */
  status: number;
  response?: z.ZodType;
  /** Other statuses this route answers with, documented in the OpenAPI document. */
  errors: number[];
  /** Receives the outputs of params/query/body after validation (typed by `route()`). */
  handler: (input: RouteInput<unknown, unknown, unknown>) => Promise<RouteResult>;
}

/** Builds a RouteDef whose handler input is typed from its schemas. */
export function route<
  P extends z.ZodType = z.ZodType<Record<string, never>>,
  Q extends z.ZodType = z.ZodType<Record<string, never>>,
  B extends z.ZodType = z.ZodType<undefined>,
>(
  def: Omit<RouteDef, 'params' | 'query' | 'body' | 'handler'> & {
    params?: P;
    query?: Q;
    body?: B;
    handler: (input: RouteInput<z.output<P>, z.output<Q>, z.output<B>>) => Promise<RouteResult>;
  },
): RouteDef {
  return def as unknown as RouteDef;
}
