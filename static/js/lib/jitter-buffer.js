// Playback jitter buffer for the player worklet. Pure module.
//
// Holds Float32 samples at the output rate in a queue of chunks (memory in
// proportion to what is buffered, bounded by maxMs). The player pulls a
// render quantum (128 samples) at a time.
//
// States:
//   buffering  waiting until startMs is buffered (or the response has ended,
//              or data has waited maxWaitMs); pulls give silence
//   playing    pulls give buffered audio; if it runs dry before the response
//              ended that is an underrun: the rest of the pull is silence and
//              the buffer goes back to buffering (rebuffers to startMs)
//
// Played-time accounting: `playedSamples` counts the samples of the current
// response that were actually pulled (silence from underruns is not counted).
// `beginResponse()` enqueues a marker: when playback reaches it, the count
// restarts at 0, so the tail of an earlier response still in the queue is
// not counted as the new one's; `pendingStarts` counts the markers not
// reached yet (responses that have not begun to play: none of them was heard).
// `clear()` (barge-in, `interrupted`) drops everything buffered at once.
//
// Adaptive prebuffer: each underrun raises the amount needed to (re)start by
// adaptStepMs, up to adaptMaxMs, so a stream that arrives just in time (the
// echo brain sends real-time audio in 200 ms chunks) settles at a buffer
// that covers its jitter. `targetMs` in the statistics shows where it is.
//
// Full buffer policy: a push beyond maxMs keeps what fits and drops the rest
// of the chunk (the newest audio), counted in `overflowSamples`. Dropping the
// newest keeps what the user hears continuous and keeps played-ms truthful.

export const JITTER_DEFAULTS = Object.freeze({
  startMs: 150,
  maxMs: 60000,
  maxWaitMs: 400,
  adaptStepMs: 50,
  adaptMaxMs: 400,
});

export const BUFFERING = "buffering";
export const PLAYING = "playing";

const MARKER = Symbol("response-start");

export class JitterBuffer {
  /**
   * @param {object} options
   * @param {number} options.sampleRate output rate, Hz
   * @param {number} [options.startMs]   buffered audio needed to start playing
   * @param {number} [options.maxMs]     bound on buffered audio
   * @param {number} [options.maxWaitMs] start anyway after waiting this long with data
   */
  constructor({ sampleRate, ...options } = {}) {
    if (!(sampleRate > 0)) throw new RangeError(`sampleRate must be > 0, got ${sampleRate}`);
    this.sampleRate = sampleRate;
    this.configure({ ...JITTER_DEFAULTS, ...options });
    this._queue = []; // Float32Array chunks and MARKERs
    this._head = 0; // read offset into the first chunk
    this.bufferedSamples = 0;
    this.state = BUFFERING;
    this.ended = false; // the current response sent its last audio
    this._waitedSamples = 0;
    this.playedSamples = 0; // of the current response
    this.begins = 0; // beginResponse() calls
    this.pendingStarts = 0; // response starts queued behind audio still to play
    this.totalPlayedSamples = 0;
    this.underruns = 0;
    this.overflowSamples = 0;
    this.clearedSamples = 0;
  }

  configure({ startMs, maxMs, maxWaitMs, adaptStepMs, adaptMaxMs }) {
    const next = {
      startSamples: startMs !== undefined ? this._ms2s(startMs) : this.startSamples,
      maxSamples: maxMs !== undefined ? this._ms2s(maxMs) : this.maxSamples,
      maxWaitSamples: maxWaitMs !== undefined ? this._ms2s(maxWaitMs) : this.maxWaitSamples,
      adaptStepSamples: adaptStepMs !== undefined ? this._ms2s(adaptStepMs) : this.adaptStepSamples,
      adaptMaxSamples: adaptMaxMs !== undefined ? this._ms2s(adaptMaxMs) : this.adaptMaxSamples,
    };
    if (next.maxSamples < Math.max(next.startSamples, next.adaptMaxSamples)) {
      throw new RangeError("maxMs must be at least startMs and adaptMaxMs");
    }
    Object.assign(this, next);
    // A new start setting restarts the adaptation from it.
    if (startMs !== undefined || this.targetSamples === undefined) this.targetSamples = this.startSamples;
  }

  /** Buffered audio needed to start now (startMs raised by underruns). */
  get targetMs() {
    return this._s2ms(this.targetSamples);
  }

  _ms2s(ms) {
    if (typeof ms !== "number" || !(ms >= 0)) throw new RangeError(`bad duration ${ms}`);
    return Math.round((ms * this.sampleRate) / 1000);
  }

  _s2ms(samples) {
    return (samples * 1000) / this.sampleRate;
  }

  get bufferedMs() {
    return this._s2ms(this.bufferedSamples);
  }

  get playedMs() {
    return this._s2ms(this.playedSamples);
  }

  /** True while there is audio to play or playing is under way. */
  get active() {
    return this.bufferedSamples > 0 || this.state === PLAYING;
  }

  /**
   * Append audio. Returns the number of samples accepted (less than given
   * when the buffer is full).
   * @param {Float32Array} samples
   */
  push(samples) {
    const room = this.maxSamples - this.bufferedSamples;
    let chunk = samples;
    if (chunk.length > room) {
      this.overflowSamples += chunk.length - Math.max(0, room);
      chunk = chunk.subarray(0, Math.max(0, room));
    }
    if (chunk.length === 0) return 0;
    this._queue.push(chunk);
    this.bufferedSamples += chunk.length;
    return chunk.length;
  }

  /** A new response begins: played time restarts when playback reaches here. */
  beginResponse() {
    this.ended = false;
    this.begins++;
    if (this.bufferedSamples === 0) {
      // Nothing of the old response left: restart now.
      this._queue.length = 0;
      this._head = 0;
      this.playedSamples = 0;
      this.pendingStarts = 0;
    } else {
      this._queue.push(MARKER);
      this.pendingStarts++;
    }
  }

  /** The response sent its last audio: play out what is left even if short. */
  endResponse() {
    this.ended = true;
  }

  /** Drop everything buffered now. Returns the number of samples dropped. */
  clear() {
    const dropped = this.bufferedSamples;
    this._queue.length = 0;
    this._head = 0;
    this.bufferedSamples = 0;
    this.pendingStarts = 0;
    this.clearedSamples += dropped;
    this.state = BUFFERING;
    this.ended = false;
    this._waitedSamples = 0;
    this.playedSamples = 0;
    return dropped;
  }

  /**
   * Fill `out` with audio (or silence). Returns the number of real samples
   * written; the rest of `out` is zeros.
   * @param {Float32Array} out
   */
  pull(out) {
    const want = out.length;
    if (this.state === BUFFERING) {
      const ready =
        this.bufferedSamples > 0 &&
        (this.bufferedSamples >= this.targetSamples ||
          this.ended ||
          this._waitedSamples >= this.maxWaitSamples);
      if (!ready) {
        if (this.bufferedSamples > 0) this._waitedSamples += want;
        this._skipMarkers();
        out.fill(0);
        return 0;
      }
      this.state = PLAYING;
      this._waitedSamples = 0;
    }
    let written = 0;
    while (written < want) {
      this._skipMarkers();
      if (this._queue.length === 0) break;
      const chunk = this._queue[0];
      const take = Math.min(want - written, chunk.length - this._head);
      out.set(chunk.subarray(this._head, this._head + take), written);
      written += take;
      this.playedSamples += take;
      this._head += take;
      if (this._head === chunk.length) {
        this._queue.shift();
        this._head = 0;
      }
    }
    this._skipMarkers();
    this.bufferedSamples -= written;
    this.totalPlayedSamples += written;
    if (written < want) {
      out.fill(0, written);
      if (!this.ended) {
        this.underruns++;
        const raised = this.targetSamples + this.adaptStepSamples;
        this.targetSamples = Math.max(this.targetSamples, Math.min(raised, this.adaptMaxSamples));
      }
      this.state = BUFFERING;
      this._waitedSamples = 0;
      this.ended = false;
    }
    return written;
  }

  // Markers at the head of the queue take effect once playback reaches them.
  _skipMarkers() {
    while (this._queue.length > 0 && this._queue[0] === MARKER) {
      this._queue.shift();
      this._head = 0;
      this.playedSamples = 0;
      this.pendingStarts--;
    }
  }

  /** A frozen snapshot of the figures, for stats messages and tests. */
  statistics() {
    return Object.freeze({
      state: this.state,
      bufferedMs: this.bufferedMs,
      playedMs: this.playedMs,
      targetMs: this.targetMs,
      totalPlayedMs: this._s2ms(this.totalPlayedSamples),
      underruns: this.underruns,
      overflowMs: this._s2ms(this.overflowSamples),
      clearedMs: this._s2ms(this.clearedSamples),
    });
  }
}
