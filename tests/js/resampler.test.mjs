import { test } from "node:test";
import assert from "node:assert/strict";
import { Resampler, resample } from "../../static/js/lib/resampler.js";

function sine(freq, rate, n, amp = 0.5, phase = 0) {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = amp * Math.sin((2 * Math.PI * freq * i) / rate + phase);
  return out;
}

function rms(a, from = 0, to = a.length) {
  let s = 0;
  for (let i = from; i < to; i++) s += a[i] * a[i];
  return Math.sqrt(s / (to - from));
}

function concat(parts) {
  const n = parts.reduce((k, p) => k + p.length, 0);
  const out = new Float32Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

// Feed `input` in blocks of the given sizes (cycled) and collect the output.
function streamed(r, input, sizes) {
  const parts = [];
  let i = 0;
  let k = 0;
  while (i < input.length) {
    const n = sizes[k++ % sizes.length];
    parts.push(r.process(input.subarray(i, i + n)));
    i += n;
  }
  parts.push(r.flush());
  return concat(parts);
}

test("rejects bad rates and kernels", () => {
  assert.throws(() => new Resampler({ inRate: 0, outRate: 24000 }), RangeError);
  assert.throws(() => new Resampler({ inRate: 48000.5, outRate: 24000 }), RangeError);
  assert.throws(() => new Resampler({ inRate: 48000 }), RangeError);
  assert.throws(() => new Resampler({ inRate: 48000, outRate: 24000, kernel: "cubic" }), RangeError);
});

test("equal rates pass samples through unchanged, with no latency", () => {
  const r = new Resampler({ inRate: 24000, outRate: 24000 });
  const x = sine(440, 24000, 128);
  const y = r.process(x);
  assert.deepEqual(Array.from(y), Array.from(x));
  assert.notEqual(y, x, "returns a copy, not the caller's array");
  assert.equal(r.latencySamples, 0);
  assert.equal(r.flush().length, 0);
});

for (const [inRate, outRate] of [
  [48000, 24000],
  [44100, 24000],
  [16000, 24000],
  [24000, 48000],
  [24000, 44100],
  [8000, 24000],
]) {
  test(`${inRate} -> ${outRate}: output length is ceil(n * out / in) after flush`, () => {
    for (const n of [0, 1, 127, 128, 1000, 4410]) {
      const y = resample(new Float32Array(n), inRate, outRate);
      assert.equal(y.length, Math.ceil((n * outRate) / inRate), `n=${n}`);
    }
  });

  test(`${inRate} -> ${outRate}: streaming in odd blocks equals one call`, () => {
    const x = sine(440, inRate, 5000);
    const whole = resample(x, inRate, outRate);
    for (const sizes of [[128], [1], [7, 300, 2], [4999, 1]]) {
      const parts = streamed(new Resampler({ inRate, outRate }), x, sizes);
      assert.equal(parts.length, whole.length, `sizes ${sizes}`);
      for (let i = 0; i < whole.length; i++) {
        assert.ok(Math.abs(parts[i] - whole[i]) < 1e-6, `sizes ${sizes} at ${i}`);
      }
    }
  });

  test(`${inRate} -> ${outRate}: DC passes at unit gain`, () => {
    const x = new Float32Array(4000).fill(0.25);
    const y = resample(x, inRate, outRate);
    const h = 40; // away from the zero-padded edges
    for (let i = h; i < y.length - h; i++) assert.ok(Math.abs(y[i] - 0.25) < 1e-6, `at ${i}: ${y[i]}`);
  });

  test(`${inRate} -> ${outRate}: a 440 Hz tone keeps its level and frequency`, () => {
    const n = inRate; // one second
    const x = sine(440, inRate, n, 0.5);
    const y = resample(x, inRate, outRate);
    const expected = sine(440, outRate, y.length, 0.5);
    const from = 100;
    const to = y.length - 100;
    assert.ok(Math.abs(rms(y, from, to) - rms(expected, from, to)) < 0.005);
    // Sample by sample against the ideal tone: the converter adds no delay
    // beyond its (compensated) kernel centre.
    let maxErr = 0;
    for (let i = from; i < to; i++) maxErr = Math.max(maxErr, Math.abs(y[i] - expected[i]));
    assert.ok(maxErr < 0.01, `max error ${maxErr}`);
  });
}

test("downsampling removes content above the new Nyquist (no aliasing)", () => {
  // 18 kHz at 48 kHz would alias to 6 kHz at 24 kHz without a low-pass.
  const x = sine(18000, 48000, 48000, 0.5);
  const y = resample(x, 48000, 24000);
  const level = rms(y, 200, y.length - 200);
  assert.ok(level < 0.5 * 0.707 * 0.01, `residual ${level} should be 40 dB down`);
  // The linear kernel has no such filter: it lets much more through.
  const yl = resample(x, 48000, 24000, { kernel: "linear" });
  assert.ok(rms(yl, 200, yl.length - 200) > 10 * level);
});

test("linear kernel interpolates between neighbours exactly", () => {
  const r = new Resampler({ inRate: 1, outRate: 2, kernel: "linear" });
  const y = Array.from(r.process(new Float32Array([0, 1, 0, -1])));
  const tail = Array.from(r.flush());
  assert.deepEqual([...y, ...tail], [0, 0.5, 1, 0.5, 0, -0.5, -1, -0.5]);
});

test("latency is halfWidth input samples until flush", () => {
  const r = new Resampler({ inRate: 48000, outRate: 24000 });
  assert.equal(r.latencySamples, r.halfWidth);
  assert.equal(r.halfWidth, 16);
  // Fewer samples than the kernel half-width: nothing out yet.
  assert.equal(r.process(new Float32Array(16)).length, 0);
  // One more input sample lets output 0 (at t = 0) out.
  assert.equal(r.process(new Float32Array(1)).length, 1);
});

test("history stays small however long the stream", () => {
  const r = new Resampler({ inRate: 44100, outRate: 24000 });
  const block = sine(300, 44100, 128);
  for (let i = 0; i < 5000; i++) r.process(block);
  assert.ok(r._len <= 2 * r.halfWidth + 2, `history ${r._len}`);
  assert.ok(r._buf.length <= 256);
});

test("reset starts a new stream", () => {
  const r = new Resampler({ inRate: 48000, outRate: 24000 });
  const x = sine(1000, 48000, 960);
  const a = concat([r.process(x), r.flush()]);
  r.process(sine(3000, 48000, 500));
  r.reset();
  const b = concat([r.process(x), r.flush()]);
  assert.deepEqual(Array.from(b), Array.from(a));
});

test("flush resets, so the converter can be reused", () => {
  const r = new Resampler({ inRate: 16000, outRate: 24000 });
  const x = sine(500, 16000, 333);
  const a = concat([r.process(x), r.flush()]);
  const b = concat([r.process(x), r.flush()]);
  assert.deepEqual(Array.from(b), Array.from(a));
});

test("accepts plain arrays", () => {
  const y = resample([0.5, 0.5, 0.5, 0.5], 2, 1);
  assert.equal(y.length, 2);
});
