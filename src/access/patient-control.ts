// The policy the node runs with unless `--open`: every request names its caller with a bearer
// token, and sees what its roles and the patients' grants allow.
//   staff         everything (the operator's policy; every access is recorded all the same)
//   patient       their own studies (the Patient IDs bound to their account)
//   anyone else   what grants in force name them for (or, for a share-link token, its one grant)
//   ingest only   may store, and read nothing
//   admin only    node operations, no image data
// Grants are read at every request (no cache outlives a revocation or an expiry), and a response
// that rests on grants is cut when one of them is revoked or ends (src/shell/app.ts).
import type { FastifyRequest } from 'fastify';
import type { ScopeClause } from '../catalog/scope.ts';
import type { EnforcedGrant, GrantsForAccess } from '../grants/model.ts';
import { unauthorized } from '../identity/challenge.ts';
import type { Principal } from '../identity/principal.ts';
import type { IdentityStore } from '../identity/store.ts';
import type { AccessDecision, AccessPolicy, AccessResource } from './policy.ts';
import { clauseOf, neededAction, ownClause } from './scope-of.ts';

// Built in src/identity (below this part) so that every source of callers refuses alike.
export { unauthorized };

export interface PatientControlDeps {
  identity: Pick<IdentityStore, 'lookupToken' | 'user' | 'patientIds'>;
  grants?: GrantsForAccess;
  /** Verifies a hospital identity provider's token (src/identity/oidc.ts); absent: only local tokens. */
  oidc?: { verify(token: string): Promise<Principal> };
  /**
   * Whether a bearer token may travel over this request's connection: TLS, loopback, or a trusted
   * proxy that says the client used HTTPS. Elsewhere a token would cross the network in clear.
   */
  secureTransport(request: FastifyRequest): boolean;
  now?: () => Date;
}

export class PatientControlPolicy implements AccessPolicy {
  readonly #deps: PatientControlDeps;
  readonly #now: () => Date;

  constructor(deps: PatientControlDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? (() => new Date());
  }

  async identify(request: FastifyRequest): Promise<Principal> {
    const header = request.headers.authorization;
    if (header === undefined || header === '') throw unauthorized('a bearer token is required', 'invalid_request');
    const m = /^Bearer ([A-Za-z0-9._~+/=-]+)$/.exec(header);
    if (m === null) throw unauthorized('the Authorization header must be "Bearer <token>"', 'invalid_request');
    if (!this.#deps.secureTransport(request)) {
      throw unauthorized('bearer tokens are taken only over HTTPS, on loopback, or from a trusted proxy that received them over HTTPS', 'invalid_request');
    }
    const token = m[1]!;
    if (/^dv[upl]_/.test(token)) return this.#local(token);
    if (this.#deps.oidc !== undefined && token.split('.').length === 3) return this.#deps.oidc.verify(token);
    throw unauthorized('unknown token');
  }

  #local(token: string): Principal {
    const t = this.#deps.identity.lookupToken(token);
    if (t === undefined) throw unauthorized('unknown token');
    if (t.revokedAt !== null) throw unauthorized('the token was revoked');
    if (t.expiresAt !== null && Date.parse(t.expiresAt) <= this.#now().getTime()) throw unauthorized('the token has expired');
    if (t.kind === 'user') {
      const user = this.#deps.identity.user(t.subject);
      if (user === undefined || user.revokedAt !== null) throw unauthorized('the account was revoked');
      return { id: `user:${user.name}`, roles: user.roles, method: 'token', name: user.name };
    }
    if (t.kind === 'patient') return { id: `patient:${t.subject}`, roles: ['patient'], method: 'patient-session', patientAccount: t.subject };
    return { id: `link:${t.subject}`, roles: ['grantee'], method: 'share-link', grantId: t.subject };
  }

  async authorize(principal: Principal, resource: AccessResource): Promise<AccessDecision> {
    const roles = principal.roles;
    if (resource.action === 'store') {
      return roles.includes('ingest') || roles.includes('staff')
        ? { allowed: true, basis: roles.includes('ingest') ? 'role ingest' : 'staff policy' }
        : { allowed: false, reason: 'this account may not store instances' };
    }
    if (roles.includes('staff')) return { allowed: true, basis: 'staff policy' };

    const now = this.#now();
    const clauses: ScopeClause[] = [];
    const bulk: ScopeClause[] = [];
    const bases: string[] = [];
    if (principal.patientAccount !== undefined) {
      const own = ownClause(this.#deps.identity.patientIds(principal.patientAccount));
      clauses.push(own);
      bulk.push(own);
      bases.push('own studies');
    }
    const grants = this.#grantsOf(principal, now);
    if (grants.length === 0 && clauses.length === 0 && !roles.includes('grantee')) {
      return { allowed: false, reason: `an account with the roles ${roles.join(', ')} reads no image data` };
    }
    const action = neededAction(resource.action, resource.dataType);
    const used: EnforcedGrant[] = [];
    for (const g of grants) {
      const clause = clauseOf(g, action, resource.dataType);
      if (clause === undefined) continue;
      clauses.push(clause);
      used.push(g);
      if (resource.dataType === 'metadata') {
        const b = clauseOf(g, action, 'bulkdata');
        if (b !== undefined) bulk.push(b);
      }
    }
    for (const g of used) bases.push(`grant ${g.id}`);
    // Allowed even with nothing in scope: what is out of scope reads as unknown (404) or empty,
    // never as forbidden, so a probe learns nothing about what exists.
    return {
      allowed: true,
      scope: { clauses },
      ...(resource.dataType === 'metadata' ? { bulkScope: { clauses: bulk } } : {}),
      ...(used.length > 0 ? { grants: used.map((g) => ({ id: g.id, notAfter: g.notAfter })) } : {}),
      basis: bases.length > 0 ? bases.join(', ') : 'no grant in force',
    };
  }

  #grantsOf(principal: Principal, now: Date): EnforcedGrant[] {
    const grants = this.#deps.grants;
    if (grants === undefined) return [];
    if (principal.grantId !== undefined) {
      const one = grants.activeById(principal.grantId, now);
      return one === undefined ? [] : [one];
    }
    return grants.activeFor(principal.id, now);
  }
}
