import { test } from "node:test";
import assert from "node:assert/strict";
import {
  Pcm16Decoder,
  bytesToInt16,
  decodePcm16LE,
  encodePcm16LE,
  floatToInt16,
  floatToInt16Sample,
  int16ToJsonArray,
} from "../../static/js/lib/pcm16.js";

test("float -> int16 scaling, rounding and clipping", () => {
  assert.equal(floatToInt16Sample(0), 0);
  assert.equal(floatToInt16Sample(1), 32767);
  assert.equal(floatToInt16Sample(-1), -32768);
  assert.equal(floatToInt16Sample(0.5), 16384);
  assert.equal(floatToInt16Sample(32767 / 32768), 32767);
  assert.equal(floatToInt16Sample(1.5 / 32768), 2); // half rounds up
  assert.equal(floatToInt16Sample(-1.5 / 32768), -1); // Math.round: towards +inf
  assert.equal(floatToInt16Sample(-0.5), -16384);
  assert.equal(floatToInt16Sample(1.7), 32767);
  assert.equal(floatToInt16Sample(-3), -32768);
  assert.equal(floatToInt16Sample(Infinity), 32767);
  assert.equal(floatToInt16Sample(-Infinity), -32768);
  assert.equal(floatToInt16Sample(NaN), 0);
  assert.equal(floatToInt16Sample(1 / 32768), 1);
  assert.equal(floatToInt16Sample(-1 / 32768), -1);
  assert.equal(floatToInt16Sample(0.4 / 32768), 0);
});

test("floatToInt16 maps a whole array", () => {
  const out = floatToInt16(new Float32Array([0, 1, -1, 2, -2, 0.25]));
  assert.ok(out instanceof Int16Array);
  assert.deepEqual(Array.from(out), [0, 32767, -32768, 32767, -32768, 8192]);
});

test("encode writes little-endian bytes", () => {
  const buf = encodePcm16LE(new Float32Array([1, -1, 0, 1 / 32768, -1 / 32768]));
  assert.ok(buf instanceof ArrayBuffer);
  assert.deepEqual(Array.from(new Uint8Array(buf)), [
    0xff, 0x7f, // 32767
    0x00, 0x80, // -32768
    0x00, 0x00, // 0
    0x01, 0x00, // 1
    0xff, 0xff, // -1
  ]);
});

test("encode of an empty block is an empty buffer", () => {
  assert.equal(encodePcm16LE(new Float32Array(0)).byteLength, 0);
});

test("decode reads little-endian and divides by 32768", () => {
  const bytes = new Uint8Array([0xff, 0x7f, 0x00, 0x80, 0x00, 0x40, 0x00, 0xc0]);
  const f = decodePcm16LE(bytes.buffer);
  assert.deepEqual(Array.from(f), [32767 / 32768, -1, 0.5, -0.5]);
});

test("decode accepts views with an offset into a larger buffer", () => {
  const big = new Uint8Array([9, 9, 9, 0x00, 0x40, 9]);
  const view = big.subarray(3, 5);
  assert.deepEqual(Array.from(decodePcm16LE(view)), [0.5]);
  const dv = new DataView(big.buffer, 3, 2);
  assert.deepEqual(Array.from(bytesToInt16(dv)), [16384]);
});

test("decode ignores an odd trailing byte", () => {
  assert.deepEqual(Array.from(bytesToInt16(new Uint8Array([1, 0, 7]))), [1]);
});

test("round trip float -> bytes -> float is within half a step", () => {
  const x = new Float32Array(1000);
  for (let i = 0; i < x.length; i++) x[i] = Math.sin(i / 10) * 0.99;
  const y = decodePcm16LE(encodePcm16LE(x));
  for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) <= 0.5 / 32768 + 1e-9);
});

test("round trip int16 -> float -> int16 is exact for every value", () => {
  const all = new Int16Array(65536);
  for (let i = 0; i < 65536; i++) all[i] = i - 32768;
  const bytes = new Uint8Array(all.length * 2);
  const dv = new DataView(bytes.buffer);
  all.forEach((v, i) => dv.setInt16(i * 2, v, true));
  const f = decodePcm16LE(bytes);
  const back = bytesToInt16(encodePcm16LE(f));
  assert.deepEqual(Array.from(back), Array.from(all));
});

test("JSON array of int16 values from Int16Array or from bytes", () => {
  assert.deepEqual(int16ToJsonArray(new Int16Array([1, -2, 32767])), [1, -2, 32767]);
  const buf = encodePcm16LE(new Float32Array([1, -1]));
  assert.deepEqual(int16ToJsonArray(buf), [32767, -32768]);
  assert.deepEqual(JSON.parse(JSON.stringify(int16ToJsonArray(buf))), [32767, -32768]);
});

test("streaming decoder carries an odd byte to the next chunk", () => {
  const full = new Uint8Array([0x00, 0x40, 0x00, 0xc0, 0xff, 0x7f]);
  const whole = Array.from(decodePcm16LE(full));
  for (const cuts of [[1], [3], [1, 2], [5], [1, 3, 5]]) {
    const d = new Pcm16Decoder();
    const out = [];
    let prev = 0;
    for (const c of [...cuts, full.length]) {
      out.push(...d.decode(full.subarray(prev, c)));
      prev = c;
    }
    assert.deepEqual(out, whole, `cuts ${cuts}`);
    assert.equal(d.pending, false);
  }
});

test("streaming decoder: empty chunks and reset", () => {
  const d = new Pcm16Decoder();
  assert.equal(d.decode(new Uint8Array([0x01])).length, 0);
  assert.equal(d.pending, true);
  assert.equal(d.decode(new Uint8Array(0)).length, 0);
  assert.equal(d.pending, true);
  d.reset();
  assert.equal(d.pending, false);
  assert.deepEqual(Array.from(d.decode(new Uint8Array([0x00, 0x40]))), [0.5]);
  assert.throws(() => d.decode("nope"), TypeError);
});
