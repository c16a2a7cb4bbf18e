import { test } from "node:test";
import assert from "node:assert/strict";
import {
  EnergyVad,
  ONSET,
  SILENCE,
  SPEECH,
  VAD_DEFAULTS,
  VadStateMachine,
  rmsDb,
} from "../../static/js/lib/vad.js";

const LOUD = -20;
const MID = -50; // between stop (-55) and start (-45)
const QUIET = -70;

// Feed a list of [levelDb, count] runs of 20 ms windows; return events with window index.
function run(m, runs, windowMs = 20) {
  const events = [];
  let i = 0;
  for (const [level, count] of runs) {
    for (let k = 0; k < count; k++, i++) {
      const ev = m.update(level, windowMs);
      if (ev) events.push([ev, i]);
    }
  }
  return events;
}

test("defaults: start above stop, sensible timings", () => {
  assert.ok(VAD_DEFAULTS.startDb > VAD_DEFAULTS.stopDb);
  assert.ok(VAD_DEFAULTS.hangoverMs >= 100, "hangover covers at least one 100 ms frame");
  const m = new VadStateMachine();
  assert.equal(m.state, SILENCE);
  assert.equal(m.speaking, false);
});

test("rejects inconsistent options", () => {
  assert.throws(() => new VadStateMachine({ startDb: -60, stopDb: -50 }), RangeError);
  assert.throws(() => new VadStateMachine({ hangoverMs: -1 }), RangeError);
  assert.throws(() => new VadStateMachine({ startDb: "loud" }), RangeError);
  assert.throws(() => new EnergyVad({}), RangeError);
});

test("speech starts after minSpeechMs above threshold, stops after hangover", () => {
  const m = new VadStateMachine({ minSpeechMs: 100, hangoverMs: 200 });
  const events = run(m, [
    [QUIET, 5],
    [LOUD, 20], // onset at window 5; 100 ms = 5 windows -> start at window 9
    [QUIET, 20], // quiet from window 25; 200 ms = 10 windows -> stop at window 34
  ]);
  assert.deepEqual(events, [
    ["start", 9],
    ["stop", 34],
  ]);
  assert.equal(m.state, SILENCE);
});

test("a click shorter than minSpeechMs is not speech", () => {
  const m = new VadStateMachine({ minSpeechMs: 100 });
  const events = run(m, [
    [LOUD, 3],
    [QUIET, 10],
    [LOUD, 4],
    [QUIET, 10],
  ]);
  assert.deepEqual(events, []);
  assert.equal(m.state, SILENCE);
});

test("minSpeechMs 0 starts on the first loud window", () => {
  const m = new VadStateMachine({ minSpeechMs: 0 });
  assert.equal(m.update(LOUD, 20), "start");
});

test("hysteresis: a level between the thresholds neither starts nor ends speech", () => {
  const m = new VadStateMachine({ minSpeechMs: 40, hangoverMs: 100 });
  // Mid level alone never starts speech.
  assert.deepEqual(run(m, [[MID, 50]]), []);
  // Once speaking, mid level keeps it going indefinitely.
  assert.deepEqual(run(m, [[LOUD, 2]]), [["start", 1]]);
  assert.deepEqual(run(m, [[MID, 100]]), []);
  assert.equal(m.speaking, true);
  // Quiet below stop ends it.
  assert.deepEqual(run(m, [[QUIET, 5]]), [["stop", 4]]);
});

test("onset continues through mid levels but falls back on a quiet window", () => {
  const m = new VadStateMachine({ minSpeechMs: 100 });
  assert.equal(m.update(LOUD, 20), null);
  assert.equal(m.state, ONSET);
  assert.equal(m.update(MID, 20), null);
  assert.equal(m.state, ONSET);
  assert.equal(m.update(QUIET, 20), null);
  assert.equal(m.state, SILENCE);
  // Onset time restarts from zero.
  assert.deepEqual(run(m, [[LOUD, 5]]), [["start", 4]]);
});

test("pauses shorter than the hangover do not end speech", () => {
  const m = new VadStateMachine({ minSpeechMs: 20, hangoverMs: 300 });
  const events = run(m, [
    [LOUD, 5],
    [QUIET, 14], // 280 ms pause
    [LOUD, 5],
    [QUIET, 14],
    [LOUD, 1],
    [QUIET, 15], // 300 ms: ends
  ]);
  assert.deepEqual(events, [
    ["start", 0],
    ["stop", 53],
  ]);
});

test("speechMs measures the segment, hangover included", () => {
  const m = new VadStateMachine({ minSpeechMs: 60, hangoverMs: 100 });
  run(m, [
    [LOUD, 10],
    [QUIET, 5],
  ]);
  assert.equal(m.state, SILENCE);
  assert.equal(m.speechMs, 300);
});

test("startOffsetDb raises the bar while the agent speaks", () => {
  const m = new VadStateMachine({ minSpeechMs: 0, startDb: -45 });
  m.setStartOffsetDb(10); // now -35
  assert.equal(m.update(-40, 20), null);
  assert.equal(m.update(-30, 20), "start");
  // The stop threshold is unchanged.
  assert.equal(m.update(-54, 20), null);
  m.setStartOffsetDb(0);
  m.reset();
  assert.equal(m.update(-40, 20), "start");
});

test("configure keeps state; reset forgets it", () => {
  const m = new VadStateMachine({ minSpeechMs: 0 });
  m.update(LOUD, 20);
  m.configure({ hangoverMs: 40 });
  assert.equal(m.speaking, true);
  assert.equal(m.update(QUIET, 20), null);
  assert.equal(m.update(QUIET, 20), "stop");
  m.update(LOUD, 20);
  m.reset();
  assert.equal(m.state, SILENCE);
  assert.throws(() => m.configure({ stopDb: 0 }), RangeError);
  assert.equal(m.options.stopDb, VAD_DEFAULTS.stopDb, "a rejected configure changes nothing");
});

test("forceStop ends speech once", () => {
  const m = new VadStateMachine({ minSpeechMs: 0 });
  assert.equal(m.forceStop(), null);
  m.update(LOUD, 20);
  assert.equal(m.forceStop(), "stop");
  assert.equal(m.forceStop(), null);
  assert.equal(m.state, SILENCE);
});

test("rmsDb: full-scale square is 0 dB, half amplitude -6 dB, silence -Infinity", () => {
  assert.equal(rmsDb(new Float32Array([1, -1, 1, -1])), 0);
  assert.ok(Math.abs(rmsDb(new Float32Array([0.5, -0.5])) - -6.0206) < 1e-3);
  assert.equal(rmsDb(new Float32Array(10)), -Infinity);
  assert.equal(rmsDb(new Float32Array(0)), -Infinity);
  assert.ok(Math.abs(rmsDb(new Float32Array([0, 0, 1, 1]), 2, 4)) < 1e-9);
});

function tone(amp, n, rate = 24000) {
  return Float32Array.from({ length: n }, (_, i) => amp * Math.sin((2 * Math.PI * 200 * i) / rate));
}

test("EnergyVad on audio: events with stream times, across arbitrary blocks", () => {
  const rate = 24000;
  const vad = new EnergyVad({ sampleRate: rate, minSpeechMs: 100, hangoverMs: 300, windowMs: 20 });
  assert.equal(vad.windowSize, 480);
  const signal = [
    new Float32Array(rate / 2), // 500 ms silence
    tone(0.3, rate), // 1 s of speech-level tone (-13.5 dBFS)
    new Float32Array(rate), // 1 s silence
  ];
  const all = new Float32Array(rate * 2.5);
  let o = 0;
  for (const s of signal) {
    all.set(s, o);
    o += s.length;
  }
  const events = [];
  for (let i = 0; i < all.length; i += 128) events.push(...vad.process(all.subarray(i, i + 128)));
  assert.equal(events.length, 2);
  assert.equal(events[0].type, "start");
  assert.equal(events[0].atMs, 600); // 500 ms + 100 ms minimum speech
  assert.equal(events[1].type, "stop");
  assert.equal(events[1].atMs, 1800); // speech ends at 1500 ms + 300 ms hangover
  assert.equal(events[1].speechMs, 1300); // onset at 500 ms to stop at 1800 ms
  assert.ok(vad.lastLevelDb === -Infinity);
});

test("EnergyVad: same result whatever the block size", () => {
  const rate = 16000;
  const x = new Float32Array(rate * 2);
  x.set(tone(0.1, rate / 2, rate), rate / 2);
  const collect = (size) => {
    const vad = new EnergyVad({ sampleRate: rate });
    const ev = [];
    for (let i = 0; i < x.length; i += size) ev.push(...vad.process(x.subarray(i, i + size)));
    return ev;
  };
  const a = collect(128);
  assert.equal(a.length, 2);
  assert.deepEqual(collect(1), a);
  assert.deepEqual(collect(x.length), a);
  assert.deepEqual(collect(999), a);
});

test("EnergyVad: quiet noise below the start threshold never triggers", () => {
  const vad = new EnergyVad({ sampleRate: 24000 });
  let seed = 1;
  const noise = Float32Array.from({ length: 24000 * 3 }, () => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return (seed / 2147483648 - 0.5) * 0.002; // about -65 dBFS
  });
  assert.deepEqual(vad.process(noise), []);
  assert.ok(vad.lastLevelDb < -60);
});

test("EnergyVad: forceStop and configure", () => {
  const vad = new EnergyVad({ sampleRate: 8000, minSpeechMs: 0 });
  assert.equal(vad.forceStop(), null);
  const [start] = vad.process(tone(0.5, 160, 8000));
  assert.equal(start.type, "start");
  assert.equal(vad.speaking, true);
  const stop = vad.forceStop();
  assert.equal(stop.type, "stop");
  assert.equal(stop.atMs, 20);
  vad.configure({ windowMs: 10 });
  assert.equal(vad.windowSize, 80);
  vad.configure({ startDb: -30, stopDb: -40 });
  assert.equal(vad.machine.options.startDb, -30);
  vad.reset();
  assert.equal(vad.state, SILENCE);
});

test("states are named", () => {
  assert.deepEqual([SILENCE, ONSET, SPEECH], ["silence", "onset", "speech"]);
});
