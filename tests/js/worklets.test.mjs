// The two AudioWorklet processors, run in node with a stand-in for the
// AudioWorkletGlobalScope (sampleRate, currentTime, AudioWorkletProcessor,
// registerProcessor). The context runs at 48 kHz here, as most browsers do.
import { test } from "node:test";
import assert from "node:assert/strict";

const registered = new Map();
globalThis.sampleRate = 48000;
globalThis.currentTime = 0;
globalThis.AudioWorkletProcessor = class {
  constructor() {
    const posted = [];
    this.posted = posted;
    this.port = {
      onmessage: null,
      postMessage(msg, transfer) {
        posted.push({ msg, transfer });
      },
    };
  }
};
globalThis.registerProcessor = (name, cls) => registered.set(name, cls);

await import("../../static/js/worklets/recorder-processor.js");
await import("../../static/js/worklets/player-processor.js");

const { decodePcm16LE, encodePcm16LE } = await import("../../static/js/lib/pcm16.js");

function send(proc, data) {
  proc.port.onmessage({ data });
}

// Remove and return the posted messages of one type (in place: the port
// keeps appending to the same array).
function take(proc, type) {
  const out = proc.posted.filter((p) => p.msg.type === type);
  const rest = proc.posted.filter((p) => p.msg.type !== type);
  proc.posted.splice(0, proc.posted.length, ...rest);
  return out;
}

// Run the recorder over `seconds` of a signal given per 48 kHz sample index.
function runRecorder(proc, seconds, signal, channels = 1) {
  const blocks = Math.round((48000 * seconds) / 128);
  for (let b = 0; b < blocks; b++) {
    const chans = [];
    for (let c = 0; c < channels; c++) {
      const ch = new Float32Array(128);
      for (let i = 0; i < 128; i++) ch[i] = signal(b * 128 + i, c);
      chans.push(ch);
    }
    assert.equal(proc.process([chans], [[new Float32Array(128)]]), true);
  }
}

const toneAt = (amp) => (i) => amp * Math.sin((2 * Math.PI * 300 * i) / 48000);

test("both processors register under their names", () => {
  assert.deepEqual([...registered.keys()].sort(), ["voice-player", "voice-recorder"]);
});

test("recorder: 48 kHz render quanta become 100 ms 24 kHz PCM16 frames, transferred", () => {
  const Rec = registered.get("voice-recorder");
  const proc = new Rec({ processorOptions: { targetRate: 24000, frameMs: 100 } });
  runRecorder(proc, 1.0, toneAt(0.25));
  const frames = take(proc, "frame");
  // 1 s in, minus the resampler's 16-sample (0.33 ms) hold-back: 9 whole frames.
  assert.equal(frames.length, 9);
  for (const f of frames) {
    assert.ok(f.msg.pcm instanceof ArrayBuffer);
    assert.equal(f.msg.pcm.byteLength, 4800);
    assert.deepEqual(f.transfer, [f.msg.pcm]);
  }
  // The content is the 300 Hz tone at 24 kHz.
  const x = decodePcm16LE(frames[3].msg.pcm);
  const start = 3 * 2400;
  for (let i = 0; i < x.length; i += 97) {
    const ideal = 0.25 * Math.sin((2 * Math.PI * 300 * (start + i)) / 24000);
    assert.ok(Math.abs(x[i] - ideal) < 0.003, `sample ${i}: ${x[i]} vs ${ideal}`);
  }
});

test("recorder: stereo input is averaged to mono", () => {
  const Rec = registered.get("voice-recorder");
  const proc = new Rec({ processorOptions: {} });
  // Left +0.5, right -0.5: the mix is silence.
  runRecorder(proc, 0.3, (i, c) => (c === 0 ? 0.5 : -0.5), 2);
  const frames = take(proc, "frame");
  assert.equal(frames.length, 3);
  for (const f of frames) assert.ok(decodePcm16LE(f.msg.pcm).every((v) => v === 0));
});

test("recorder: VAD start and stop arrive after the frames that carried the speech", () => {
  const Rec = registered.get("voice-recorder");
  const proc = new Rec({ processorOptions: { vad: { minSpeechMs: 100, hangoverMs: 300 } } });
  // 0.5 s silence, 1 s tone, 1 s silence
  runRecorder(proc, 2.5, (i) => (i >= 24000 && i < 72000 ? toneAt(0.3)(i) : 0));
  const order = proc.posted.filter((p) => p.msg.type !== "level").map((p) => p.msg.type === "frame" ? "f" : p.msg.event);
  const s = order.indexOf("start");
  const e = order.indexOf("stop");
  assert.ok(s > 0 && e > s, order.join(""));
  // Start is decided at 600 ms, stop at 1800 ms. Within one render quantum
  // frames go out first, so the frame that ends at the decision point may
  // already be out: 5 or 6 frames before start, 17 or 18 before stop.
  const before = (k) => order.slice(0, k).filter((x) => x === "f").length;
  assert.ok([5, 6].includes(before(s)), `frames before start: ${before(s)}`);
  assert.ok([17, 18].includes(before(e)), `frames before stop: ${before(e)}`);
  const stop = proc.posted.find((p) => p.msg.event === "stop").msg;
  assert.equal(stop.atMs, 1800);
  const levels = take(proc, "level");
  assert.ok(levels.length >= 45, `about every 50 ms: ${levels.length}`);
  assert.ok(levels.some((l) => l.msg.speaking && l.msg.db > -20));
});

test("recorder: mute ends speech, pads a silent tail, then sends nothing", () => {
  const Rec = registered.get("voice-recorder");
  const proc = new Rec({ processorOptions: { muteTailFrames: 3, vad: { minSpeechMs: 0 } } });
  runRecorder(proc, 0.25, toneAt(0.3)); // 2 frames + a partial one
  take(proc, "frame");
  take(proc, "vad");
  send(proc, { type: "mute", muted: true });
  const frames = take(proc, "frame");
  assert.equal(frames.length, 4, "completed partial + 3 silent");
  assert.ok(decodePcm16LE(frames[3].msg.pcm).every((v) => v === 0));
  const vad = take(proc, "vad");
  assert.deepEqual(vad.map((v) => v.msg.event), ["stop"]);
  runRecorder(proc, 0.5, toneAt(0.3));
  assert.equal(take(proc, "frame").length, 0);
  assert.equal(take(proc, "vad").length, 0);
  send(proc, { type: "mute", muted: false });
  runRecorder(proc, 0.5, toneAt(0.3));
  assert.equal(take(proc, "frame").length, 5, "0.5 s after unmute, fresh resampler");
  assert.deepEqual(take(proc, "vad").map((v) => v.msg.event), ["start"]);
});

test("recorder: start offset raises the barge-in bar; vad options apply live", () => {
  const Rec = registered.get("voice-recorder");
  const proc = new Rec({ processorOptions: { vad: { minSpeechMs: 0, startDb: -45 } } });
  send(proc, { type: "startOffsetDb", db: 30 }); // start needs -15 dBFS
  runRecorder(proc, 0.3, toneAt(0.1)); // about -23 dBFS
  assert.equal(take(proc, "vad").length, 0);
  send(proc, { type: "startOffsetDb", db: 0 });
  runRecorder(proc, 0.1, toneAt(0.1));
  assert.deepEqual(take(proc, "vad").map((v) => v.msg.event), ["start"]);
  send(proc, { type: "vad", options: { hangoverMs: 100 } });
  runRecorder(proc, 0.2, () => 0);
  assert.deepEqual(take(proc, "vad").map((v) => v.msg.event), ["stop"]);
});

function pcmTone(ms, rate = 24000, amp = 0.5) {
  const n = (rate * ms) / 1000;
  return encodePcm16LE(Float32Array.from({ length: n }, (_, i) => amp * Math.sin((2 * Math.PI * 440 * i) / rate)));
}

function runPlayer(proc, quanta, channels = 2) {
  const outs = [];
  for (let q = 0; q < quanta; q++) {
    const out = Array.from({ length: channels }, () => new Float32Array(128));
    assert.equal(proc.process([], [out]), true);
    globalThis.currentTime += 128 / 48000;
    outs.push(out);
  }
  return outs;
}

test("player: prebuffers, plays 24 kHz audio at 48 kHz on every channel, reports stats", () => {
  const Play = registered.get("voice-player");
  const proc = new Play({ processorOptions: { inputRate: 24000, startMs: 150 } });
  send(proc, { type: "begin" });
  send(proc, { type: "audio", pcm: pcmTone(100) });
  let outs = runPlayer(proc, 10);
  assert.ok(outs.every((o) => o[0].every((v) => v === 0)), "100 ms < 150 ms prebuffer: silence");
  send(proc, { type: "audio", pcm: pcmTone(100) });
  outs = runPlayer(proc, 10);
  const played = outs.flatMap((o) => Array.from(o[0]));
  assert.ok(Math.max(...played) > 0.45, "the tone plays");
  assert.deepEqual(Array.from(outs[5][1]), Array.from(outs[5][0]), "same on both channels");
  const stats = take(proc, "stats").map((s) => s.msg);
  const last = stats.at(-1);
  assert.equal(last.active, true);
  assert.equal(last.state, "playing");
  assert.ok(Math.abs(last.playedMs + last.bufferedMs - 200) < 1, JSON.stringify(last));
  assert.equal(typeof last.time, "number");
});

test("player: clear drops everything at once and says so", () => {
  const Play = registered.get("voice-player");
  const proc = new Play({ processorOptions: { startMs: 50 } });
  send(proc, { type: "begin" });
  send(proc, { type: "audio", pcm: pcmTone(1000) });
  runPlayer(proc, 20);
  take(proc, "stats");
  send(proc, { type: "clear" });
  const [s] = take(proc, "stats");
  assert.equal(s.msg.active, false);
  assert.equal(s.msg.bufferedMs, 0);
  assert.equal(s.msg.playedMs, 0);
  assert.ok(s.msg.clearedMs > 900);
  // What was playing fades out over 5 ms (240 samples at 48 kHz), then silence.
  const out = runPlayer(proc, 5).flatMap((o) => Array.from(o[0]));
  assert.ok(out.slice(240).every((v) => v === 0), "silent after 5 ms");
  assert.ok(out.slice(0, 10).some((v) => Math.abs(v) > 0.05), "not cut mid-wave");
  for (let i = 0; i < 240; i++) {
    const bound = (0.5 * (240 - i)) / 241 + 1e-6; // the tone's 0.5 under a falling line
    assert.ok(Math.abs(out[i]) <= bound, `sample ${i}: ${out[i]} > ${bound}`);
  }
  // A clear while nothing plays has nothing to fade.
  send(proc, { type: "clear" });
  assert.ok(runPlayer(proc, 3).every((o) => o[0].every((v) => v === 0)));
});

test("player: end plays a short tail; odd byte splits and rate changes are handled", () => {
  const Play = registered.get("voice-player");
  const proc = new Play({ processorOptions: { startMs: 150 } });
  const pcm = new Uint8Array(pcmTone(40));
  send(proc, { type: "begin" });
  send(proc, { type: "audio", pcm: pcm.slice(0, 101).buffer });
  send(proc, { type: "audio", pcm: pcm.slice(101).buffer });
  send(proc, { type: "end" });
  const outs = runPlayer(proc, 20, 1);
  const real = outs.flatMap((o) => Array.from(o[0])).filter((v) => v !== 0).length;
  assert.ok(Math.abs(real - 1920) <= 4, `40 ms at 48 kHz: ${real}`);
  const stats = take(proc, "stats").map((s) => s.msg);
  assert.equal(stats.at(-1).active, false);
  assert.equal(stats.at(-1).underruns, 0);
  // A 16 kHz room: 100 ms of input is still 100 ms out.
  send(proc, { type: "config", inputRate: 16000, startMs: 20 });
  send(proc, { type: "begin" });
  send(proc, { type: "audio", pcm: pcmTone(100, 16000) });
  send(proc, { type: "end" });
  const outs2 = runPlayer(proc, 50, 1);
  const real2 = outs2.flatMap((o) => Array.from(o[0])).filter((v) => v !== 0).length;
  assert.ok(Math.abs(real2 - 4800) <= 6, `100 ms at 48 kHz: ${real2}`);
});

test("player: duck turns the playing audio down smoothly and back up; stats say so", () => {
  const Play = registered.get("voice-player");
  const proc = new Play({ processorOptions: { startMs: 20 } });
  send(proc, { type: "begin" });
  send(proc, { type: "audio", pcm: pcmTone(1000, 24000, 0.5) });
  let peak = (outs) => Math.max(...outs.flatMap((o) => Array.from(o[0], Math.abs)));
  assert.ok(peak(runPlayer(proc, 40, 1)) > 0.49, "full level first");
  take(proc, "stats");
  send(proc, { type: "duck", ducked: true });
  const [now] = take(proc, "stats");
  assert.equal(now.msg.ducked, true, "reported at once");
  assert.equal(now.msg.gain, 1, "the ramp has not begun");
  const down = runPlayer(proc, 40, 1); // ~107 ms: the 50 ms ramp and then some
  const samples = down.flatMap((o) => Array.from(o[0]));
  let jump = 0;
  for (let i = 1; i < samples.length; i++) jump = Math.max(jump, Math.abs(samples[i] - samples[i - 1]));
  // A 440 Hz tone at 0.5 moves at most 2*pi*440*0.5/48000 = 0.029 a sample; a step would show.
  assert.ok(jump < 0.03, `largest sample step ${jump}`);
  assert.ok(peak(down.slice(-10)) < 0.126 && peak(down.slice(-10)) > 0.12, "0.25 of 0.5");
  const stats = take(proc, "stats").map((s) => s.msg);
  assert.equal(stats.at(-1).gain, 0.25);
  // Every sample since the duck played below full gain (reported every ~50 ms of 107).
  const { duckedMs } = stats.at(-1);
  assert.ok(duckedMs >= 100 && duckedMs <= (1000 * 40 * 128) / 48000, JSON.stringify(stats.at(-1)));
  assert.equal(stats.at(-1).state, "playing", "ducked, not stopped");
  send(proc, { type: "duck", ducked: false });
  const up = runPlayer(proc, 40, 1);
  assert.ok(peak(up.slice(-10)) > 0.49, "back to full level");
  assert.equal(take(proc, "stats").at(-1).msg.gain, 1);
});
