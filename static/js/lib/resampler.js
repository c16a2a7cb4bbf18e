// Streaming sample-rate converter for mono Float32 audio.
//
// Pure module: no browser APIs, so node tests and AudioWorklet processors
// can both import it.
//
// Each output sample n sits at input position t = n * inRate / outRate. It is
// a weighted sum of the input samples around t, weights from a kernel h(d)
// of half-width `halfWidth` input samples:
//   - "sinc": a Blackman-windowed sinc, low-pass at the lower of the two
//     Nyquist frequencies (so downsampling 48 kHz -> 24 kHz does not alias),
//     read from a precomputed table with linear interpolation;
//   - "linear": the triangle kernel, i.e. plain linear interpolation.
// Weights are normalised per output sample, so DC passes exactly.
//
// Streaming: input arrives in blocks of any length; the position of the next
// output sample is kept as an exact rational (integer part + numerator over
// outRate), and the input samples still needed are kept in a small history.
// Feeding the same signal in one call or in many gives the same output. The
// converter is causal: output lags the input by `halfWidth` input samples
// (16 at 48 kHz -> 24 kHz: 0.33 ms). `flush()` pushes that tail out.

const TABLE_STEPS = 512; // kernel table entries per input sample

function gcd(a, b) {
  while (b) [a, b] = [b, a % b];
  return a;
}

function blackman(x) {
  // x in [-1, 1]
  return 0.42 + 0.5 * Math.cos(Math.PI * x) + 0.08 * Math.cos(2 * Math.PI * x);
}

function sincKernelTable(cutoff, halfWidth) {
  const n = halfWidth * TABLE_STEPS + 2;
  const table = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const d = i / TABLE_STEPS;
    if (d >= halfWidth) break; // stays 0
    const x = Math.PI * cutoff * d;
    const sinc = d === 0 ? 1 : Math.sin(x) / x;
    table[i] = cutoff * sinc * blackman(d / halfWidth);
  }
  return table;
}

export class Resampler {
  /**
   * @param {object} options
   * @param {number} options.inRate   input sample rate, Hz (positive integer)
   * @param {number} options.outRate  output sample rate, Hz (positive integer)
   * @param {"sinc"|"linear"} [options.kernel="sinc"]
   * @param {number} [options.zeroCrossings=8] sinc lobes on each side
   */
  constructor({ inRate, outRate, kernel = "sinc", zeroCrossings = 8 } = {}) {
    for (const [name, v] of [["inRate", inRate], ["outRate", outRate]]) {
      if (!Number.isInteger(v) || v <= 0) {
        throw new RangeError(`${name} must be a positive integer, got ${v}`);
      }
    }
    if (kernel !== "sinc" && kernel !== "linear") {
      throw new RangeError(`kernel must be "sinc" or "linear", got ${kernel}`);
    }
    this.inRate = inRate;
    this.outRate = outRate;
    this.kernel = kernel;
    const g = gcd(inRate, outRate);
    this._num = inRate / g; // input step per output sample = _num / _den
    this._den = outRate / g;
    this.passthrough = inRate === outRate;

    if (kernel === "linear") {
      this.halfWidth = 1;
      this._table = null;
    } else {
      const cutoff = Math.min(1, outRate / inRate);
      this.halfWidth = Math.ceil(zeroCrossings / cutoff);
      this._table = sincKernelTable(cutoff, this.halfWidth);
    }
    this.reset();
  }

  /** Forget all history: the next sample is the start of a new stream. */
  reset() {
    const h = this.halfWidth;
    // History starts with h virtual zeros before input sample 0.
    this._buf = new Float32Array(Math.max(64, 4 * h));
    this._len = h; // valid samples in _buf
    this._base = -h; // absolute input index of _buf[0]
    this._ipos = 0; // integer part of the next output position
    this._frac = 0; // fractional part, in units of 1/_den
    this._flushed = false;
  }

  /** Input samples held back by the causal filter. */
  get latencySamples() {
    return this.passthrough ? 0 : this.halfWidth;
  }

  /**
   * Convert one block. Returns a new Float32Array (possibly empty).
   * @param {Float32Array|number[]} input
   */
  process(input) {
    if (this.passthrough) return Float32Array.from(input);
    this._append(input);
    return this._drain();
  }

  /** Pad with zeros to push out the samples held back; then reset. */
  flush() {
    if (this.passthrough) return new Float32Array(0);
    // Enough zeros that every output whose position lies within the real
    // input gets produced.
    this._append(new Float32Array(this.halfWidth + 1));
    const end = this._base + this._len - this.halfWidth - 1; // first padded index
    const out = this._drain(end);
    this.reset();
    return out;
  }

  _append(input) {
    const n = input.length;
    if (this._len + n > this._buf.length) {
      let cap = this._buf.length;
      while (cap < this._len + n) cap *= 2;
      const bigger = new Float32Array(cap);
      bigger.set(this._buf.subarray(0, this._len));
      this._buf = bigger;
    }
    this._buf.set(input, this._len);
    this._len += n;
  }

  // Produce every output sample whose kernel support is available (and,
  // when `limit` is given, whose position is below `limit`).
  _drain(limit = Infinity) {
    const h = this.halfWidth;
    const buf = this._buf;
    const base = this._base;
    const end = base + this._len; // exclusive absolute index
    const num = this._num;
    const den = this._den;
    // Count outputs first so we allocate once.
    let count = 0;
    {
      let ip = this._ipos;
      let fr = this._frac;
      while (ip + h < end && ip < limit) {
        count++;
        fr += num;
        ip += Math.floor(fr / den);
        fr %= den;
      }
    }
    const out = new Float32Array(count);
    let ip = this._ipos;
    let fr = this._frac;
    const table = this._table;
    for (let o = 0; o < count; o++) {
      const frac = fr / den; // t = ip + frac
      let acc = 0;
      let wsum = 0;
      if (table === null) {
        // linear: taps ip and ip+1
        const a = buf[ip - base];
        const b = buf[ip + 1 - base];
        acc = a + (b - a) * frac;
        wsum = 1;
      } else {
        for (let k = ip - h + 1; k <= ip + h; k++) {
          const d = Math.abs(ip + frac - k) * TABLE_STEPS;
          const i = Math.floor(d);
          const w = table[i] + (table[i + 1] - table[i]) * (d - i);
          acc += buf[k - base] * w;
          wsum += w;
        }
      }
      out[o] = wsum !== 0 ? acc / wsum : 0;
      fr += num;
      ip += Math.floor(fr / den);
      fr %= den;
    }
    this._ipos = ip;
    this._frac = fr;
    // Drop history no longer needed: keep from ip - h + 1 on.
    const keepFrom = Math.min(ip - h + 1, end);
    const drop = keepFrom - base;
    if (drop > 0) {
      buf.copyWithin(0, drop, this._len);
      this._len -= drop;
      this._base = keepFrom;
    }
    return out;
  }
}

/** One-shot helper: convert a whole signal (flushes the tail). */
export function resample(input, inRate, outRate, options = {}) {
  const r = new Resampler({ inRate, outRate, ...options });
  const a = r.process(input);
  const b = r.flush();
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
