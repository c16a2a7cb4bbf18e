import { test } from "node:test";
import assert from "node:assert/strict";
import { BUFFERING, JitterBuffer, PLAYING } from "../../static/js/lib/jitter-buffer.js";

// 1 kHz keeps the arithmetic easy: 1 sample = 1 ms.
const RATE = 1000;

function ramp(from, n) {
  return Float32Array.from({ length: n }, (_, i) => from + i);
}

function pull(jb, n) {
  const out = new Float32Array(n);
  const got = jb.pull(out);
  return { got, out: Array.from(out) };
}

test("rejects bad options", () => {
  assert.throws(() => new JitterBuffer({}), RangeError);
  assert.throws(() => new JitterBuffer({ sampleRate: RATE, startMs: 100, maxMs: 50 }), RangeError);
  assert.throws(() => new JitterBuffer({ sampleRate: RATE, maxMs: 300 }), RangeError, "below adaptMaxMs");
  assert.throws(() => new JitterBuffer({ sampleRate: RATE, startMs: -1 }), RangeError);
});

test("silence until startMs is buffered, then the audio in order", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 100, maxWaitMs: 10000 });
  assert.deepEqual(pull(jb, 4), { got: 0, out: [0, 0, 0, 0] });
  jb.push(ramp(1, 60));
  assert.equal(pull(jb, 4).got, 0);
  assert.equal(jb.state, BUFFERING);
  jb.push(ramp(61, 40));
  const { got, out } = pull(jb, 4);
  assert.equal(got, 4);
  assert.deepEqual(out, [1, 2, 3, 4]);
  assert.equal(jb.state, PLAYING);
  assert.equal(jb.bufferedSamples, 96);
});

test("pulls cross chunk boundaries", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 0 });
  jb.push(ramp(1, 3));
  jb.push(ramp(4, 2));
  jb.push(ramp(6, 5));
  assert.deepEqual(pull(jb, 7).out, [1, 2, 3, 4, 5, 6, 7]);
  assert.deepEqual(pull(jb, 3).out, [8, 9, 10]);
});

test("underrun: rest of the pull is silence, counted, then rebuffers", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 5, maxWaitMs: 10000, adaptStepMs: 0 });
  jb.push(ramp(1, 6));
  const a = pull(jb, 4);
  assert.deepEqual(a.out, [1, 2, 3, 4]);
  const b = pull(jb, 4);
  assert.equal(b.got, 2);
  assert.deepEqual(b.out, [5, 6, 0, 0]);
  assert.equal(jb.underruns, 1);
  assert.equal(jb.state, BUFFERING);
  // Needs startMs again before playing.
  jb.push(ramp(7, 3));
  assert.equal(pull(jb, 2).got, 0);
  jb.push(ramp(10, 2));
  assert.deepEqual(pull(jb, 2).out, [7, 8]);
});

test("adaptive prebuffer: each underrun asks for more, up to a cap", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 4, maxWaitMs: 10000, adaptStepMs: 2, adaptMaxMs: 7 });
  assert.equal(jb.targetMs, 4);
  jb.push(ramp(1, 4));
  pull(jb, 6); // plays 4, underrun
  assert.equal(jb.targetMs, 6);
  jb.push(ramp(1, 5));
  assert.equal(pull(jb, 2).got, 0, "5 < 6: still buffering");
  jb.push(ramp(6, 1));
  assert.equal(pull(jb, 8).got, 6); // underrun again
  assert.equal(jb.targetMs, 7, "capped");
  jb.push(ramp(1, 7));
  pull(jb, 9);
  assert.equal(jb.targetMs, 7);
  // A clean end of response is not an underrun and does not raise it.
  jb.push(ramp(1, 7));
  jb.endResponse();
  pull(jb, 9);
  assert.equal(jb.targetMs, 7);
  assert.equal(jb.underruns, 3);
  // Clear keeps what was learnt; configuring startMs starts over.
  jb.clear();
  assert.equal(jb.targetMs, 7);
  jb.configure({ startMs: 3 });
  assert.equal(jb.targetMs, 3);
  jb.configure({ maxWaitMs: 5 });
  assert.equal(jb.targetMs, 3, "other settings keep the target");
});

test("end of response plays out a short tail without an underrun", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 100, maxWaitMs: 10000 });
  jb.push(ramp(1, 3));
  assert.equal(pull(jb, 2).got, 0);
  jb.endResponse();
  assert.deepEqual(pull(jb, 2).out, [1, 2]);
  assert.deepEqual(pull(jb, 2).out, [3, 0]);
  assert.equal(jb.underruns, 0);
  assert.equal(jb.state, BUFFERING);
  assert.equal(jb.ended, false, "the end flag is spent once the tail played");
  // The next response needs its prebuffer again.
  jb.push(ramp(1, 3));
  assert.equal(pull(jb, 2).got, 0);
});

test("after maxWaitMs with data, playback starts anyway", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 100, maxWaitMs: 8 });
  assert.equal(pull(jb, 4).got, 0); // empty: waiting does not count
  assert.equal(pull(jb, 4).got, 0);
  jb.push(ramp(1, 10));
  assert.equal(pull(jb, 4).got, 0); // waited 4
  assert.equal(pull(jb, 4).got, 0); // waited 8
  assert.deepEqual(pull(jb, 4).out, [1, 2, 3, 4]);
});

test("bounded: a push past maxMs keeps what fits and counts the rest", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 0, maxMs: 10, adaptMaxMs: 10 });
  assert.equal(jb.push(ramp(1, 8)), 8);
  assert.equal(jb.push(ramp(9, 5)), 2);
  assert.equal(jb.bufferedSamples, 10);
  assert.equal(jb.overflowSamples, 3);
  assert.equal(jb.push(ramp(100, 4)), 0);
  assert.equal(jb.overflowSamples, 7);
  assert.deepEqual(pull(jb, 10).out, Array.from(ramp(1, 10)));
  assert.equal(jb.push(ramp(1, 4)), 4, "room again after playing");
});

test("clear drops everything at once and resets played time", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 0 });
  jb.push(ramp(1, 50));
  pull(jb, 10);
  assert.equal(jb.playedMs, 10);
  assert.equal(jb.clear(), 40);
  assert.equal(jb.bufferedSamples, 0);
  assert.equal(jb.playedMs, 0);
  assert.equal(jb.state, BUFFERING);
  assert.equal(jb.active, false);
  assert.deepEqual(pull(jb, 3), { got: 0, out: [0, 0, 0] });
  assert.equal(jb.statistics().clearedMs, 40);
  assert.equal(jb.underruns, 0, "a clear is not an underrun");
});

test("played ms counts only real samples of the current response", () => {
  const jb = new JitterBuffer({ sampleRate: 24000, startMs: 0 });
  jb.beginResponse();
  jb.push(new Float32Array(2400)); // 100 ms
  pull(jb, 1200);
  assert.equal(jb.playedMs, 50);
  pull(jb, 2400); // 1200 real + underrun
  assert.equal(jb.playedMs, 100);
  pull(jb, 2400); // silence only
  assert.equal(jb.playedMs, 100);
  jb.beginResponse();
  assert.equal(jb.playedMs, 0, "nothing buffered: restarts at once");
});

test("a new response's played time starts when its audio starts playing", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 0 });
  jb.beginResponse();
  jb.push(ramp(1, 10)); // response A
  pull(jb, 4);
  jb.beginResponse(); // B begins while 6 ms of A still queued
  jb.push(ramp(100, 10));
  assert.equal(jb.playedMs, 4, "still counting A");
  pull(jb, 4);
  assert.equal(jb.playedMs, 8);
  const { out } = pull(jb, 5); // 2 of A, then 3 of B
  assert.deepEqual(out, [9, 10, 100, 101, 102]);
  assert.equal(jb.playedMs, 3);
  assert.equal(jb.totalPlayedSamples, 13);
});

test("a marker right at a chunk end takes effect before the next chunk", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 0 });
  jb.push(ramp(1, 4));
  jb.beginResponse();
  jb.push(ramp(10, 4));
  pull(jb, 4);
  assert.equal(jb.playedMs, 0);
  pull(jb, 1);
  assert.equal(jb.playedMs, 1);
});

test("statistics is a frozen snapshot", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 0 });
  jb.push(ramp(1, 5));
  pull(jb, 2);
  const s = jb.statistics();
  assert.ok(Object.isFrozen(s));
  assert.deepEqual(s, {
    state: PLAYING,
    bufferedMs: 3,
    playedMs: 2,
    targetMs: 0,
    totalPlayedMs: 2,
    underruns: 0,
    overflowMs: 0,
    clearedMs: 0,
  });
  pull(jb, 1);
  assert.equal(s.playedMs, 2);
});

test("active while audio is buffered or playing", () => {
  const jb = new JitterBuffer({ sampleRate: RATE, startMs: 3 });
  assert.equal(jb.active, false);
  jb.push(ramp(1, 2));
  assert.equal(jb.active, true);
  jb.endResponse();
  pull(jb, 2);
  assert.equal(jb.active, true, "played the last samples exactly; still playing");
  pull(jb, 2);
  assert.equal(jb.active, false);
});

test("configure changes thresholds on the fly", () => {
  const jb = new JitterBuffer({ sampleRate: 48000, startMs: 200 });
  assert.equal(jb.startSamples, 9600);
  jb.configure({ startMs: 100 });
  assert.equal(jb.startSamples, 4800);
  assert.throws(() => jb.configure({ maxMs: 50 }), RangeError);
});
