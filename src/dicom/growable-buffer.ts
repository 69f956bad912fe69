/** A byte buffer that grows by doubling, so appending chunk after chunk is linear. */
export class GrowableBuffer {
  #bytes = new Uint8Array(0);
  #length = 0;

  get length(): number {
    return this.#length;
  }

  append(chunk: Uint8Array): void {
    if (this.#length + chunk.length > this.#bytes.length) {
      const grown = new Uint8Array(Math.max(this.#length + chunk.length, this.#bytes.length * 2, 4096));
      grown.set(this.#bytes.subarray(0, this.#length));
      this.#bytes = grown;
    }
    this.#bytes.set(chunk, this.#length);
    this.#length += chunk.length;
  }

  view(): Uint8Array {
    return this.#bytes.subarray(0, this.#length);
  }
}
