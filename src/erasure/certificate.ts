// The erasure certificate: what was erased (by commitments, never by UID or Patient ID), when, on
// whose request and by whose approval, signed with the node's Ed25519 signing key (signing.key in
// the data directory, made once). Format "dicom-vault-erasure/1", canonical JSON (RFC 8785) under
// the signature.
//
// The certificate is anchored like a study version's root: its CID (certificateCid) joins the
// anchor queue, and its receipt (format 2: a certificate names nothing to salt) proves it existed
// by the anchoring block's time.
//
// Per study it names the study commitment SHA-256("dicom-vault/erasure-commitment/v1" || 0x00 ||
// salt || Study Instance UID) and the anchored commitments of its versions (anchor/commitment.ts).
// The salt is destroyed by the erasure, so the certificate links to no study by itself; a patient
// who kept a receipt (which carries cid and salt) finds that receipt's commitment listed, which
// shows that the study it anchors was erased.
import { createHash, createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import canonicalize from 'canonicalize';
import { VaultError } from '../core/errors.ts';
import type { CID } from 'multiformats/cid';
import { encodeNode } from '../format/dag.ts';
import { createSecretFileOnce } from '../format/keys.ts';

export const CERTIFICATE_TYPE = 'dicom-vault-erasure/1';
export const SIGNING_KEY_FILE = 'signing.key';
const STUDY_COMMITMENT_DOMAIN = 'dicom-vault/erasure-commitment/v1';

export interface ErasedStudy {
  /** SHA-256(domain || 0x00 || salt || study UID), hex. */
  commitment: string;
  /** The anchored commitments of the study's versions (hex), as in their receipts' leaves. */
  anchored: string[];
  /** Blocks deleted from this node's store. */
  blocks: number;
}

export interface ErasureCertificate {
  v: typeof CERTIFICATE_TYPE;
  id: string;
  /** The node's id (node.json). */
  node: string;
  scope: 'study' | 'patient';
  /** ISO 8601: when the keys were destroyed. */
  erasedAt: string;
  /** ISO 8601: when the erasure finished and the certificate was signed. */
  issuedAt: string;
  /** Who asked: an operator (user:NAME, cli) or a patient account (patient:ACCOUNT). */
  requestedBy: string;
  approvedBy?: string;
  /** The patient's erasure request this answers. */
  request?: string;
  reason?: string;
  /** Whether the patient's own key was destroyed (scope patient). */
  patientKey: boolean;
  studies: ErasedStudy[];
  signature: { alg: 'Ed25519'; publicKey: string; value: string };
}

/** The certificate's CID (CIDv1 dag-cbor sha2-256 of it): what is anchored for it, recomputable by anyone who holds it. */
export function certificateCid(cert: ErasureCertificate): CID {
  return encodeNode(cert).cid;
}

export function studyCommitment(salt: Uint8Array, studyInstanceUID: string): string {
  return createHash('sha256').update(STUDY_COMMITMENT_DOMAIN).update(Uint8Array.of(0)).update(salt).update(studyInstanceUID).digest('hex');
}

/** The node's signing key (Ed25519, PKCS#8 PEM, 0600), made on first use. */
export function loadSigningKey(path: string): KeyObject {
  if (!existsSync(path)) {
    const { privateKey } = generateKeyPairSync('ed25519');
    createSecretFileOnce(path, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string);
  }
  return createPrivateKey(readFileSync(path));
}

function signedBytes(c: Omit<ErasureCertificate, 'signature'>): Buffer {
  return Buffer.from(canonicalize(c) as string, 'utf8');
}

/** The public half of the signing key as certificates name it: SPKI DER, base64url. */
export function publicKeyOf(key: KeyObject): string {
  return (createPublicKey(key).export({ type: 'spki', format: 'der' }) as Buffer).toString('base64url');
}

export function signCertificate(body: Omit<ErasureCertificate, 'signature'>, key: KeyObject): ErasureCertificate {
  const publicKey = publicKeyOf(key);
  return { ...body, signature: { alg: 'Ed25519', publicKey, value: sign(null, signedBytes(body), key).toString('base64url') } };
}

/**
 * Whether the certificate's signature holds under `publicKey` (base64url SPKI DER; default the one
 * it names, which proves only integrity: pin the node's key, from `dicom-vault erasure key`).
 */
export function verifyCertificate(cert: ErasureCertificate, publicKey = cert.signature.publicKey): boolean {
  if (cert.v !== CERTIFICATE_TYPE || cert.signature?.alg !== 'Ed25519') throw new VaultError('BAD_REQUEST', `not a ${CERTIFICATE_TYPE} certificate`);
  const { signature, ...body } = cert;
  const key = createPublicKey({ key: Buffer.from(publicKey, 'base64url'), format: 'der', type: 'spki' });
  return verify(null, signedBytes(body), key, Buffer.from(signature.value, 'base64url'));
}
