// The receipt format on its own: round trip, a named error for every malformed field, and its
// size at the largest batch the node makes by default and at 10,000 leaves.
import { randomBytes } from 'node:crypto';
import { base64url } from 'multiformats/bases/base64';
import { CID } from 'multiformats/cid';
import { bytesToHex, type Hex } from 'viem';
import { describe, expect, it } from 'vitest';
import { encodeNode } from '../../../src/format/dag.ts';
import { MerkleTree } from '../../../anchor/merkle.ts';
import {
  encodeReceipt,
  parseReceipt,
  receiptBytes,
  receiptLeafData,
  RECEIPT_TYPE,
  RECEIPT_TYPE_V1,
  RECEIPT_TYPE_V2,
  RECEIPT_TYPE_V3,
  type ReceiptJson,
} from '../../../anchor/receipt.ts';
import { anchorCommitment } from '../../../anchor/commitment.ts';
import { leafHash, rootFromInclusionPath, treeHead } from '../../../anchor/merkle.ts';
import { isVaultError } from '../../../src/core/errors.ts';

const cids = (n: number): CID[] => Array.from({ length: n }, (_, i) => encodeNode({ version: i, salt: randomBytes(16) }).cid);
const hex32 = (): Hex => bytesToHex(randomBytes(32));

function receiptFor(n: number, index: number, chainId = 42161, salt?: Uint8Array): ReceiptJson {
  const leaves = cids(n);
  const tree = MerkleTree.fromLeaves(leaves.map((c) => (salt === undefined ? c.bytes : anchorCommitment(salt, c))));
  return encodeReceipt({
    cid: leaves[index]!,
    ...(salt === undefined ? {} : { salt }),
    index,
    size: n,
    path: tree.inclusionPath(index),
    root: bytesToHex(tree.head),
    // Large but real-world values: chain ids and block numbers of busy chains.
    chainId,
    contract: '0x5FbDB2315678afecb367f032d93F642f64180aa3',
    txHash: hex32(),
    blockNumber: 412_345_678,
    blockHash: hex32(),
    time: 1_790_000_000,
  });
}

function malformedField(json: unknown): string | undefined {
  try {
    parseReceipt(json);
    return undefined;
  } catch (err) {
    if (!isVaultError(err, 'RECEIPT_MALFORMED')) throw err;
    return err.details?.field as string;
  }
}

describe('receipt format dicom-vault-receipt/2', () => {
  it('round-trips through JSON text', () => {
    const r = receiptFor(7, 3);
    const back = encodeReceipt(parseReceipt(JSON.stringify(r)));
    expect(back).toEqual(r);
    expect(r.v).toBe(RECEIPT_TYPE_V2);
    expect(CID.parse(r.cid).toString()).toBe(r.cid);
  });

  it('stays under 1 KiB at 10,000 studies per batch, for the longest proof', () => {
    const r = receiptFor(10_000, 0); // leaf 0 has the longest path: 14 hashes
    expect(Buffer.from(r.path, 'base64url').length).toBe(14 * 32);
    expect(r.attest).toBe('chain');
    expect(receiptBytes(r)).toBeLessThan(1024);
    // The longer label on a development chain still fits.
    const dev = receiptFor(10_000, 0, 31337);
    expect(dev.attest).toBe('self-attested');
    expect(receiptBytes(dev)).toBeLessThan(1024);
  });

  it('says "self-attested" plainly for an anchor on a development chain, "chain" elsewhere', () => {
    expect(receiptFor(2, 0, 31337).attest).toBe('self-attested');
    expect(receiptFor(2, 0, 1337).attest).toBe('self-attested');
    expect(receiptFor(2, 0, 8453).attest).toBe('chain');
    expect(JSON.stringify(receiptFor(2, 0, 31337))).toMatch(/^\{"v":"dicom-vault-receipt\/2","attest":"self-attested",/);
  });

  it('still reads a dicom-vault-receipt/1 (no attest), and refuses attest in one', () => {
    const { attest: _a, ...v1 } = { ...receiptFor(3, 1), v: RECEIPT_TYPE_V1 };
    const r = parseReceipt(v1);
    expect(r.version).toBe(1);
    expect(r.attest).toBeUndefined();
    expect(malformedField({ ...v1, attest: 'chain' })).toBe('attest');
    // Re-encoded, it becomes a version 2 receipt of the same anchor.
    expect(encodeReceipt(r)).toEqual({ ...v1, v: RECEIPT_TYPE_V2, attest: 'chain' });
  });

  it('names the field that is missing, unknown or malformed', () => {
    const good = receiptFor(3, 2);
    const cases: Array<[string, Record<string, unknown>]> = [
      ['v', { v: 'dicom-vault-receipt/5' }],
      // A salt belongs to versions 3 and 4 only.
      ['salt', { salt: Buffer.alloc(32).toString('base64url') }],
      ['attest', { attest: 'public' }],
      ['attest', { attest: undefined }],
      ['cid', { cid: 'not-a-cid' }],
      ['cid', { cid: undefined }],
      ['index', { index: -1 }],
      ['index', { index: 1.5 }],
      ['size', { size: 0 }],
      ['path', { path: 'abc+' }],
      ['path', { path: Buffer.alloc(33).toString('base64url') }],
      ['root', { root: Buffer.alloc(31).toString('base64url') }],
      ['root', { root: `0x${'ab'.repeat(32)}` }],
      ['chainId', { chainId: '1' }],
      ['contract', { contract: '0x1234' }],
      // One character's case changed: the EIP-55 checksum catches it.
      ['contract', { contract: '0x5fBDB2315678afecb367f032d93F642f64180aa3' }],
      ['tx', { tx: 'A'.repeat(44) }],
      ['block', { block: -3 }],
      ['blockHash', { blockHash: 42 }],
      ['time', { time: 0 }],
      ['extra', { extra: 1 }],
    ];
    for (const [field, change] of cases) {
      const edited = { ...good, ...change };
      for (const k of Object.keys(change)) if (change[k] === undefined) delete (edited as Record<string, unknown>)[k];
      expect(malformedField(edited), JSON.stringify(change)).toBe(field);
    }
    expect(malformedField('{not json')).toBe('receipt');
    expect(malformedField([good])).toBe('receipt');
  });

  it('accepts a contract address in lower case (no checksum to check)', () => {
    const r = receiptFor(2, 1);
    expect(parseReceipt({ ...r, contract: r.contract.toLowerCase() }).contract).toBe(r.contract);
  });
});

/** The same anchor as format 3 wrote it: the root written out, the CID in base32. */
function asV3(r: ReceiptJson): ReceiptJson {
  const parsed = parseReceipt(r);
  return { ...r, v: RECEIPT_TYPE_V3, cid: parsed.cid.toString(), root: Buffer.from(parsed.root.slice(2), 'hex').toString('base64url') };
}

/** Field order of the node's JSON, for the format 3 receipt built in asV3. */
function ordered(r: ReceiptJson): string {
  const { v, attest, cid, salt, index, size, path, root, ...rest } = r;
  return JSON.stringify({ v, attest, cid, salt, index, size, path, root, ...rest });
}

describe('receipt format dicom-vault-receipt/4 (salted commitment, root computed)', () => {
  const salt = randomBytes(32);

  it('carries the salt; its leaf is the commitment, which leads to the root; round-trips', () => {
    const r = receiptFor(9, 4, 42161, salt);
    expect(r.v).toBe(RECEIPT_TYPE);
    expect(r.root).toBeUndefined();
    expect(r.cid).toMatch(/^u[A-Za-z0-9_-]{48}$/);
    expect(Buffer.from(r.salt!, 'base64url').equals(salt)).toBe(true);
    const parsed = parseReceipt(JSON.stringify(r));
    expect(parsed.version).toBe(4);
    expect(encodeReceipt(parsed)).toEqual(r);
    // The root parsed is the one the node's tree has: the leaf and path lead to it.
    const mth = rootFromInclusionPath(leafHash(receiptLeafData(parsed)), parsed.index, parsed.size, parsed.path)!;
    expect(bytesToHex(treeHead(parsed.size, mth))).toBe(parsed.root);
    // Without the salt, or with another, the CID leads elsewhere: the leaf is not the bare CID.
    const bare = rootFromInclusionPath(leafHash(parsed.cid.bytes), parsed.index, parsed.size, parsed.path)!;
    expect(bytesToHex(treeHead(parsed.size, bare))).not.toBe(parsed.root);
    const other = parseReceipt({ ...r, salt: randomBytes(32).toString('base64url') });
    expect(other.root).not.toBe(parsed.root);
  });

  it('an edited cid, salt, index or path gives another root (which the chain has no record of)', () => {
    const r = receiptFor(16, 5, 42161, salt);
    const root = parseReceipt(r).root;
    const otherCid = encodeNode({ other: 1 }).cid.toString(base64url);
    const path = Buffer.from(r.path, 'base64url');
    path[0]! ^= 1;
    for (const change of [{ cid: otherCid }, { salt: randomBytes(32).toString('base64url') }, { index: 6 }, { path: path.toString('base64url') }])
      expect(parseReceipt({ ...r, ...change }).root, JSON.stringify(change)).not.toBe(root);
  });

  it('refuses a root field, a base32 CID; the writer refuses a root the path does not lead to', () => {
    const r = receiptFor(8, 3, 42161, salt);
    expect(malformedField({ ...r, root: Buffer.alloc(32).toString('base64url') })).toBe('root');
    expect(malformedField({ ...r, cid: parseReceipt(r).cid.toString() })).toBe('cid');
    // A path that cannot belong to the leaf leads to the zero root, which no batch has.
    expect(parseReceipt({ ...r, path: Buffer.alloc(32).toString('base64url') }).root).toBe(`0x${'00'.repeat(32)}`);
    const { salt: _s, ...noSalt } = r;
    expect(malformedField(noSalt)).toBe('salt');
    expect(() => encodeReceipt({ ...parseReceipt(r), root: hex32() })).toThrow(/does not lead to root/);
  });

  it('still reads format 3 (root written, base32 CID): the same anchor, the same root', () => {
    const r4 = receiptFor(9, 4, 42161, salt);
    const v3 = parseReceipt(asV3(r4));
    expect(v3.version).toBe(3);
    expect(v3.root).toBe(parseReceipt(r4).root);
    // Re-encoded, a format 3 receipt becomes the format 4 receipt of the same anchor.
    expect(encodeReceipt(v3)).toEqual(r4);
    // In format 3 an edited root is read as written (the verifier names it), and it must be there.
    const { root: _r, ...noRoot } = asV3(r4);
    expect(malformedField(noRoot)).toBe('root');
  });

  it('measures: under 1 KiB at 10,000 per batch (1,076 bytes in format 3); sizes at 1,000, 10,000, 100,000', () => {
    const sizes: Record<number, [number, number]> = {};
    for (const n of [1_000, 10_000, 100_000]) {
      const r = receiptFor(n, 0, 31337, salt); // leaf 0: the longest path; chain 31337: the longer "self-attested"
      sizes[n] = [receiptBytes(r), Buffer.byteLength(ordered(asV3(r)))];
    }
    console.log('receipt bytes (format 4, format 3) at 1,000 / 10,000 / 100,000 per batch:', JSON.stringify(sizes));
    expect(sizes[10_000]![1]).toBe(1076);
    expect(sizes[10_000]![0]).toBeLessThan(1024);
    for (const n of [1_000, 10_000, 100_000]) expect(sizes[n]![1] - sizes[n]![0]).toBe(63); // "root":"<43>", and 10 characters of CID
    // A 13-digit chain id still fits at 10,000.
    expect(receiptBytes(receiptFor(10_000, 0, 1_234_567_890_123, salt))).toBeLessThan(1024);
  });
});
