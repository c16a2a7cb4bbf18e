// PCM16 little-endian packing, both ways. Pure module (node and worklets).
//
// float -> int16: scale by 32768, round to nearest, clip to [-32768, 32767]
// (so -1 -> -32768 and +1 -> +32767); NaN becomes 0. int16 -> float: divide
// by 32768. The two are exact inverses: every int16 value survives
// int16 -> float -> int16, and float -> int16 -> float is off by at most half
// a step (1/65536) inside [-1, 32767/32768].
// Bytes are written with DataView in little-endian order whatever the
// platform's byte order.

/** @param {number} x */
export function floatToInt16Sample(x) {
  if (!(x === x)) return 0; // NaN
  const v = Math.round(x * 32768);
  return v > 32767 ? 32767 : v < -32768 ? -32768 : v;
}

/**
 * Float32 samples -> Int16Array (values, not bytes).
 * @param {Float32Array|number[]} samples
 */
export function floatToInt16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) out[i] = floatToInt16Sample(samples[i]);
  return out;
}

/**
 * Float32 samples -> ArrayBuffer of PCM16 little-endian bytes.
 * @param {Float32Array|number[]} samples
 * @returns {ArrayBuffer}
 */
export function encodePcm16LE(samples) {
  const buf = new ArrayBuffer(samples.length * 2);
  const view = new DataView(buf);
  for (let i = 0; i < samples.length; i++) {
    view.setInt16(i * 2, floatToInt16Sample(samples[i]), true);
  }
  return buf;
}

function asBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) {
    return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  }
  throw new TypeError("expected ArrayBuffer or a typed array of bytes");
}

/**
 * PCM16 LE bytes -> Int16Array of sample values. An odd trailing byte is
 * ignored (use Pcm16Decoder to carry it into the next chunk).
 * @param {ArrayBuffer|ArrayBufferView} data
 */
export function bytesToInt16(data) {
  const bytes = asBytes(data);
  const n = bytes.length >> 1;
  const out = new Int16Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, n * 2);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true);
  return out;
}

/**
 * PCM16 LE bytes -> Float32 samples in [-1, 1).
 * @param {ArrayBuffer|ArrayBufferView} data
 */
export function decodePcm16LE(data) {
  const ints = bytesToInt16(data);
  const out = new Float32Array(ints.length);
  for (let i = 0; i < ints.length; i++) out[i] = ints[i] / 32768;
  return out;
}

/**
 * Int16 sample values -> plain array for the JSON audio message.
 * @param {Int16Array|ArrayBuffer} data Int16Array, or PCM16 LE bytes
 * @returns {number[]}
 */
export function int16ToJsonArray(data) {
  const ints = data instanceof Int16Array ? data : bytesToInt16(data);
  return Array.from(ints);
}

/**
 * Streaming PCM16 LE decoder: keeps an odd trailing byte for the next chunk,
 * so a stream split at any byte boundary decodes as if whole.
 */
export class Pcm16Decoder {
  constructor() {
    this._carry = -1; // pending low byte, or -1
  }

  /** @param {ArrayBuffer|ArrayBufferView} data @returns {Float32Array} */
  decode(data) {
    let bytes = asBytes(data);
    if (this._carry >= 0 && bytes.length > 0) {
      const joined = new Uint8Array(bytes.length + 1);
      joined[0] = this._carry;
      joined.set(bytes, 1);
      bytes = joined;
      this._carry = -1;
    }
    if (bytes.length % 2 === 1) {
      this._carry = bytes[bytes.length - 1];
      bytes = bytes.subarray(0, bytes.length - 1);
    }
    return decodePcm16LE(bytes);
  }

  /** True when half a sample is waiting for its other byte. */
  get pending() {
    return this._carry >= 0;
  }

  reset() {
    this._carry = -1;
  }
}
