import { test } from "node:test";
import assert from "node:assert/strict";
import { FrameCutter } from "../../static/js/lib/frame-cutter.js";

function ramp(from, n) {
  return Float32Array.from({ length: n }, (_, i) => from + i);
}

test("frame size for 100 ms at common rates", () => {
  assert.equal(FrameCutter.frameSizeFor(24000, 100), 2400);
  assert.equal(FrameCutter.frameSizeFor(16000, 100), 1600);
  assert.equal(FrameCutter.frameSizeFor(44100, 100), 4410);
});

test("rejects a bad frame size", () => {
  assert.throws(() => new FrameCutter({ frameSize: 0 }), RangeError);
  assert.throws(() => new FrameCutter({ frameSize: 2.5 }), RangeError);
  assert.throws(() => new FrameCutter({}), RangeError);
});

test("128-sample blocks become 2400-sample frames with nothing lost or reordered", () => {
  const c = new FrameCutter({ frameSize: 2400 });
  const frames = [];
  let next = 0;
  for (let b = 0; b < 100; b++) {
    frames.push(...c.push(ramp(next, 128)));
    next += 128;
  }
  // 12800 samples = 5 frames + 800 pending
  assert.equal(frames.length, 5);
  assert.equal(c.pendingSamples, 800);
  let expect = 0;
  for (const f of frames) {
    assert.equal(f.length, 2400);
    for (const v of f) assert.equal(v, expect++);
  }
  const rest = c.flush();
  assert.equal(rest.length, 800);
  assert.equal(rest[0], 12000);
  assert.equal(rest[799], 12799);
  assert.equal(c.pendingSamples, 0);
});

test("a block larger than several frames yields them all at once", () => {
  const c = new FrameCutter({ frameSize: 10 });
  const frames = c.push(ramp(0, 35));
  assert.equal(frames.length, 3);
  assert.deepEqual(Array.from(frames[2]), Array.from(ramp(20, 10)));
  assert.equal(c.pendingSamples, 5);
  const more = c.push(ramp(35, 5));
  assert.equal(more.length, 1);
  assert.deepEqual(Array.from(more[0]), Array.from(ramp(30, 10)));
});

test("blocks of varying size (resampler output) and empty blocks", () => {
  const c = new FrameCutter({ frameSize: 7 });
  const sizes = [3, 0, 1, 6, 2, 0, 9, 4];
  const frames = [];
  let next = 0;
  for (const s of sizes) {
    frames.push(...c.push(ramp(next, s)));
    next += s;
  }
  const flat = frames.flatMap((f) => Array.from(f));
  assert.equal(frames.length, Math.floor(next / 7));
  assert.deepEqual(flat, Array.from(ramp(0, frames.length * 7)));
});

test("frames returned earlier are not overwritten by later pushes", () => {
  const c = new FrameCutter({ frameSize: 4 });
  const [first] = c.push(ramp(0, 4));
  c.push(ramp(100, 6));
  assert.deepEqual(Array.from(first), [0, 1, 2, 3]);
});

test("plain arrays and other element types", () => {
  const c = new FrameCutter({ frameSize: 3, ArrayType: Int16Array });
  const frames = c.push([1, 2, 3, 4]);
  assert.ok(frames[0] instanceof Int16Array);
  assert.deepEqual(Array.from(frames[0]), [1, 2, 3]);
  assert.deepEqual(Array.from(c.flush()), [4]);
});

test("reset drops the partial frame", () => {
  const c = new FrameCutter({ frameSize: 4 });
  c.push(ramp(0, 3));
  c.reset();
  assert.equal(c.pendingSamples, 0);
  const frames = c.push(ramp(10, 4));
  assert.deepEqual(Array.from(frames[0]), [10, 11, 12, 13]);
  assert.equal(c.flush().length, 0);
});
