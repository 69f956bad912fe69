// Grants as the access seam sees them (GrantsForAccess): only those the patient really signed, for
// this node, over Patient IDs the patient's account holds, not revoked, and inside their window.
// Nothing in grants.db is believed as it stands: every use re-checks the statement and the
// patient's signature under the keys the account has registered now, so a row written into the
// database by hand (or by a node that was broken into) grants nothing. Signature checks are pure,
// so their verdicts are cached by a hash of statement, proof and key; the rest is checked at each
// call (a revocation or an end takes effect at the next request). A grant that fails is logged
// (its id and why, no patient data) and left out.
import { createHash } from 'node:crypto';
import type { PatientRef } from '../catalog/scope.ts';
import { VaultError } from '../core/errors.ts';
import type { IdentityStore } from '../identity/store.ts';
import { canonicalJson } from './canonical.ts';
import type { EnforcedGrant, GrantProof, GrantRecord, GrantStatement, GrantsForAccess } from './model.ts';
import { checkProofNow, keyForProof, normalizeProof, verifyProofForSigning, type WebAuthnRp } from './signing.ts';
import { checkStatement, granteePrincipal } from './statement.ts';
import { type GrantStore, markVerified, SHARE_CODE_MAX_TTL_MS } from './store.ts';

/** A share link's bearer token lives this long at most (and never past its grant's end). 12 hours. */
export const DEFAULT_LINK_TOKEN_TTL_MS = 12 * 3_600_000;
/** Signature verdicts kept in memory. 100,000 (~20 MB at most). */
export const DEFAULT_VERDICT_CACHE_SIZE = 100_000;

/** active: enforced now; pending: signed and valid, not started; expired: ended; revoked; invalid: never enforced (the reason says why). */
/** Why a share code was not exchanged, by kind (the token endpoint names the kind, for the share page to word it). */
export const SHARE_CODE_REFUSALS = {
  unknown: 'the share code is unknown',
  used: 'the share code was used already: a share link opens once',
  expired: 'the share code has expired',
  'not-in-force': 'the grant of this share link is not in force (revoked, ended or not valid)',
  'not-a-link': 'the share code is not for a link grant',
} as const;
export type ShareCodeRefusal = keyof typeof SHARE_CODE_REFUSALS;

export type GrantStatus = 'active' | 'pending' | 'expired' | 'revoked' | 'invalid';

export interface GrantCheck {
  status: GrantStatus;
  /** invalid: why (names no patient data). */
  reason?: string;
}

export interface GrantServiceDeps {
  store: GrantStore;
  identity: Pick<IdentityStore, 'patientIds' | 'patientKeys' | 'updateKeyCounter' | 'revokeTokens' | 'issueToken' | 'user'>;
  /** This node's id (node.json): a grant signed for another node is never enforced here. */
  nodeId: string;
  /** The passkeys' relying party; absent: grants signed with a passkey do not verify on this node. */
  webauthn?: WebAuthnRp;
  logger?: { warn(obj: object, msg: string): void };
  linkTokenTtlMs?: number;
  verdictCacheSize?: number;
}

function sameRef(a: PatientRef, b: PatientRef): boolean {
  return a.id === b.id && a.issuer === b.issuer;
}

export class GrantService implements GrantsForAccess {
  readonly #deps: GrantServiceDeps;
  readonly #verdicts = new Map<string, string | null>();
  readonly #listeners = new Set<(grantId: string) => void>();
  /** Grant ids already logged as left out, with the reason: one line per grant and reason, not one per request. */
  readonly #logged = new Map<string, string>();

  constructor(deps: GrantServiceDeps) {
    this.#deps = deps;
  }

  get nodeId(): string {
    return this.#deps.nodeId;
  }

  activeFor(principalId: string, now: Date): EnforcedGrant[] {
    const out: EnforcedGrant[] = [];
    for (const record of this.#deps.store.forGrantee(principalId)) {
      const enforced = this.#enforced(record, now, (s) => granteePrincipal(s.grantee, s.id) === principalId);
      if (enforced !== undefined) out.push(enforced);
    }
    return out;
  }

  /**
   * Every grant naming `principalId` as grantee (or, for a share link's principal, its one grant),
   * newest first, each with where it stands: the grantee's own view (GET /api/grantee/grants).
   * Grants that do not verify are left out: they were never anyone's to use.
   */
  forGrantee(principalId: string, now: Date, grantId?: string): Array<GrantRecord & GrantCheck> {
    const records =
      grantId !== undefined
        ? [this.#deps.store.get(grantId)].filter((r): r is GrantRecord => r !== undefined && r.statement.id === grantId)
        : this.#deps.store.forGrantee(principalId).filter((r) => granteePrincipal(r.statement.grantee, r.statement.id) === principalId);
    return records.map((r) => ({ ...r, ...this.check(r, now) })).filter((r) => r.status !== 'invalid');
  }

  activeById(grantId: string, now: Date): EnforcedGrant | undefined {
    const record = this.#deps.store.get(grantId);
    return record === undefined ? undefined : this.#enforced(record, now, (s) => s.id === grantId);
  }

  onRevoked(listener: (grantId: string) => void): () => void {
    this.#listeners.add(listener);
    return () => void this.#listeners.delete(listener);
  }

  /** Where a stored grant stands now, and for an invalid one, why. */
  check(record: GrantRecord, now: Date): GrantCheck {
    let statement: GrantStatement;
    try {
      statement = checkStatement(record.statement);
    } catch (err) {
      return { status: 'invalid', reason: (err as Error).message };
    }
    const why = this.#invalid(statement, record.proof);
    if (why !== undefined) return { status: 'invalid', reason: why };
    if (record.revokedAt !== null) return { status: 'revoked' };
    if (now.getTime() < Date.parse(statement.notBefore)) return { status: 'pending' };
    if (statement.notAfter !== null && now.getTime() >= Date.parse(statement.notAfter)) return { status: 'expired' };
    return { status: 'active' };
  }

  /** The account's grants, newest first, each with where it stands. */
  forPatient(account: string, now: Date): Array<GrantRecord & GrantCheck> {
    return this.#deps.store.forPatient(account).flatMap((r) => (r.statement.patient === account ? [{ ...r, ...this.check(r, now) }] : []));
  }

  /** A grant and where it stands (an operator's view); undefined when unknown. */
  get(grantId: string, now: Date): (GrantRecord & GrantCheck) | undefined {
    const record = this.#deps.store.get(grantId);
    return record === undefined ? undefined : { ...record, ...this.check(record, now) };
  }

  /** One of the account's grants; NOT_FOUND for another's (which reads as unknown). */
  ofPatient(account: string, grantId: string, now: Date): GrantRecord & GrantCheck {
    const record = this.#deps.store.get(grantId);
    if (record === undefined || record.statement.patient !== account || record.statement.id !== grantId)
      throw new VaultError('NOT_FOUND', `no grant ${grantId}`);
    return { ...record, ...this.check(record, now) };
  }

  /**
   * Adds a grant the patient of `account` signed: the statement must be well formed, theirs, for
   * this node, over their Patient IDs, not ended, and the proof must verify under one of their keys
   * (a passkey's counter must move on). GRANT_INVALID says which of these fails.
   */
  async add(signed: { statement: unknown; proof: unknown }, account: string, now = new Date()): Promise<GrantRecord> {
    const statement = checkStatement(signed.statement);
    // Only the fields a proof has are kept: nothing else a client sends rides along into grants.db.
    const proof = normalizeProof(signed.proof) ?? (signed.proof as GrantProof);
    if (statement.patient !== account) throw new VaultError('GRANT_INVALID', "the statement is for another patient account than the signer's");
    const stale = this.#scopeProblem(statement);
    if (stale !== undefined) throw new VaultError('GRANT_INVALID', stale);
    if (statement.notAfter !== null && Date.parse(statement.notAfter) <= now.getTime())
      throw new VaultError('GRANT_INVALID', 'the grant has already ended (notAfter is past)');
    if (statement.grantee.kind === 'user') {
      const user = this.#deps.identity.user(statement.grantee.id);
      if (user === undefined || user.revokedAt !== null) throw new VaultError('GRANT_INVALID', `there is no user ${statement.grantee.id} on this node`);
    }
    const keys = this.#deps.identity.patientKeys(account);
    const verdict = await verifyProofForSigning(statement, proof, keys, this.#deps.webauthn);
    if (!verdict.ok) throw new VaultError('GRANT_INVALID', verdict.reason);
    if (verdict.counter !== undefined) this.#deps.identity.updateKeyCounter(verdict.key.keyId, verdict.counter);
    const record = this.#deps.store.add(markVerified({ statement, proof }), now);
    this.#verdicts.set(this.#verdictKey(statement, proof, verdict.key), null);
    return record;
  }

  /**
   * Revokes a grant at once: its share-link tokens die with it, and listeners (the responses
   * streaming under it) hear of it before this returns. `owner`: the patient account it must
   * belong to (NOT_FOUND otherwise); absent: an operator's revocation. False when it was already revoked.
   */
  revoke(grantId: string, by: string, owner?: string, now = new Date()): boolean {
    const record = this.#deps.store.get(grantId);
    if (record === undefined || (owner !== undefined && record.statement.patient !== owner)) throw new VaultError('NOT_FOUND', `no grant ${grantId}`);
    const changed = this.#deps.store.revoke(grantId, by, now);
    this.#deps.identity.revokeTokens('link', grantId);
    if (changed) {
      for (const listener of [...this.#listeners]) {
        try {
          listener(grantId);
        } catch (err) {
          this.#deps.logger?.warn({ grantId, err }, 'a revocation listener failed');
        }
      }
    }
    return changed;
  }

  /** A single-use share code for one of the account's link grants, in force now. */
  createShareCode(account: string, grantId: string, now = new Date(), ttlMs = SHARE_CODE_MAX_TTL_MS): { code: string; expiresAt: Date } {
    const record = this.ofPatient(account, grantId, now);
    if (record.statement.grantee.kind !== 'link') throw new VaultError('GRANT_INVALID', 'share links are made for grants to "link" only');
    if (record.status !== 'active') {
      throw new VaultError(
        'GRANT_INVALID',
        `the grant is ${record.status}${record.reason !== undefined ? ` (${record.reason})` : ''}: a share link needs a grant in force`,
      );
    }
    return this.#deps.store.createShareCode(grantId, ttlMs, now);
  }

  /** A share code for a bearer token bound to its grant (RFC 8693's exchange); a string says why not. */
  exchangeShareCode(code: string, now = new Date()): { token: string; expiresAt: Date; grantId: string } | string {
    const use = this.#deps.store.consumeShareCode(code, now);
    if ('refused' in use) {
      // A revocation spends its grant's codes: say the grant ended rather than that someone used the link.
      if (use.refused === 'used' && this.activeById(use.grantId, now) === undefined) return SHARE_CODE_REFUSALS['not-in-force'];
      return SHARE_CODE_REFUSALS[use.refused];
    }
    const grantId = use.grantId;
    const grant = this.activeById(grantId, now);
    if (grant === undefined) return SHARE_CODE_REFUSALS['not-in-force'];
    if (this.#deps.store.get(grantId)?.statement.grantee.kind !== 'link') return SHARE_CODE_REFUSALS['not-a-link'];
    const cap = now.getTime() + (this.#deps.linkTokenTtlMs ?? DEFAULT_LINK_TOKEN_TTL_MS);
    const expiresAt = new Date(grant.notAfter === null ? cap : Math.min(cap, grant.notAfter.getTime()));
    return { token: this.#deps.identity.issueToken('link', grantId, expiresAt), expiresAt, grantId };
  }

  #enforced(record: GrantRecord, now: Date, belongs: (s: GrantStatement) => boolean): EnforcedGrant | undefined {
    // The row's columns (grantee, id) found it; the signed statement must say the same.
    const c = this.check(record, now);
    if (c.status === 'invalid' || !belongs(record.statement)) {
      this.#log(record, c.reason ?? 'the stored row does not match its signed statement');
      return undefined;
    }
    if (c.status !== 'active') return undefined;
    const s = record.statement;
    return {
      id: s.id,
      patientIds: s.patientIds,
      scope: s.scope,
      dataTypes: s.dataTypes,
      actions: s.actions,
      notAfter: s.notAfter === null ? null : new Date(s.notAfter),
    };
  }

  /** Why the statement cannot be enforced on this node for its account, apart from the signature. */
  #scopeProblem(s: GrantStatement): string | undefined {
    if (s.node !== this.#deps.nodeId) return 'the grant was signed for another node';
    const held = this.#deps.identity.patientIds(s.patient);
    if (!s.patientIds.every((p) => held.some((h) => sameRef(h, p)))) return "the grant names Patient IDs that are not bound to the patient's account";
    return undefined;
  }

  #invalid(s: GrantStatement, proof: GrantProof): string | undefined {
    const scope = this.#scopeProblem(s);
    if (scope !== undefined) return scope;
    const keys = this.#deps.identity.patientKeys(s.patient);
    const key = typeof proof === 'object' && proof !== null ? keyForProof(proof, keys) : undefined;
    if (key === undefined) {
      const v = checkProofNow(s, proof, keys, this.#deps.webauthn);
      return v.ok ? 'the signing key is not registered' : v.reason;
    }
    const cacheKey = this.#verdictKey(s, proof, key);
    const cached = this.#verdicts.get(cacheKey);
    if (cached !== undefined) {
      // Most recently used last: the oldest verdict goes first when the cache is full.
      this.#verdicts.delete(cacheKey);
      this.#verdicts.set(cacheKey, cached);
      return cached ?? undefined;
    }
    const verdict = checkProofNow(s, proof, keys, this.#deps.webauthn);
    const result = verdict.ok ? null : verdict.reason;
    if (this.#verdicts.size >= (this.#deps.verdictCacheSize ?? DEFAULT_VERDICT_CACHE_SIZE)) this.#verdicts.delete(this.#verdicts.keys().next().value!);
    this.#verdicts.set(cacheKey, result);
    return result ?? undefined;
  }

  #verdictKey(s: GrantStatement, proof: GrantProof, key: { kind: string; keyId: string; publicKey: string }): string {
    const rp = this.#deps.webauthn;
    return createHash('sha256')
      .update(canonicalJson(s))
      .update('\0')
      .update(canonicalJson(proof))
      .update('\0')
      .update(`${key.kind}\0${key.keyId}\0${key.publicKey}\0${rp === undefined ? '' : `${rp.rpId}\0${rp.origins.join(' ')}`}`)
      .digest('base64url');
  }

  #log(record: GrantRecord, reason: string): void {
    const id = typeof record.statement?.id === 'string' ? record.statement.id : '(no id)';
    if (this.#logged.get(id) === reason) return;
    if (this.#logged.size >= 10_000) this.#logged.clear();
    this.#logged.set(id, reason);
    this.#deps.logger?.warn({ grantId: id, reason }, 'grant left out: it does not verify');
  }
}
