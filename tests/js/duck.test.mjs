import { test } from "node:test";
import assert from "node:assert/strict";
import { DUCK_DEFAULTS, GainRamp } from "../../static/js/lib/duck.js";

const RATE = 48000;

// The gains the ramp applies, sample by sample, over `n` samples of ones (as
// float32, so steps are compared with a float32 rounding allowance).
function gains(ramp, n, real = n) {
  const buf = new Float32Array(n).fill(1);
  const low = ramp.process(buf, real);
  return { g: Array.from(buf), low };
}

function maxStep(values, from) {
  let worst = Math.abs(values[0] - from);
  for (let i = 1; i < values.length; i++) worst = Math.max(worst, Math.abs(values[i] - values[i - 1]));
  return worst;
}

test("defaults: duck to 0.25 over 50 ms; full gain until ducked", () => {
  assert.equal(DUCK_DEFAULTS.gain, 0.25);
  assert.equal(DUCK_DEFAULTS.rampMs, 50);
  const ramp = new GainRamp({ sampleRate: RATE });
  const { g, low } = gains(ramp, 256);
  assert.ok(g.every((v) => v === 1));
  assert.equal(low, 0);
  assert.equal(ramp.moving, false);
});

test("duck: the gain falls linearly to 0.25 in 50 ms, then stays", () => {
  const ramp = new GainRamp({ sampleRate: RATE });
  ramp.setDucked(true);
  assert.equal(ramp.moving, true);
  const { g } = gains(ramp, 4800); // 100 ms
  const n = 0.05 * RATE; // 2400 samples
  // Each step is the same small one (0.75 / 2400): no step in the waveform.
  assert.ok(maxStep(g, 1) <= 0.75 / n + 1e-6, `largest step ${maxStep(g, 1)}`);
  assert.ok(Math.abs(g[n / 2 - 1] - 0.625) < 1e-3, `half way: ${g[n / 2 - 1]}`);
  assert.ok(g[n - 2] > 0.25, "not there before 50 ms");
  assert.equal(g[n], 0.25);
  assert.ok(g.slice(n).every((v) => v === 0.25));
  assert.equal(ramp.moving, false);
  assert.equal(ramp.gain, 0.25);
});

test("restore: back up to 1 over 50 ms; a flip in mid-ramp turns back without a jump", () => {
  const ramp = new GainRamp({ sampleRate: RATE });
  ramp.setDucked(true);
  const first = gains(ramp, 1200).g; // 25 ms: half way down
  const mid = first.at(-1);
  assert.ok(Math.abs(mid - 0.625) < 1e-3, String(mid));
  ramp.setDucked(false); // the user stopped at once (a short burst)
  const back = gains(ramp, 2400).g;
  assert.ok(maxStep(back, mid) <= 0.75 / 2400 + 1e-6, "turns back smoothly");
  assert.ok(back[0] > mid, "goes up from where it was");
  const up = back.findIndex((v) => v === 1);
  assert.ok(Math.abs(up - 1200) <= 2, `back to 1 after the same 25 ms: ${up}`);
  assert.equal(ramp.moving, false);
});

test("the signal is scaled, silence stays silence; low counts only real audio below 1", () => {
  const ramp = new GainRamp({ sampleRate: RATE, gain: 0.5, rampMs: 0 });
  ramp.setDucked(true);
  const buf = Float32Array.from({ length: 128 }, (_, i) => (i < 100 ? 0.8 : 0));
  const low = ramp.process(buf, 100); // 28 samples of underrun silence at the end
  assert.equal(low, 100);
  assert.ok(buf.subarray(0, 100).every((v) => Math.abs(v - 0.4) < 1e-6));
  assert.ok(buf.subarray(100).every((v) => v === 0));
  ramp.setDucked(false);
  assert.equal(ramp.process(new Float32Array(128).fill(0.8), 128), 0, "rampMs 0: at once");
});

test("configure: a new duck gain applies to a ducked ramp; bad values refused", () => {
  const ramp = new GainRamp({ sampleRate: RATE, rampMs: 10 });
  ramp.setDucked(true);
  gains(ramp, 960);
  assert.equal(ramp.gain, 0.25);
  ramp.configure({ gain: 0.5 });
  const { g } = gains(ramp, 960);
  assert.equal(g.at(-1), 0.5);
  assert.ok(maxStep(g, 0.25) <= 0.5 / 480 + 1e-6);
  assert.throws(() => ramp.configure({ gain: 1.5 }), RangeError);
  assert.throws(() => ramp.configure({ rampMs: -1 }), RangeError);
  assert.throws(() => new GainRamp({ sampleRate: 0 }), RangeError);
  const full = new GainRamp({ sampleRate: RATE, gain: 1 });
  full.setDucked(true);
  assert.ok(gains(full, 128).g.every((v) => v === 1), "gain 1: ducking is off");
});
