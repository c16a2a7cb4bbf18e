// AudioWorklet processor "voice-player": assistant PCM16 (24 kHz by default)
// -> the context's rate -> jitter buffer -> speakers.
//
// Port messages, page -> worklet:
//   {type: "audio", pcm}      ArrayBuffer of PCM16 LE from the server (transferred)
//   {type: "begin"}           response.started: played time restarts there
//   {type: "end"}             response.done: play out the tail even if short
//   {type: "clear"}           interrupted / barge-in: drop all buffered audio now
//   {type: "config", inputRate?, startMs?, maxMs?, maxWaitMs?}
// worklet -> page:
//   {type: "stats", ...JitterBuffer.statistics(), active, begins, pendingStarts, time}
//     about every 50 ms while active, and at once on any change of `active`
//     or after clear; `time` is currentTime (s) when measured.

import { JitterBuffer } from "../lib/jitter-buffer.js";
import { Pcm16Decoder } from "../lib/pcm16.js";
import { Resampler } from "../lib/resampler.js";

class PlayerProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.inputRate = o.inputRate || 24000;
    this.decoder = new Pcm16Decoder();
    this.resampler = new Resampler({ inRate: this.inputRate, outRate: sampleRate });
    this.jb = new JitterBuffer({
      sampleRate,
      startMs: o.startMs ?? 150,
      maxMs: o.maxMs ?? 60000,
      maxWaitMs: o.maxWaitMs ?? 400,
    });
    this.statsEvery = Math.round(sampleRate * 0.05);
    this.sinceStats = 0;
    this.wasActive = false;
    this.port.onmessage = (e) => this.onMessage(e.data);
  }

  onMessage(msg) {
    switch (msg.type) {
      case "audio":
        this.jb.push(this.resampler.process(this.decoder.decode(msg.pcm)));
        break;
      case "begin":
        this.jb.beginResponse();
        break;
      case "end":
        this.jb.push(this.resampler.flush());
        this.decoder.reset();
        this.jb.endResponse();
        break;
      case "clear":
        this.jb.clear();
        this.resampler.reset();
        this.decoder.reset();
        this.postStats();
        break;
      case "config":
        if (msg.inputRate && msg.inputRate !== this.inputRate) {
          this.inputRate = msg.inputRate;
          this.resampler = new Resampler({ inRate: this.inputRate, outRate: sampleRate });
        }
        this.jb.configure({ startMs: msg.startMs, maxMs: msg.maxMs, maxWaitMs: msg.maxWaitMs });
        break;
      default:
        break;
    }
  }

  postStats() {
    const active = this.jb.active;
    this.wasActive = active;
    this.sinceStats = 0;
    const { begins, pendingStarts } = this.jb;
    this.port.postMessage({ type: "stats", ...this.jb.statistics(), active, begins, pendingStarts, time: currentTime });
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const first = out[0];
    this.jb.pull(first);
    for (let c = 1; c < out.length; c++) out[c].set(first);
    this.sinceStats += first.length;
    const active = this.jb.active;
    if (active !== this.wasActive || (active && this.sinceStats >= this.statsEvery)) this.postStats();
    return true;
  }
}

registerProcessor("voice-player", PlayerProcessor);
