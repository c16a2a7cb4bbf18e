// Energy-based voice activity detection with hysteresis. Pure module.
//
// Two layers:
//   VadStateMachine  fed one level (dBFS) per analysis window; decides.
//   EnergyVad        cuts audio into windows, measures RMS level, feeds the
//                    state machine; what the recorder worklet uses.
//
// States:
//   silence  --level >= startDb-->                        onset
//   onset    --level >= stopDb, for minSpeechMs in all-->  speech  (emits "start")
//   onset    --level <  stopDb-->                         silence (a click, not speech)
//   speech   --level <  stopDb-->                         speech, counting quiet time
//   speech   --quiet for hangoverMs-->                    silence (emits "stop")
//   speech   --level >= stopDb-->                         quiet time back to 0
//
// Two thresholds (start above stop) are the hysteresis: speech must be loud
// to begin, and only ends when it falls clearly below that. minSpeechMs keeps
// coughs and clicks from starting a turn (and from barging in); hangoverMs
// bridges the pauses between words. `startOffsetDb` raises the start
// threshold for a while, e.g. while the agent's voice is playing, so that
// residual echo does not count as the user barging in.

export const VAD_DEFAULTS = Object.freeze({
  startDb: -45,
  stopDb: -55,
  hangoverMs: 600,
  minSpeechMs: 150,
  windowMs: 20,
});

export const SILENCE = "silence";
export const ONSET = "onset";
export const SPEECH = "speech";

/** RMS level of a block in dBFS (full scale sine is -3 dB); -Infinity for silence. */
export function rmsDb(samples, start = 0, end = samples.length) {
  const n = end - start;
  if (n <= 0) return -Infinity;
  let sum = 0;
  for (let i = start; i < end; i++) sum += samples[i] * samples[i];
  const rms = Math.sqrt(sum / n);
  return rms > 0 ? 20 * Math.log10(rms) : -Infinity;
}

export class VadStateMachine {
  constructor(options = {}) {
    this.configure({ ...VAD_DEFAULTS, ...options });
    this.startOffsetDb = 0;
    this.reset();
  }

  /** Change thresholds or timings; the current state is kept. */
  configure(options) {
    const o = { ...this.options, ...options };
    for (const key of ["startDb", "stopDb", "hangoverMs", "minSpeechMs"]) {
      if (typeof o[key] !== "number" || Number.isNaN(o[key])) {
        throw new RangeError(`${key} must be a number, got ${o[key]}`);
      }
    }
    if (o.stopDb > o.startDb) {
      throw new RangeError(`stopDb (${o.stopDb}) must not exceed startDb (${o.startDb})`);
    }
    if (o.hangoverMs < 0 || o.minSpeechMs < 0) {
      throw new RangeError("hangoverMs and minSpeechMs must be >= 0");
    }
    this.options = o;
  }

  /** Raise (or lower) the start threshold by `db`, e.g. while the agent speaks. */
  setStartOffsetDb(db) {
    this.startOffsetDb = db;
  }

  reset() {
    this.state = SILENCE;
    this._onsetMs = 0; // time spent in onset
    this._quietMs = 0; // quiet time inside speech
    this._speechMs = 0; // length of the current speech segment
  }

  get speaking() {
    return this.state === SPEECH;
  }

  /**
   * Feed one window's level. Returns "start", "stop" or null.
   * @param {number} levelDb dBFS of the window
   * @param {number} durationMs length of the window
   */
  update(levelDb, durationMs) {
    const { stopDb, hangoverMs, minSpeechMs } = this.options;
    const startDb = this.options.startDb + this.startOffsetDb;
    switch (this.state) {
      case SILENCE:
        if (levelDb >= startDb) {
          this.state = ONSET;
          this._onsetMs = 0;
          return this._onset(durationMs, minSpeechMs);
        }
        return null;
      case ONSET:
        if (levelDb >= stopDb) return this._onset(durationMs, minSpeechMs);
        this.state = SILENCE;
        this._onsetMs = 0;
        return null;
      case SPEECH:
        this._speechMs += durationMs;
        if (levelDb >= stopDb) {
          this._quietMs = 0;
          return null;
        }
        this._quietMs += durationMs;
        if (this._quietMs >= hangoverMs) {
          this.state = SILENCE;
          this._quietMs = 0;
          return "stop";
        }
        return null;
      default:
        throw new Error(`bad VAD state ${this.state}`);
    }
  }

  _onset(durationMs, minSpeechMs) {
    this._onsetMs += durationMs;
    if (this._onsetMs >= minSpeechMs) {
      this.state = SPEECH;
      this._speechMs = this._onsetMs;
      this._quietMs = 0;
      this._onsetMs = 0;
      return "start";
    }
    return null;
  }

  /** Length of the current (or just ended) speech segment, ms, hangover included. */
  get speechMs() {
    return this._speechMs;
  }

  /**
   * End speech now (e.g. the microphone was muted mid-sentence).
   * Returns "stop" if speech was in progress, else null.
   */
  forceStop() {
    const was = this.state === SPEECH;
    this.state = SILENCE;
    this._onsetMs = 0;
    this._quietMs = 0;
    return was ? "stop" : null;
  }
}

export class EnergyVad {
  /**
   * @param {object} options VAD_DEFAULTS fields, plus sampleRate (Hz)
   */
  constructor({ sampleRate, ...options } = {}) {
    if (!(sampleRate > 0)) throw new RangeError(`sampleRate must be > 0, got ${sampleRate}`);
    this.sampleRate = sampleRate;
    this.machine = new VadStateMachine(options);
    this._setWindow(this.machine.options.windowMs);
    this._samplesSeen = 0;
    this.lastLevelDb = -Infinity;
  }

  _setWindow(windowMs) {
    this.windowMs = windowMs;
    this.windowSize = Math.max(1, Math.round((this.sampleRate * windowMs) / 1000));
    this._acc = 0; // sum of squares in the open window
    this._fill = 0;
  }

  configure(options) {
    this.machine.configure(options);
    if (options.windowMs !== undefined && options.windowMs !== this.windowMs) {
      this._setWindow(options.windowMs);
    }
  }

  get state() {
    return this.machine.state;
  }

  get speaking() {
    return this.machine.speaking;
  }

  /**
   * Feed samples. Returns the events decided by them, in order:
   * {type: "start"|"stop", atMs, speechMs}; atMs is stream time at the end
   * of the window that decided it.
   * @param {Float32Array} samples
   */
  process(samples) {
    const events = [];
    const size = this.windowSize;
    const winMs = (size * 1000) / this.sampleRate;
    for (let i = 0; i < samples.length; i++) {
      const s = samples[i];
      this._acc += s * s;
      this._fill++;
      if (this._fill === size) {
        const rms = Math.sqrt(this._acc / size);
        const db = rms > 0 ? 20 * Math.log10(rms) : -Infinity;
        this.lastLevelDb = db;
        this._acc = 0;
        this._fill = 0;
        const ev = this.machine.update(db, winMs);
        if (ev) {
          const atMs = ((this._samplesSeen + i + 1) * 1000) / this.sampleRate;
          events.push({ type: ev, atMs, speechMs: this.machine.speechMs });
        }
      }
    }
    this._samplesSeen += samples.length;
    return events;
  }

  /** Stop now; returns a stop event if speech was in progress. */
  forceStop() {
    this._acc = 0;
    this._fill = 0;
    const ev = this.machine.forceStop();
    if (!ev) return null;
    return {
      type: ev,
      atMs: (this._samplesSeen * 1000) / this.sampleRate,
      speechMs: this.machine.speechMs,
    };
  }

  reset() {
    this.machine.reset();
    this._acc = 0;
    this._fill = 0;
  }
}
