// Ducking: the agent's playback is turned down while the user talks, so the
// user hears themselves over it, and turned back up when they stop. Pure
// module: the player worklet runs a GainRamp over each render quantum.
//
// Why a duck and not a stop: a speech onset is only a hint (a cough, a door,
// a "dạ" said over the agent is no barge-in). The server decides from the
// audio whether the user meant to cut in and then sends `interrupted`, which
// empties the player at once; until then the agent goes on, quieter.
//
// The gain moves linearly, sample by sample, from where it is to its target
// over `rampMs` (a full swing; a shorter one in proportion), so a change of
// target never steps the waveform: no click, even when the target flips back
// in the middle of a ramp.

export const DUCK_DEFAULTS = Object.freeze({
  gain: 0.25, // about -12 dB: the agent stays audible under the user
  rampMs: 50,
});

export class GainRamp {
  /**
   * @param {object} options
   * @param {number} options.sampleRate output rate, Hz
   * @param {number} [options.gain]   the ducked gain, 0..1
   * @param {number} [options.rampMs] time of a full swing between 1 and `gain`
   */
  constructor({ sampleRate, gain = DUCK_DEFAULTS.gain, rampMs = DUCK_DEFAULTS.rampMs } = {}) {
    if (!(sampleRate > 0)) throw new RangeError(`sampleRate must be > 0, got ${sampleRate}`);
    this.sampleRate = sampleRate;
    this.gain = 1; // now
    this.target = 1;
    this.ducked = false;
    this.configure({ gain, rampMs });
  }

  configure({ gain, rampMs }) {
    if (gain !== undefined) {
      if (!(gain >= 0 && gain <= 1)) throw new RangeError(`duck gain must be in 0..1, got ${gain}`);
      this.duckGain = gain;
    }
    if (rampMs !== undefined) {
      if (!(rampMs >= 0)) throw new RangeError(`bad ramp ${rampMs}`);
      this.rampMs = rampMs;
    }
    // Gain change per sample: a full swing takes rampMs (at once when 0 or no swing).
    const samples = (this.rampMs * this.sampleRate) / 1000;
    const swing = 1 - this.duckGain;
    this._step = samples > 0 && swing > 0 ? swing / samples : Infinity;
    this.target = this.ducked ? this.duckGain : 1;
  }

  /** Duck (true) or restore (false); the gain gets there over the ramp. */
  setDucked(ducked) {
    this.ducked = Boolean(ducked);
    this.target = this.ducked ? this.duckGain : 1;
  }

  /** True while the gain is still on its way to the target. */
  get moving() {
    return this.gain !== this.target;
  }

  /**
   * Scale `buf` in place by the ramping gain. Returns how many of its first
   * `real` samples (the audio, not underrun silence) were played below full
   * gain, for the player's figures.
   * @param {Float32Array} buf
   * @param {number} [real] samples of real audio at the start of buf
   */
  process(buf, real = buf.length) {
    let g = this.gain;
    const target = this.target;
    let low = 0;
    if (g === target) {
      if (g !== 1) {
        for (let i = 0; i < buf.length; i++) buf[i] *= g;
        low = real;
      }
      return low;
    }
    const step = target > g ? this._step : -this._step;
    for (let i = 0; i < buf.length; i++) {
      if (g !== target) {
        g += step;
        if ((step > 0 && g > target) || (step < 0 && g < target)) g = target;
      }
      buf[i] *= g;
      if (g < 1 && i < real) low++;
    }
    this.gain = g;
    return low;
  }
}
