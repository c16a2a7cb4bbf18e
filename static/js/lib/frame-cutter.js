// Cuts a stream of sample blocks of any size (AudioWorklet render quanta are
// 128 samples; a resampler's output varies by one) into frames of exactly
// `frameSize` samples. Pure module.

export class FrameCutter {
  /**
   * @param {object} options
   * @param {number} options.frameSize samples per frame (positive integer)
   * @param {Function} [options.ArrayType=Float32Array] element type of frames
   */
  constructor({ frameSize, ArrayType = Float32Array } = {}) {
    if (!Number.isInteger(frameSize) || frameSize <= 0) {
      throw new RangeError(`frameSize must be a positive integer, got ${frameSize}`);
    }
    this.frameSize = frameSize;
    this.ArrayType = ArrayType;
    this._pending = new ArrayType(frameSize);
    this._fill = 0;
  }

  /** Frame size for a duration: `frameSizeFor(24000, 100)` is 2400. */
  static frameSizeFor(sampleRate, frameMs) {
    return Math.round((sampleRate * frameMs) / 1000);
  }

  /** Samples waiting for the next frame. */
  get pendingSamples() {
    return this._fill;
  }

  /**
   * Add samples; return the frames completed by them (each a new array of
   * exactly frameSize samples, in order). Often empty.
   * @param {ArrayLike<number>} block
   */
  push(block) {
    const frames = [];
    let i = 0;
    const n = block.length;
    while (i < n) {
      const take = Math.min(this.frameSize - this._fill, n - i);
      if (typeof block.subarray === "function") {
        this._pending.set(block.subarray(i, i + take), this._fill);
      } else {
        for (let k = 0; k < take; k++) this._pending[this._fill + k] = block[i + k];
      }
      this._fill += take;
      i += take;
      if (this._fill === this.frameSize) {
        frames.push(this._pending);
        this._pending = new this.ArrayType(this.frameSize);
        this._fill = 0;
      }
    }
    return frames;
  }

  /** Return the partial frame (shorter than frameSize, maybe empty) and forget it. */
  flush() {
    const out = this._pending.slice(0, this._fill);
    this._fill = 0;
    return out;
  }

  /** Drop the partial frame. */
  reset() {
    this._fill = 0;
  }
}
