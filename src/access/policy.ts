// The one place where every DICOMweb request is checked: who is calling (identify) and what of
// the catalog the request may see (authorize). Routes never check rights themselves: they pass
// the decision's scope down to the catalog, which then shows nothing else, so a study, series or
// instance outside the caller's rights reads exactly as an unknown one (404, no existence oracle),
// and search results and their counts cover only what the caller may see.
import type { FastifyRequest } from 'fastify';
import type { CatalogScope } from '../catalog/scope.ts';
import type { Principal } from '../identity/principal.ts';

export type { Principal } from '../identity/principal.ts';

export type AccessAction = 'search' | 'retrieve' | 'store';

/** What a retrieval sends: metadata, frames, bulk data, rendered images, whole instances, an anchor receipt. */
export type RetrievedData = 'metadata' | 'frames' | 'bulkdata' | 'rendered' | 'dicom' | 'receipt';

/** What a request touches, as far as the URL says. */
export interface AccessResource {
  action: AccessAction;
  level: 'studies' | 'study' | 'series' | 'instance';
  studyInstanceUID?: string;
  seriesInstanceUID?: string;
  sopInstanceUID?: string;
  dataType?: RetrievedData;
}

export interface AccessDecision {
  allowed: boolean;
  /** Refused: the reason given (and recorded). */
  reason?: string;
  /** What the request may see; absent: everything (staff, open mode). */
  scope?: CatalogScope;
  /** Metadata requests: the instances whose bulk data (pixel data) the caller may also fetch; absent: as `scope`. */
  bulkScope?: CatalogScope;
  /** The grants the access rests on: their revocation or end cuts a response that is still streaming. */
  grants?: ReadonlyArray<{ id: string; notAfter: Date | null }>;
  /** Why it is allowed: 'open mode', 'staff policy', 'own studies', or the grants'. */
  basis?: string;
}

export interface AuditEvent {
  time: string;
  principal: Principal;
  resource: AccessResource;
  method: string;
  url: string;
  status: number;
  /** False when the response broke off before its end (a corrupt block, the client gone, a grant revoked). */
  complete: boolean;
  remoteAddress: string;
  /** Why it was allowed, or why refused. */
  basis?: string;
  /** The request's id within the process: pairs an access recorded before serving with how it ended. */
  id?: string;
  /** Refused: the reason given (failed identity included), where `basis` says nothing. */
  reason?: string;
  /** Bytes written to the client's connection for this response, headers included. */
  bytes?: number;
  /** The grants the access rested on (their ids). */
  grants?: string[];
}

export interface AccessPolicy {
  /** The caller; throws UNAUTHORIZED (401) when it cannot be established. */
  identify(request: FastifyRequest): Promise<Principal>;
  authorize(principal: Principal, resource: AccessResource): Promise<AccessDecision>;
}

export interface AuditSink {
  /** How a request ended, or its refusal; never waits. */
  record(event: AuditEvent): void;
  /**
   * An allowed request, before it is served: resolves once it is recorded durably, and rejects
   * (AUDIT_UNAVAILABLE) when it cannot be: the request is then refused rather than served
   * unrecorded. Absent: a sink that only records (the log).
   */
  admit?(event: AuditEvent): Promise<void>;
  /**
   * The whole response of an admitted request (`id`: AuditEvent.id), produced before its admission
   * was written: a sink may record it with the access (status, body length). Absent: ignored.
   */
  respond?(id: string, status: number, bodyBytes: number): void;
}

/** Everyone may do everything: `--open`, for development on loopback only. */
export const openPolicy: AccessPolicy = {
  identify: async () => ({ id: 'anonymous', roles: ['ingest', 'staff', 'admin'], method: 'none' }),
  authorize: async () => ({ allowed: true, basis: 'open mode' }),
};

/** Route config that declares what a route touches; the app's access hook reads it. */
export interface AccessRouteConfig {
  access: { action: AccessAction; dataType?: RetrievedData };
}

// Named on fastify's route config too: @fastify/swagger (the /api's OpenAPI) adds optional fields
// to it, and TypeScript then checks every route's config against them (a "weak type").
declare module 'fastify' {
  interface FastifyContextConfig {
    access?: AccessRouteConfig['access'];
  }
}

/** The resource a request names, from its route config and URL parameters. */
export function resourceOf(action: AccessAction, params: Record<string, string | undefined>, dataType?: RetrievedData): AccessResource {
  const r: AccessResource = {
    action,
    level: params.instance ? 'instance' : params.series ? 'series' : params.study ? 'study' : 'studies',
  };
  if (params.study) r.studyInstanceUID = params.study;
  if (params.series) r.seriesInstanceUID = params.series;
  if (params.instance) r.sopInstanceUID = params.instance;
  if (dataType) r.dataType = dataType;
  return r;
}
