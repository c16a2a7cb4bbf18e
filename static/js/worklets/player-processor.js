// AudioWorklet processor "voice-player": assistant PCM16 (24 kHz by default)
// -> the context's rate -> jitter buffer -> speakers.
//
// Port messages, page -> worklet:
//   {type: "audio", pcm}      ArrayBuffer of PCM16 LE from the server (transferred)
//   {type: "begin"}           response.started: played time restarts there
//   {type: "end"}             response.done: play out the tail even if short
//   {type: "clear"}           interrupted / barge-in: drop all buffered audio now
//                             (what was playing fades out over its next 5 ms
//                             rather than stopping mid-wave: no click)
//   {type: "duck", ducked}    the user talks (true) or stopped (false): the
//                             output gain ramps down or back up (lib/duck.js)
//   {type: "config", inputRate?, startMs?, maxMs?, maxWaitMs?, duckGain?, duckMs?}
// worklet -> page:
//   {type: "stats", ...JitterBuffer.statistics(), active, begins, pendingStarts,
//    gain, ducked, duckedMs, time}
//     about every 50 ms while active or the gain moves, and at once on any
//     change of `active`, after clear and on duck; `gain` is the output gain
//     now, `duckedMs` the audio played below full gain in all; `time` is
//     currentTime (s) when measured.

import { GainRamp } from "../lib/duck.js";
import { JitterBuffer, PLAYING } from "../lib/jitter-buffer.js";
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
    this.ramp = new GainRamp({ sampleRate, gain: o.duckGain, rampMs: o.duckMs });
    if (o.ducked) this.ramp.setDucked(true);
    this.duckedSamples = 0; // audio played below full gain
    this.fadeSamples = Math.round(sampleRate * 0.005);
    this.fade = null; // after clear: the last few ms, fading out, still to play
    this.fadeAt = 0;
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
        this.fadeOut();
        this.jb.clear();
        this.resampler.reset();
        this.decoder.reset();
        this.postStats();
        break;
      case "duck":
        this.ramp.setDucked(msg.ducked);
        this.postStats();
        break;
      case "config":
        if (msg.inputRate && msg.inputRate !== this.inputRate) {
          this.inputRate = msg.inputRate;
          this.resampler = new Resampler({ inRate: this.inputRate, outRate: sampleRate });
        }
        this.jb.configure({ startMs: msg.startMs, maxMs: msg.maxMs, maxWaitMs: msg.maxWaitMs });
        this.ramp.configure({ gain: msg.duckGain, rampMs: msg.duckMs });
        break;
      default:
        break;
    }
  }

  // Keep the next few ms of what is playing, faded linearly to 0, to play
  // before the silence: a cut in mid-wave would click.
  fadeOut() {
    const n = this.jb.state === PLAYING ? Math.min(this.fadeSamples, this.jb.bufferedSamples) : 0;
    if (n === 0) return;
    const tail = new Float32Array(n);
    this.jb.pull(tail); // exactly what is buffered at most: no underrun
    for (let i = 0; i < n; i++) tail[i] *= (n - i) / (n + 1);
    this.fade = tail;
    this.fadeAt = 0;
  }

  postStats() {
    const active = this.jb.active;
    this.wasActive = active;
    this.sinceStats = 0;
    const { begins, pendingStarts } = this.jb;
    const { gain, ducked } = this.ramp;
    const duckedMs = (this.duckedSamples * 1000) / sampleRate;
    this.port.postMessage({
      type: "stats",
      ...this.jb.statistics(),
      active,
      begins,
      pendingStarts,
      gain,
      ducked,
      duckedMs,
      time: currentTime,
    });
  }

  process(inputs, outputs) {
    const out = outputs[0];
    const first = out[0];
    let real;
    if (this.fade) {
      const k = Math.min(first.length, this.fade.length - this.fadeAt);
      first.set(this.fade.subarray(this.fadeAt, this.fadeAt + k));
      this.fadeAt += k;
      if (this.fadeAt === this.fade.length) this.fade = null;
      real = k + this.jb.pull(first.subarray(k));
    } else {
      real = this.jb.pull(first);
    }
    const moving = this.ramp.moving;
    this.duckedSamples += this.ramp.process(first, real);
    for (let c = 1; c < out.length; c++) out[c].set(first);
    this.sinceStats += first.length;
    const active = this.jb.active;
    const due = (active || moving) && this.sinceStats >= this.statsEvery;
    if (active !== this.wasActive || due) this.postStats();
    return true;
  }
}

registerProcessor("voice-player", PlayerProcessor);
