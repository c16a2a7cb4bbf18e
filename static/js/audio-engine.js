// The page's audio: one AudioContext, the recorder worklet (microphone) and
// the player worklet (assistant voice). Browser-only glue; the logic lives in
// lib/ and the worklet processors.

import { estimatePlayedMs } from "./lib/turns.js";

const RECORDER_URL = new URL("./worklets/recorder-processor.js", import.meta.url);
const PLAYER_URL = new URL("./worklets/player-processor.js", import.meta.url);
const MAX_EARLY_FRAMES = 50; // audio that arrives before the player is ready

export class MicError extends Error {
  /** @param {"insecure"|"denied"|"missing"|"busy"|"failed"} kind */
  constructor(kind, detail) {
    super(`${kind}: ${detail}`);
    this.kind = kind;
    this.detail = detail;
  }
}

function micErrorFrom(err) {
  const name = err && err.name;
  const detail = (err && (err.message || err.name)) || String(err);
  if (name === "NotAllowedError" || name === "SecurityError" || name === "PermissionDeniedError") {
    return new MicError("denied", detail);
  }
  if (name === "NotFoundError" || name === "OverconstrainedError" || name === "DevicesNotFoundError") {
    return new MicError("missing", detail);
  }
  if (name === "NotReadableError" || name === "AbortError" || name === "TrackStartError") {
    return new MicError("busy", detail);
  }
  return new MicError("failed", detail);
}

export class AudioEngine {
  /**
   * @param {object} handlers
   * @param {(pcm: ArrayBuffer) => void} handlers.onFrame  100 ms PCM16 LE at 24 kHz
   * @param {(ev: object) => void} handlers.onVad
   * @param {(db: number, speaking: boolean) => void} handlers.onLevel
   * @param {(stats: object) => void} handlers.onPlayerStats
   * @param {(state: string) => void} handlers.onContextState
   */
  constructor(handlers) {
    this.h = handlers;
    this.ctx = null;
    this.player = null;
    this.recorder = null;
    this.source = null;
    this.stream = null;
    this.muted = false;
    this.lastStats = null;
    this._early = [];
    this._ready = null;
    this._playerConfig = {};
    this._begins = 0; // "begin" messages posted to the player
  }

  /** Create the context and load the worklets (once). Safe to call without a gesture. */
  init() {
    if (!this._ready) this._ready = this._init();
    return this._ready;
  }

  async _init() {
    const Ctx = globalThis.AudioContext || globalThis.webkitAudioContext;
    if (!Ctx || !Ctx.prototype || !("audioWorklet" in Ctx.prototype)) {
      throw new MicError("failed", "AudioWorklet is not supported by this browser");
    }
    const ctx = new Ctx({ latencyHint: "interactive" });
    this.ctx = ctx;
    ctx.onstatechange = () => this.h.onContextState(ctx.state);
    await ctx.audioWorklet.addModule(RECORDER_URL);
    await ctx.audioWorklet.addModule(PLAYER_URL);
    const player = new AudioWorkletNode(ctx, "voice-player", {
      numberOfInputs: 0,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { inputRate: 24000, ...this._playerConfig },
    });
    player.port.onmessage = (e) => {
      if (e.data.type === "stats") {
        this.lastStats = e.data;
        this.h.onPlayerStats(e.data);
      }
    };
    player.connect(ctx.destination);
    this.player = player;
    for (const pcm of this._early.splice(0)) player.port.postMessage({ type: "audio", pcm }, [pcm]);
    this.h.onContextState(ctx.state);
  }

  get sampleRate() {
    return this.ctx ? this.ctx.sampleRate : null;
  }

  get suspended() {
    return !this.ctx || this.ctx.state !== "running";
  }

  /** Resume after a user gesture (autoplay policy). */
  async resume() {
    await this.init();
    if (this.ctx.state === "suspended") await this.ctx.resume();
  }

  /**
   * Open the microphone and start the recorder. Throws MicError.
   * @param {object} vadOptions VAD_DEFAULTS fields
   */
  async startMic(vadOptions) {
    if (this.recorder) return;
    const md = globalThis.navigator && navigator.mediaDevices;
    if (!md || !md.getUserMedia) {
      throw new MicError(globalThis.isSecureContext === false ? "insecure" : "failed", "no mediaDevices");
    }
    await this.resume();
    let stream;
    try {
      stream = await md.getUserMedia({
        audio: {
          channelCount: 1,
          echoCancellation: true, // the agent's voice must not barge in on itself
          noiseSuppression: true,
          autoGainControl: true,
        },
      });
    } catch (err) {
      throw micErrorFrom(err);
    }
    const ctx = this.ctx;
    const recorder = new AudioWorkletNode(ctx, "voice-recorder", {
      numberOfInputs: 1,
      numberOfOutputs: 1,
      outputChannelCount: [1],
      processorOptions: { targetRate: 24000, frameMs: 100, vad: vadOptions, muted: this.muted },
    });
    recorder.port.onmessage = (e) => {
      const m = e.data;
      if (m.type === "frame") this.h.onFrame(m.pcm);
      else if (m.type === "vad") this.h.onVad(m);
      else if (m.type === "level") this.h.onLevel(m.db, m.speaking);
    };
    const source = ctx.createMediaStreamSource(stream);
    source.connect(recorder);
    // The recorder writes silence; connecting it keeps it pulled by the graph.
    recorder.connect(ctx.destination);
    for (const t of stream.getAudioTracks()) t.enabled = !this.muted;
    this.stream = stream;
    this.source = source;
    this.recorder = recorder;
  }

  stopMic() {
    if (this.source) this.source.disconnect();
    if (this.recorder) {
      this.recorder.port.onmessage = null;
      this.recorder.disconnect();
    }
    if (this.stream) for (const t of this.stream.getTracks()) t.stop();
    this.source = this.recorder = this.stream = null;
  }

  get micOn() {
    return this.recorder !== null;
  }

  setMuted(muted) {
    this.muted = muted;
    if (this.recorder) this.recorder.port.postMessage({ type: "mute", muted });
    if (this.stream) for (const t of this.stream.getAudioTracks()) t.enabled = !muted;
  }

  configureVad(options) {
    if (this.recorder) this.recorder.port.postMessage({ type: "vad", options });
  }

  setStartOffsetDb(db) {
    if (this.recorder) this.recorder.port.postMessage({ type: "startOffsetDb", db });
  }

  /** Queue assistant audio (the buffer is transferred: do not reuse it). */
  playAudio(pcm) {
    if (!this.player) {
      if (this._early.length < MAX_EARLY_FRAMES) this._early.push(pcm);
      return;
    }
    this.player.port.postMessage({ type: "audio", pcm }, [pcm]);
  }

  beginResponse() {
    if (!this.player) return;
    this._begins++;
    this.player.port.postMessage({ type: "begin" });
  }

  endResponse() {
    this.player?.port.postMessage({ type: "end" });
  }

  /** Turn the agent's playback down (true) or back up (false), smoothly (lib/duck.js). */
  setDucked(ducked) {
    this._playerConfig.ducked = Boolean(ducked); // a player made later starts so
    this.player?.port.postMessage({ type: "duck", ducked: Boolean(ducked) });
  }

  clearPlayback() {
    this._early.length = 0;
    this.player?.port.postMessage({ type: "clear" });
    if (this.lastStats) this.lastStats = { ...this.lastStats, active: false, bufferedMs: 0, state: "buffering" };
  }

  configurePlayer(config) {
    Object.assign(this._playerConfig, config);
    this.player?.port.postMessage({ type: "config", ...config });
  }

  /**
   * ms heard so far of the newest response (the one the server would cut);
   * null if nothing is known. A response whose audio still waits behind an
   * older one's (or whose start the player has not seen yet) was not heard: 0.
   */
  playedMs() {
    const s = this.lastStats;
    if (!s || !this.ctx) return null;
    if (s.pendingStarts > 0 || s.begins < this._begins) return 0;
    const playing = s.state === "playing" && this.ctx.state === "running";
    // Audio rendered but still on its way to the speaker was not heard yet.
    const latencyMs = playing ? ((this.ctx.outputLatency || 0) + (this.ctx.baseLatency || 0)) * 1000 : 0;
    return estimatePlayedMs({
      playedMs: s.playedMs,
      bufferedMs: s.bufferedMs,
      playing,
      reportedAt: s.time,
      now: this.ctx.currentTime,
      latencyMs,
    });
  }
}
