// The receipt format on its own: round trip, a named error for every malformed field, and its
// size at the largest batch the node makes by default and at 10,000 leaves.
import { randomBytes } from 'node:crypto';
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
      ['v', { v: 'dicom-vault-receipt/4' }],
      // A salt belongs to version 3 only.
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

describe('receipt format dicom-vault-receipt/3 (salted commitment)', () => {
  const salt = randomBytes(32);

  it('carries the salt; its leaf is the commitment, which leads to the root; round-trips', () => {
    const r = receiptFor(9, 4, 42161, salt);
    expect(r.v).toBe(RECEIPT_TYPE);
    expect(Buffer.from(r.salt!, 'base64url').equals(salt)).toBe(true);
    const parsed = parseReceipt(JSON.stringify(r));
    expect(parsed.version).toBe(3);
    expect(encodeReceipt(parsed)).toEqual(r);
    const mth = rootFromInclusionPath(leafHash(receiptLeafData(parsed)), parsed.index, parsed.size, parsed.path)!;
    expect(bytesToHex(treeHead(parsed.size, mth))).toBe(parsed.root);
    // Without the salt, or with another, the CID leads elsewhere: the leaf is not the bare CID.
    const bare = rootFromInclusionPath(leafHash(parsed.cid.bytes), parsed.index, parsed.size, parsed.path)!;
    expect(bytesToHex(treeHead(parsed.size, bare))).not.toBe(parsed.root);
    const other = rootFromInclusionPath(leafHash(anchorCommitment(randomBytes(32), parsed.cid)), parsed.index, parsed.size, parsed.path)!;
    expect(bytesToHex(treeHead(parsed.size, other))).not.toBe(parsed.root);
  });

  it('refuses a version 3 receipt without its salt, or with a salt of another length', () => {
    const r = receiptFor(3, 0, 42161, salt);
    const { salt: _s, ...noSalt } = r;
    expect(malformedField(noSalt)).toBe('salt');
    expect(malformedField({ ...r, salt: Buffer.alloc(16).toString('base64url') })).toBe('salt');
  });

  it('measures: under 1 KiB at the default batch of 1,000; the salt adds 53 bytes at 10,000', () => {
    expect(receiptBytes(receiptFor(1000, 0, 31337, salt))).toBeLessThan(1024);
    const v2 = receiptBytes(receiptFor(10_000, 0, 31337));
    const v3 = receiptBytes(receiptFor(10_000, 0, 31337, salt));
    expect(v3 - v2).toBe(53); // "salt":"<43 characters>",
  });
});
