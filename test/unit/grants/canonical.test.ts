// RFC 8785 (JCS): the vectors of the RFC itself, so that a patient's browser, the node and a third
// party re-checking an export hash the same bytes.
import { describe, expect, it } from 'vitest';
import { canonicalBytes, canonicalDigest, canonicalJson } from '../../../src/grants/canonical.ts';
import { isVaultError } from '../../../src/core/errors.ts';

/** A double from its IEEE 754 bits (RFC 8785 Appendix B lists numbers so). */
function fromBits(hex: string): number {
  const b = Buffer.from(hex, 'hex');
  return b.readDoubleBE(0);
}

describe('RFC 8785 canonical JSON', () => {
  it('serializes the example of section 3.2.2 (whitespace, literals, numbers, strings)', () => {
    // The input of 3.2.2 as a JSON text (its escapes and number spellings are the point).
    const input = JSON.parse(
      '{\n  "numbers": [333333333.33333329, 1E30, 4.50,\n              2e-3, 0.000000000000000000000000001],\n' +
        '  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n  "literals": [null, true, false]\n}',
    );
    expect(canonicalJson(input)).toBe(
      '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
    );
  });

  it('sorts properties by UTF-16 code units (section 3.2.3)', () => {
    const input = JSON.parse(
      '{"\\u20ac":"Euro Sign","\\r":"Carriage Return","\\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One",' +
        '"\\ud83d\\ude00":"Emoji: Grinning Face","\\u0080":"Control","\\u00f6":"Latin Small Letter O With Diaeresis"}',
    );
    const out = canonicalJson(input);
    const keys = Object.keys(JSON.parse(out));
    // JSON.parse keeps "1" first (an array index); the order in the text is what counts.
    const order = [...out.matchAll(/"([^"]*)":"([^"]*)"/g)].map((m) => m[2]);
    expect(order).toEqual([
      'Carriage Return',
      'One',
      'Control',
      'Latin Small Letter O With Diaeresis',
      'Euro Sign',
      'Emoji: Grinning Face',
      'Hebrew Letter Dalet With Dagesh',
    ]);
    expect(keys).toHaveLength(7);
  });

  it('encodes the 3.2.3 example as the UTF-8 bytes the RFC prints', () => {
    const bytes = canonicalBytes({ '€': 'x', '😀': 'y' });
    // € is e2 82 ac; U+1F600 is f0 9f 98 80 (not two escaped surrogates).
    expect(bytes.toString('hex')).toBe(Buffer.from('{"€":"x","😀":"y"}', 'utf8').toString('hex'));
    expect(bytes.includes(Buffer.from('e282ac', 'hex'))).toBe(true);
    expect(bytes.includes(Buffer.from('f09f9880', 'hex'))).toBe(true);
  });

  it('formats numbers as Appendix B says', () => {
    const vectors: Array<[string, string]> = [
      ['0000000000000000', '0'],
      ['8000000000000000', '0'],
      ['0000000000000001', '5e-324'],
      ['8000000000000001', '-5e-324'],
      ['7fefffffffffffff', '1.7976931348623157e+308'],
      ['ffefffffffffffff', '-1.7976931348623157e+308'],
      ['4340000000000000', '9007199254740992'],
      ['c340000000000000', '-9007199254740992'],
      ['4430000000000000', '295147905179352830000'],
      ['44b52d02c7e14af5', '9.999999999999997e+22'],
      ['44b52d02c7e14af6', '1e+23'],
      ['44b52d02c7e14af7', '1.0000000000000001e+23'],
      ['444b1ae4d6e2ef4e', '999999999999999700000'],
      ['444b1ae4d6e2ef4f', '999999999999999900000'],
      ['444b1ae4d6e2ef50', '1e+21'],
      ['3eb0c6f7a0b5ed8c', '9.999999999999997e-7'],
      ['3eb0c6f7a0b5ed8d', '0.000001'],
      ['41b3de4355555553', '333333333.3333332'],
      ['41b3de4355555554', '333333333.33333325'],
      ['41b3de4355555555', '333333333.3333333'],
      ['41b3de4355555556', '333333333.3333334'],
      ['41b3de4355555557', '333333333.33333343'],
      ['becbf647612f3696', '-0.0000033333333333333333'],
      ['43143ff3c1cb0959', '1424953923781206.2'],
    ];
    for (const [bits, text] of vectors) expect(canonicalJson([fromBits(bits)]), bits).toBe(`[${text}]`);
  });

  it('refuses what JSON cannot hold, with a reason', () => {
    for (const bad of [[Number.NaN], [Number.POSITIVE_INFINITY], ['\ud800'], undefined]) {
      try {
        canonicalJson(bad);
        expect.unreachable(String(bad));
      } catch (err) {
        expect(isVaultError(err, 'BAD_REQUEST')).toBe(true);
        expect((err as Error).message).toMatch(/not canonicalizable/);
      }
    }
    const cycle: Record<string, unknown> = {};
    cycle.self = cycle;
    expect(() => canonicalJson(cycle)).toThrow(/Circular/);
  });

  it('hashes the canonical bytes, whatever the key order of the input', () => {
    expect(canonicalDigest({ b: 1, a: [true, null] }).equals(canonicalDigest({ a: [true, null], b: 1 }))).toBe(true);
    expect(canonicalDigest({ a: 1 }).equals(canonicalDigest({ a: 2 }))).toBe(false);
  });
});
