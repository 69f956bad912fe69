// The one place where every DICOMweb request is checked and recorded. Patient control (grants per
// study, series or data type; a tamper-evident audit log) plugs in here by providing another
// AccessPolicy and AuditSink; routes never check rights themselves. The embedded default is open
// (the node listens on loopback) and writes audit events to the log.
import type { FastifyRequest } from 'fastify';

export type AccessAction = 'search' | 'retrieve' | 'store';

/** What a request touches, as far as the URL says. */
export interface AccessResource {
  action: AccessAction;
  level: 'studies' | 'study' | 'series' | 'instance';
  studyInstanceUID?: string;
  seriesInstanceUID?: string;
  sopInstanceUID?: string;
  /** 'metadata', 'frames', 'bulkdata' or 'dicom' for retrievals. */
  dataType?: string;
}

export interface Principal {
  /** Who is calling; 'anonymous' on the open default. */
  id: string;
  /** How the caller was identified. */
  method: 'none' | 'token' | 'mtls';
}

export interface AccessDecision {
  allowed: boolean;
  reason?: string;
}

export interface AuditEvent {
  time: string;
  principal: Principal;
  resource: AccessResource;
  method: string;
  url: string;
  status: number;
  /** False when the response broke off before its end (a corrupt block, the client gone). */
  complete: boolean;
  /** Instances stored or bytes sent may be added by services later. */
  remoteAddress: string;
}

export interface AccessPolicy {
  identify(request: FastifyRequest): Promise<Principal>;
  authorize(principal: Principal, resource: AccessResource): Promise<AccessDecision>;
}

export interface AuditSink {
  record(event: AuditEvent): void;
}

export const openPolicy: AccessPolicy = {
  identify: async () => ({ id: 'anonymous', method: 'none' }),
  authorize: async () => ({ allowed: true }),
};

/** Route config that declares what a route touches; the app's access hook reads it. */
export interface AccessRouteConfig {
  access: { action: AccessAction; dataType?: string };
}

/** The resource a request names, from its route config and URL parameters. */
export function resourceOf(action: AccessAction, params: Record<string, string | undefined>, dataType?: string): AccessResource {
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
