// Turn-taking on the client: what to send when the client VAD hears speech
// start or stop, when the agent counts as speaking, and the client-side time
// to first audio. Pure module: the page gives it a `send` function.
//
// Barge-in choice: on each speech onset the page sends exactly ONE message.
//   - agent speaking (a response is under way, or its audio is still
//     playing here): {"type":"interrupt","played_ms":N}. It carries how much
//     of the response the user heard, which client_vad_speech_start cannot,
//     so the server can truncate the model's memory at that point. Playback
//     is cleared here at once, and audio still in flight for the cut
//     response is dropped until the server answers (`interrupted`) or a
//     response begins or ends.
//   - otherwise: {"type":"client_vad_speech_start"}, which tells the server
//     the user started talking (harmless when nothing is playing).
// One message per onset means the server never sees two barge-ins for one.

import {
  clientVadSpeechStartMessage,
  commitAudioMessage,
  interruptMessage,
} from "./protocol.js";

export class TurnController {
  /**
   * @param {object} options
   * @param {(msg: object) => boolean|void} options.send  sends a JSON message
   * @param {() => number|null} [options.playedMs] ms of the current response played
   * @param {boolean} [options.clientCommits=false] send commit_audio at speech end
   */
  constructor({ send, playedMs = () => null, clientCommits = false }) {
    this._send = send;
    this._playedMs = playedMs;
    this.clientCommits = clientCommits;
    this.responseId = null; // response under way, by server events
    this.playerActive = false; // audio buffered or playing here
    this.suppressAudio = false; // after a local barge-in, until the server catches up
    this.userSpeaking = false;
    this.interruptsSent = 0;
  }

  get agentSpeaking() {
    return this.responseId !== null || this.playerActive;
  }

  onResponseStarted(responseId) {
    this.responseId = responseId ?? "?";
    this.suppressAudio = false;
  }

  onResponseDone(responseId) {
    if (responseId === undefined || responseId === this.responseId || this.responseId === "?") {
      this.responseId = null;
    }
    this.suppressAudio = false;
  }

  onInterrupted(responseId) {
    this.onResponseDone(responseId);
  }

  onPlayerActive(active) {
    this.playerActive = Boolean(active);
  }

  /** Should a binary audio frame from the server be played? */
  acceptAudio() {
    return !this.suppressAudio;
  }

  /**
   * The client VAD heard speech start.
   * @returns {{sent: object, clearPlayback: boolean}}
   */
  onSpeechStart() {
    this.userSpeaking = true;
    if (this.agentSpeaking) return this.interrupt();
    const msg = clientVadSpeechStartMessage();
    this._send(msg);
    return { sent: msg, clearPlayback: false };
  }

  /**
   * The client VAD heard speech end.
   * @returns {{sent: object|null}}
   */
  onSpeechStop() {
    const wasSpeaking = this.userSpeaking;
    this.userSpeaking = false;
    if (this.clientCommits && wasSpeaking) {
      const msg = commitAudioMessage();
      this._send(msg);
      return { sent: msg };
    }
    return { sent: null };
  }

  /** Barge in now (VAD onset while the agent speaks, or the Interrupt button). */
  interrupt() {
    const msg = interruptMessage(this._playedMs());
    this._send(msg);
    this.interruptsSent++;
    this.suppressAudio = true;
    this.playerActive = false;
    return { sent: msg, clearPlayback: true };
  }
}

/**
 * Client-side time to first audio: from the end of the user's turn to the
 * first binary audio frame that follows. A turn is ended by the client (text
 * sent, commit_audio sent: `restart` true, a new turn for sure, so an older
 * mark that never got audio is replaced) or by the server's
 * input.speech_stopped (`restart` false: it may be the same turn the client
 * just committed, so the earlier mark stands).
 */
export class TurnTimer {
  constructor() {
    this._t0 = null;
    this._answered = false; // a response started since the mark
    this.last = null; // ms
    this.count = 0;
    this._sum = 0;
  }

  get pending() {
    return this._t0 !== null;
  }

  get mean() {
    return this.count ? this._sum / this.count : null;
  }

  /**
   * The user's turn ended at `now` (ms).
   * @param {number} now
   * @param {{restart?: boolean}} [options] restart: replace a pending mark
   */
  markTurnEnd(now, { restart = false } = {}) {
    if (restart || this._t0 === null) {
      this._t0 = now;
      this._answered = false;
    }
  }

  /** The user started speaking again: the measurement is void. */
  cancel() {
    this._t0 = null;
  }

  /** response.started: a response to the pending turn is under way. */
  onResponseStarted() {
    if (this._t0 !== null) this._answered = true;
  }

  /**
   * response.done: if the response that answered the pending turn ended with
   * no audio (a text-only answer), there is nothing to measure; a later
   * response's audio (e.g. the echo brain's) must not count for this turn.
   */
  onResponseDone() {
    if (this._t0 !== null && this._answered) this._t0 = null;
  }

  /** Audio arrived at `now`; returns the ms measured, or null. */
  onAudio(now) {
    if (this._t0 === null) return null;
    const ms = Math.max(0, now - this._t0);
    this._t0 = null;
    this.last = ms;
    this.count++;
    this._sum += ms;
    return ms;
  }
}

/**
 * How much of the current response has been heard, from the player's last
 * report: extrapolated by the time since, while playing, never past what was
 * buffered, less the output latency (audio rendered but not yet out of the
 * speaker), never below 0. Times in seconds (AudioContext.currentTime), ms
 * figures in ms.
 */
export function estimatePlayedMs({ playedMs, bufferedMs = 0, playing, reportedAt, now, latencyMs = 0 }) {
  let ms = playedMs;
  if (playing && Number.isFinite(reportedAt) && Number.isFinite(now) && now > reportedAt) {
    ms += Math.min((now - reportedAt) * 1000, bufferedMs);
  }
  return Math.max(0, Math.round(ms - latencyMs));
}
