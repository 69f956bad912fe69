// Loads the cornerstone codec WebAssembly builds (Emscripten modules) in Node: each package's
// factory is given the .wasm bytes read from node_modules (`wasmBinary`), so nothing is fetched
// and no path guessing by the glue code is involved. A module is instantiated once per thread
// and reused for every frame; one that trapped (a WebAssembly RuntimeError: its memory may be
// inconsistent) is dropped and instantiated afresh on next use.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** What every codec class of these builds has (embind objects must be deleted). */
export interface CodecObject {
  getEncodedBuffer(length: number): Uint8Array;
  getDecodedBuffer(): Uint8Array;
  decode(): void;
  delete(): void;
}

export interface WasmModule {
  /** Lines the C/C++ code printed (stdout and stderr) since the last `take()`: its error reasons. */
  messages: string[];
  [name: string]: unknown;
}

type Factory = (options: Record<string, unknown>) => Promise<WasmModule>;

/** [package, factory (glue JS) export, .wasm export] of each codec: decode-only builds where the package has one. */
export const CODEC_BUILDS = {
  // The full libjpeg-turbo build: its encoder makes the rendered JPEGs (render/encode.ts).
  libjpegTurbo: ['@cornerstonejs/codec-libjpeg-turbo-8bit', 'wasmjs', 'wasm'],
  charls: ['@cornerstonejs/codec-charls', 'decodewasmjs', 'decodewasm'],
  openjpeg: ['@cornerstonejs/codec-openjpeg', 'decodewasmjs', 'decodewasm'],
  openjph: ['@cornerstonejs/codec-openjph', 'wasmjs', 'wasm'],
} as const;

export type CodecName = keyof typeof CODEC_BUILDS;

const loaded = new Map<CodecName, Promise<WasmModule>>();

/** The codec's module for this thread, instantiated on first use. */
export function wasmCodec(name: CodecName): Promise<WasmModule> {
  let module = loaded.get(name);
  if (module === undefined) {
    const [pkg, js, wasm] = CODEC_BUILDS[name];
    const factory = require(`${pkg}/${js}`) as Factory;
    const messages: string[] = [];
    const keep = (line: string): void => {
      messages.push(String(line));
      if (messages.length > 20) messages.shift();
    };
    module = factory({ wasmBinary: readFileSync(require.resolve(`${pkg}/${wasm}`)), print: keep, printErr: keep }).then((m) => {
      m.messages = messages;
      return m;
    });
    module.catch(() => loaded.delete(name));
    loaded.set(name, module);
  }
  return module;
}

/** Forgets a module after a trap, so the next frame gets a fresh instance. */
export function dropWasmCodec(name: CodecName): void {
  loaded.delete(name);
}

/** The codec's messages since the last call, emptied. */
export function takeMessages(module: WasmModule): string[] {
  return module.messages.splice(0);
}
