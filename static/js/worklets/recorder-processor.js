// AudioWorklet processor "voice-recorder": microphone -> mono -> 24 kHz ->
// 100 ms PCM16 LE frames, plus the client VAD. Runs on the audio thread;
// talks to the page over its port.
//
// Port messages, page -> worklet:
//   {type: "vad", options}        VAD thresholds and timings (VAD_DEFAULTS fields)
//   {type: "startOffsetDb", db}   raise the start threshold (agent speaking) or 0
//   {type: "mute", muted}         stop (or resume) sending; see below
// worklet -> page (in stream order):
//   {type: "frame", pcm}          ArrayBuffer, 100 ms of PCM16 LE (transferred)
//   {type: "vad", event, atMs, speechMs}   event "start" | "stop"
//   {type: "level", db, speaking} about every 50 ms, for the meter
//
// Mute: the VAD is stopped (a "stop" event if speech was under way, so the
// page can commit the turn), the partial frame is completed with silence and
// `muteTailFrames` frames of silence follow, so a server-side VAD also sees
// the turn end; then nothing is sent until unmuted.

import { FrameCutter } from "../lib/frame-cutter.js";
import { encodePcm16LE } from "../lib/pcm16.js";
import { Resampler } from "../lib/resampler.js";
import { EnergyVad } from "../lib/vad.js";

class RecorderProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.targetRate = o.targetRate || 24000;
    this.frameMs = o.frameMs || 100;
    this.muteTailFrames = o.muteTailFrames ?? 8;
    // `sampleRate` is the AudioWorkletGlobalScope's: the context's rate.
    this.resampler = new Resampler({ inRate: sampleRate, outRate: this.targetRate });
    this.cutter = new FrameCutter({ frameSize: FrameCutter.frameSizeFor(this.targetRate, this.frameMs) });
    this.vad = new EnergyVad({ sampleRate: this.targetRate, ...(o.vad || {}) });
    this.muted = Boolean(o.muted);
    this.mono = new Float32Array(128);
    this.levelEvery = Math.round(this.targetRate * 0.05);
    this.levelCount = 0;
    this.levelMax = -Infinity;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    switch (msg.type) {
      case "vad":
        this.vad.configure(msg.options);
        break;
      case "startOffsetDb":
        this.vad.machine.setStartOffsetDb(msg.db);
        break;
      case "mute":
        if (msg.muted && !this.muted) this.muteNow();
        this.muted = Boolean(msg.muted);
        break;
      default:
        break;
    }
  }

  muteNow() {
    const stop = this.vad.forceStop();
    // Complete the partial frame with silence, then a silent tail.
    const pending = this.cutter.pendingSamples;
    const frames = [];
    if (pending > 0) frames.push(...this.cutter.push(new Float32Array(this.cutter.frameSize - pending)));
    const silence = new Float32Array(this.cutter.frameSize);
    for (let i = 0; i < this.muteTailFrames; i++) frames.push(silence);
    for (const f of frames) this.postFrame(f);
    if (stop) this.port.postMessage({ type: "vad", event: stop.type, atMs: stop.atMs, speechMs: stop.speechMs });
    this.resampler.reset();
    this.cutter.reset();
    this.vad.reset();
    this.port.postMessage({ type: "level", db: -Infinity, speaking: false });
  }

  postFrame(frame) {
    const pcm = encodePcm16LE(frame);
    this.port.postMessage({ type: "frame", pcm }, [pcm]);
  }

  process(inputs) {
    const input = inputs[0];
    if (this.muted || !input || input.length === 0) return true;
    const n = input[0].length;
    if (this.mono.length !== n) this.mono = new Float32Array(n);
    const mono = this.mono;
    if (input.length === 1) {
      mono.set(input[0]);
    } else {
      mono.fill(0);
      for (const ch of input) for (let i = 0; i < n; i++) mono[i] += ch[i];
      const k = 1 / input.length;
      for (let i = 0; i < n; i++) mono[i] *= k;
    }
    const samples = this.resampler.process(mono);
    for (const frame of this.cutter.push(samples)) this.postFrame(frame);
    for (const ev of this.vad.process(samples)) {
      this.port.postMessage({ type: "vad", event: ev.type, atMs: ev.atMs, speechMs: ev.speechMs });
    }
    if (this.vad.lastLevelDb > this.levelMax) this.levelMax = this.vad.lastLevelDb;
    this.levelCount += samples.length;
    if (this.levelCount >= this.levelEvery) {
      this.port.postMessage({ type: "level", db: this.levelMax, speaking: this.vad.speaking });
      this.levelCount = 0;
      this.levelMax = -Infinity;
    }
    return true;
  }
}

registerProcessor("voice-recorder", RecorderProcessor);
