// Turn-taking on the client: what to send when the client VAD hears speech
// start or stop, when the agent counts as speaking, when its playback is
// ducked, and the client-side time to first audio. Pure module: the page
// gives it a `send` function.
//
// A speech onset is a hint, not a barge-in: on each onset the page sends
// exactly one {"type":"client_vad_speech_start"} and ducks the agent's
// playback (lib/duck.js), whether or not the agent is speaking. The server
// decides from the audio that follows whether the user meant to cut in (a
// cough, a door, the agent's own echo or a "dạ" said over it does not) and
// then sends `interrupted`, on which the page empties its player at once.
// The page never stops the agent on its own VAD.
//
// The playback is ducked while the user talks: from the client VAD's start
// to its stop, and from the server's input.speech_started to its
// input.speech_stopped (either one is enough: the server hears what the
// page's energy VAD misses, and the other way round).
//
// The Interrupt button is the explicit barge-in: {"type":"interrupt",
// "played_ms":N} (how much of the response the user heard, so the server
// truncates the model's memory there); playback is cleared here at once and
// audio still in flight for the cut response is dropped until the server
// answers (`interrupted`) or a response begins or ends.

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
    this.userSpeaking = false; // by the client VAD
    this.serverHears = false; // between input.speech_started and input.speech_stopped
    this.interruptsSent = 0;
  }

  /** Duck the agent's playback: the user is talking, by either VAD. */
  get ducked() {
    return this.userSpeaking || this.serverHears;
  }

  /** input.speech_started (true) / input.speech_stopped (false), or the socket dropped. */
  onServerSpeech(started) {
    this.serverHears = Boolean(started);
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
   * The client VAD heard speech start: a hint to the server, and a duck here;
   * never a stop (see the top of this file).
   * @returns {{sent: object, clearPlayback: false}}
   */
  onSpeechStart() {
    this.userSpeaking = true;
    // What was heard of the agent so far: a barge-in the server confirms cuts there.
    const msg = clientVadSpeechStartMessage(this.agentSpeaking ? this._playedMs() : null);
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

  /** Barge in now: the Interrupt button. */
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
