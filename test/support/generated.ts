// Small synthetic studies from the benchmark's generator (bench/generate.ts), as whole buffers.
import type { GeneratedInstance } from '../../bench/generate.ts';

export async function bytesOf(inst: GeneratedInstance): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const p of inst.open()) parts.push(p);
  return Buffer.concat(parts);
}
