// Parsed instance layouts kept in memory, bounded by their JSON size.

import type { InstanceLayout } from '../dicom/model.ts';

/**
 * Parsed layouts (frame and bulk offsets) of recently read instances, by instance node CID (a
 * layout never changes for a node). A viewer fetches a huge multi-frame instance one frame at a
 * time: its layout (hundreds of KB of JSON for thousands of frames) is then read and parsed once.
 * Bounded by the layouts' JSON size. Default 8 MiB.
 */
export const DEFAULT_LAYOUT_CACHE_BYTES = 8 * 1024 * 1024;

export class LayoutCache {
  readonly #max: number;
  readonly #entries = new Map<string, { layout: InstanceLayout; bytes: number }>();
  #bytes = 0;

  constructor(max: number) {
    this.#max = max;
  }

  get(nodeCid: string, load: () => string): InstanceLayout {
    const hit = this.#entries.get(nodeCid);
    if (hit !== undefined) {
      this.#entries.delete(nodeCid); // most recently used last
      this.#entries.set(nodeCid, hit);
      return hit.layout;
    }
    const text = load();
    const layout = JSON.parse(text) as InstanceLayout;
    if (text.length <= this.#max) {
      this.#entries.set(nodeCid, { layout, bytes: text.length });
      this.#bytes += text.length;
      for (const [key, e] of this.#entries) {
        if (this.#bytes <= this.#max) break;
        this.#entries.delete(key);
        this.#bytes -= e.bytes;
      }
    }
    return layout;
  }
}
