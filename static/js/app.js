// The demo page: wires the socket, the audio engine and the pure logic
// modules to the DOM. Protocol decisions live in lib/turns.js and
// lib/protocol.js; this file only routes events and renders.
//
// What the page sends, and when (DESIGN.md section 2):
//   binary 100 ms PCM16 LE @ 24 kHz  every frame from the recorder, once
//                                    session.ready has arrived (or the JSON
//                                    {"type":"audio"} form when chosen)
//   session.config                   after session.ready, only if the room's
//                                    input_sample_rate is not 24000
//   client_vad_speech_start          each client VAD onset (a hint: the
//                                    server decides whether it cuts the
//                                    agent; the page only ducks it)
//   interrupt {played_ms}            the Interrupt button
//   commit_audio                     client VAD end of speech, when "browser
//                                    commits turns" is on
//   text                             the text box
//   ping                             every 20 s (lib/connection.js)

import { AudioEngine, MicError } from "./audio-engine.js";
import { DEFAULT_LANG, applyI18n, otherLang, translator } from "./i18n.js";
import { VoiceSocket } from "./lib/connection.js";
import { formatFigure, formatMs, numericFields, stageRows } from "./lib/metrics.js";
import { bytesToInt16 } from "./lib/pcm16.js";
import {
  INPUT_SAMPLE_RATE,
  audioMessage,
  configForReady,
  isValidSessionId,
  newSessionId,
  socketUrl,
  withToken,
  textMessage,
} from "./lib/protocol.js";
import { Transcript } from "./lib/transcript.js";
import { TurnController, TurnTimer } from "./lib/turns.js";
import { VAD_DEFAULTS } from "./lib/vad.js";

const SESSION_KEY = "voice-trio.session";
const SETTINGS_KEY = "voice-trio.settings";
const LANG_KEY = "voice-trio.lang";
const MAX_SOCKET_BUFFERED = 256 * 1024; // bytes queued in the socket before frames are dropped
const MAX_LOG = 200;
const QUIET_LOG_TYPES = new Set(["response.text.delta", "metrics", "pong", "ping"]);

const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- settings

const DEFAULT_SETTINGS = {
  clientCommits: false,
  jsonAudio: false,
  vadStart: VAD_DEFAULTS.startDb,
  vadStop: VAD_DEFAULTS.stopDb,
  hangover: VAD_DEFAULTS.hangoverMs,
  minSpeech: VAD_DEFAULTS.minSpeechMs,
  bargeInBoost: 6,
  jitterStart: 150,
};

function loadJson(storage, key, fallback) {
  try {
    const raw = storage.getItem(key);
    return raw ? { ...fallback, ...JSON.parse(raw) } : { ...fallback };
  } catch {
    return { ...fallback };
  }
}

const settings = loadJson(localStorage, SETTINGS_KEY, DEFAULT_SETTINGS);

function saveSettings() {
  localStorage.setItem(SETTINGS_KEY, JSON.stringify(settings));
}

function vadOptions() {
  return {
    startDb: settings.vadStart,
    stopDb: Math.min(settings.vadStop, settings.vadStart),
    hangoverMs: Math.max(100, settings.hangover), // >= one frame: see lib/vad.js
    minSpeechMs: settings.minSpeech,
  };
}

// ---------------------------------------------------------------- language

let lang = localStorage.getItem(LANG_KEY) || DEFAULT_LANG;
let t = translator(lang);

function setLang(next) {
  lang = next;
  t = translator(lang);
  localStorage.setItem(LANG_KEY, lang);
  document.documentElement.lang = lang;
  renderAll();
}

// ---------------------------------------------------------------- session id

function initialSessionId() {
  const fromUrl = new URLSearchParams(location.search).get("session");
  if (isValidSessionId(fromUrl)) return fromUrl;
  const stored = sessionStorage.getItem(SESSION_KEY);
  if (isValidSessionId(stored)) return stored;
  return newSessionId();
}

let sessionId = initialSessionId();
sessionStorage.setItem(SESSION_KEY, sessionId);

// The room token given to the page (`/?session=ID&token=...`), bound to that session.
const roomToken = new URLSearchParams(location.search).get("token");

function wsUrl(id) {
  const override = new URLSearchParams(location.search).get("ws");
  const token = id === sessionIdFromUrl() ? roomToken : null;
  if (override) return withToken(`${override.replace(/\/+$/, "")}/ws/${encodeURIComponent(id)}`, token);
  if (location.protocol === "file:") return withToken(`ws://127.0.0.1:8000/ws/${encodeURIComponent(id)}`, token);
  return socketUrl(location, id, token);
}

function sessionIdFromUrl() {
  return new URLSearchParams(location.search).get("session");
}

// ---------------------------------------------------------------- state

const ui = {
  connState: "idle",
  sessionReady: false,
  room: null,
  youSpeaking: false,
  serverHears: false,
  agentSpeaking: false,
  ducked: false,
  serverMetrics: [],
  stages: null, // rows of the last spoken reply's stages_ms (lib/metrics.js)
  stagesOf: null, // its response_id
  banners: new Map(), // id -> {key, params, kind}
};

const counters = {
  framesSent: 0,
  framesDropped: 0,
  audioDropped: 0,
};

const transcript = new Transcript();
const timer = new TurnTimer();
let socket = null;

const engine = new AudioEngine({
  onFrame: sendFrame,
  onVad: onVadEvent,
  onLevel: renderLevel,
  onPlayerStats: onPlayerStats,
  onContextState: (state) => {
    if (state === "running") hideBanner("sound");
  },
});

const turns = new TurnController({
  send: (msg) => sendJson(msg),
  playedMs: () => engine.playedMs(),
  clientCommits: settings.clientCommits,
});

// ---------------------------------------------------------------- sending

function sendJson(msg) {
  if (!socket || !socket.sendJson(msg)) return false;
  if (!QUIET_LOG_TYPES.has(msg.type)) logEvent("out", msg);
  return true;
}

function sendFrame(pcm) {
  if (!socket || !ui.sessionReady || !socket.isOpen || socket.bufferedAmount > MAX_SOCKET_BUFFERED) {
    counters.framesDropped++;
    return;
  }
  const ok = settings.jsonAudio ? socket.sendJson(audioMessage(bytesToInt16(pcm))) : socket.sendBinary(pcm);
  if (ok) counters.framesSent++;
  else counters.framesDropped++;
}

function onVadEvent(ev) {
  if (ev.event === "start") {
    ui.youSpeaking = true;
    timer.cancel();
    // A hint to the server and a duck here; the agent stops only on `interrupted`.
    if (ui.sessionReady) turns.onSpeechStart();
  } else if (ev.event === "stop") {
    ui.youSpeaking = false;
    const r = turns.onSpeechStop();
    if (r.sent) timer.markTurnEnd(performance.now(), { restart: true });
  }
  refreshDuck();
  refreshAgentState();
  renderIndicators();
}

// The agent's playback is turned down while the user talks (either VAD).
function refreshDuck() {
  if (turns.ducked !== ui.ducked) {
    ui.ducked = turns.ducked;
    engine.setDucked(ui.ducked);
  }
}

// ---------------------------------------------------------------- receiving

function onServerEvent(ev) {
  if (!QUIET_LOG_TYPES.has(ev.type)) logEvent("in", ev);
  for (const entry of transcript.apply(ev)) renderEntry(entry);
  switch (ev.type) {
    case "session.ready": {
      ui.sessionReady = true;
      ui.room = ev;
      const config = configForReady(ev, INPUT_SAMPLE_RATE);
      if (config) sendJson(config);
      if (Number.isInteger(ev.output_sample_rate)) engine.configurePlayer({ inputRate: ev.output_sample_rate });
      hideBanner("socket");
      break;
    }
    case "input.speech_started":
      ui.serverHears = true;
      turns.onServerSpeech(true);
      timer.cancel();
      break;
    case "input.speech_stopped":
      ui.serverHears = false;
      turns.onServerSpeech(false);
      timer.markTurnEnd(performance.now());
      break;
    case "response.started":
      turns.onResponseStarted(ev.response_id);
      timer.onResponseStarted();
      engine.beginResponse();
      break;
    case "response.done": {
      turns.onResponseDone(ev.response_id);
      timer.onResponseDone();
      engine.endResponse();
      // A spoken reply's stage timings; other responses carry none and leave the last.
      const rows = stageRows(ev.stages_ms);
      if (rows) {
        ui.stages = rows;
        ui.stagesOf = ev.response_id ?? null;
      }
      break;
    }
    case "interrupted":
      // The server decided the user cut in: what is buffered here goes at once.
      engine.clearPlayback();
      turns.onInterrupted(ev.response_id);
      break;
    case "metrics":
      ui.serverMetrics = numericFields(ev);
      break;
    case "error":
      if (ev.fatal === true) {
        showBanner("fatal", "msg.serverError", { code: ev.code, message: ev.message }, "error");
      }
      break;
    default:
      break;
  }
  refreshDuck();
  refreshAgentState();
  renderStatus();
}

function onServerAudio(data) {
  if (!turns.acceptAudio()) {
    counters.audioDropped++;
    return;
  }
  const ttfa = timer.onAudio(performance.now());
  if (ttfa !== null) renderClientMetrics();
  engine.playAudio(data);
  if (engine.suspended) showBanner("sound", "msg.soundBlocked", {}, "warn");
}

function onPlayerStats(stats) {
  turns.onPlayerActive(stats.active);
  refreshAgentState();
}

function refreshAgentState() {
  const speaking = turns.agentSpeaking;
  if (speaking !== ui.agentSpeaking) {
    ui.agentSpeaking = speaking;
    engine.setStartOffsetDb(speaking ? settings.bargeInBoost : 0);
    renderIndicators();
  }
}

// ---------------------------------------------------------------- socket

function onSocketState(state, info) {
  ui.connState = state;
  if (state !== "open") ui.sessionReady = false;
  if (state === "waiting") {
    // The room is gone with its responses; a new one starts on reconnect.
    // Audio already here plays out; what was streaming is closed as it stands.
    turns.onResponseDone(undefined);
    engine.endResponse();
    timer.cancel();
    for (const entry of transcript.closeOpen()) renderEntry(entry);
    ui.serverHears = false;
    turns.onServerSpeech(false);
    const reason = info.reason ? `, ${info.reason}` : "";
    showBanner(
      "socket",
      "msg.socketDropped",
      { code: info.code ?? "?", reason, seconds: (info.delayMs / 1000).toFixed(1) },
      "error",
    );
    logEvent("err", { type: "socket.closed", code: info.code, reason: info.reason, retry_ms: info.delayMs });
  } else if (state === "open") {
    hideBanner("fatal");
    if (info.reconnect) logEvent("in", { type: "socket.reconnected" });
  } else if (state === "closed") {
    hideBanner("socket");
  }
  refreshDuck();
  refreshAgentState();
  renderStatus();
}

function openSocket() {
  if (!("WebSocket" in globalThis)) {
    showBanner("socket", "msg.noWebSocket", {}, "error");
    return;
  }
  socket = new VoiceSocket({
    url: wsUrl(sessionId),
    WebSocketImpl: WebSocket,
    onState: onSocketState,
    onEvent: onServerEvent,
    onAudio: onServerAudio,
  });
  socket.connect();
}

function toggleConnection() {
  if (socket && socket.state !== "closed") {
    socket.disconnect();
  } else if (socket) {
    socket.connect();
  } else {
    openSocket();
  }
  renderStatus();
}

function startNewSession() {
  if (socket) socket.disconnect();
  sessionId = newSessionId();
  sessionStorage.setItem(SESSION_KEY, sessionId);
  engine.clearPlayback();
  transcript.clear();
  $("transcript").replaceChildren();
  entryEls.clear();
  ui.serverMetrics = [];
  ui.stages = ui.stagesOf = null;
  ui.room = null;
  openSocket();
  renderAll();
}

// ---------------------------------------------------------------- microphone

async function toggleMic() {
  const btn = $("mic-btn");
  if (engine.micOn) {
    engine.stopMic();
    if (turns.userSpeaking) onVadEvent({ event: "stop" });
    renderLevel(-Infinity, false);
    renderStatus();
    return;
  }
  btn.disabled = true;
  try {
    await engine.startMic(vadOptions());
    engine.setStartOffsetDb(ui.agentSpeaking ? settings.bargeInBoost : 0);
    hideBanner("mic");
  } catch (err) {
    const kind = err instanceof MicError ? err.kind : "failed";
    const detail = err instanceof MicError ? err.detail : String(err);
    const key = {
      denied: "msg.micDenied",
      missing: "msg.micMissing",
      busy: "msg.micBusy",
      insecure: "msg.micInsecure",
    }[kind] || "msg.audioFailed";
    showBanner("mic", key, { detail }, "error");
    logEvent("err", { type: "microphone.error", kind, detail });
  } finally {
    btn.disabled = false;
    renderStatus();
  }
}

function toggleMute() {
  engine.setMuted(!engine.muted);
  if (engine.muted) renderLevel(-Infinity, false);
  renderStatus();
}

function manualInterrupt() {
  const r = turns.interrupt();
  if (r.clearPlayback) engine.clearPlayback();
  refreshAgentState();
}

// ---------------------------------------------------------------- text

function onTextSubmit(e) {
  e.preventDefault();
  const input = $("text-input");
  const text = input.value.trim();
  if (!text) return;
  if (!sendJson(textMessage(text))) return; // not connected: keep the text
  for (const entry of transcript.addTypedText(text)) renderEntry(entry);
  timer.markTurnEnd(performance.now(), { restart: true });
  input.value = "";
}

// ---------------------------------------------------------------- rendering

const entryEls = new Map(); // entry id -> <li>

function renderEntry(entry) {
  let li = entryEls.get(entry.id);
  if (entry.hidden) {
    // A joined turn's partial entry: its words are in the turn's first entry now.
    if (li) li.remove();
    entryEls.delete(entry.id);
    return;
  }
  if (!li) {
    li = document.createElement("li");
    li.append(document.createElement("span"), document.createElement("span"));
    li.firstChild.className = "who";
    li.lastChild.className = "text";
    entryEls.set(entry.id, li);
    $("transcript").append(li);
    // Entries evicted from the model leave the page too.
    const live = new Set(transcript.entries.map((x) => x.id));
    for (const [id, el] of entryEls) {
      if (!live.has(id)) {
        el.remove();
        entryEls.delete(id);
      }
    }
  }
  li.className = `entry ${entry.role}${entry.partial ? " partial" : ""}`;
  const who = li.firstChild;
  const roleName = { user: "you", assistant: "agent", error: "error", notice: "notice" }[entry.role];
  who.textContent = entry.role === "error" ? `${t("error")} · ${entry.code}` : t(roleName);
  if (entry.role === "error" && entry.fatal) who.append(badge(t("fatal")));
  if (entry.status === "interrupted") who.append(badge(t("interrupted")));
  if (entry.status === "cut") who.append(badge(t("cut")));
  let text = entry.text;
  if (entry.role === "assistant" && !text) text = entry.status ? t("audioOnly") : "…";
  li.lastChild.textContent = text;
  $("transcript-empty").hidden = true;
  const box = $("transcript-box");
  box.scrollTop = box.scrollHeight;
}

function badge(text) {
  const b = document.createElement("span");
  b.className = "badge";
  b.textContent = text;
  return b;
}

function renderTranscript() {
  for (const entry of transcript.entries) renderEntry(entry);
  $("transcript-empty").hidden = transcript.entries.length > 0;
}

function renderLevel(db, speaking) {
  // -70 dBFS .. -10 dBFS across the bar.
  const pct = Number.isFinite(db) ? Math.max(0, Math.min(100, ((db + 70) / 60) * 100)) : 0;
  const fill = $("meter-fill");
  fill.style.width = `${pct.toFixed(0)}%`;
  fill.classList.toggle("speaking", Boolean(speaking));
}

function renderIndicators() {
  $("ind-you").classList.toggle("on", ui.youSpeaking);
  $("ind-server").classList.toggle("on", ui.serverHears);
  $("ind-agent").classList.toggle("on", ui.agentSpeaking);
  $("interrupt-btn").disabled = !(ui.agentSpeaking && ui.sessionReady);
}

function renderStatus() {
  const state = ui.sessionReady ? "ready" : ui.connState;
  const pill = $("conn-state");
  pill.dataset.state = state;
  pill.textContent = t(`state.${state}`);

  const connectBtn = $("connect-btn");
  const live = socket && socket.state !== "closed" && socket.state !== "idle";
  connectBtn.textContent = t(live ? "disconnect" : "connect");

  const mic = $("mic-btn");
  mic.textContent = t(engine.micOn ? "micStop" : "micStart");
  mic.classList.toggle("primary", !engine.micOn);
  const mute = $("mute-btn");
  mute.disabled = !engine.micOn;
  mute.textContent = t(engine.muted ? "unmute" : "mute");
  mute.setAttribute("aria-pressed", String(engine.muted));

  $("session-id").textContent = sessionId;
  const r = ui.room;
  $("room-info").textContent = r
    ? t("roomInfo", {
        in: r.input_sample_rate ?? "?",
        out: r.output_sample_rate ?? "?",
        brain: r.brain ?? "?",
        voice: r.voice ?? "?",
      })
    : "";
  renderIndicators();
  renderServerMetrics();
  renderClientMetrics();
}

function renderFigures(dl, rows, labelled, format = formatFigure) {
  const frag = document.createDocumentFragment();
  for (const [name, value] of rows) {
    const dt = document.createElement("dt");
    dt.textContent = labelled ? t(name) : name;
    if (!labelled) dt.className = "code";
    const dd = document.createElement("dd");
    dd.textContent = format(value);
    frag.append(dt, dd);
  }
  dl.replaceChildren(frag);
}

function renderServerMetrics() {
  $("server-metrics-empty").hidden = ui.serverMetrics.length > 0;
  renderFigures($("server-metrics"), ui.serverMetrics, false);
  $("stage-metrics-empty").hidden = ui.stages !== null;
  const dl = $("stage-metrics");
  dl.dataset.responseId = ui.stagesOf ?? "";
  renderFigures(dl, ui.stages ?? [], true, formatMs);
}

function renderClientMetrics() {
  const s = engine.lastStats;
  const rows = [
    ["m.ttfa", timer.last],
    ["m.ttfaMean", timer.mean],
    ["m.framesSent", counters.framesSent],
    ["m.framesDropped", counters.framesDropped],
    ["m.bufferedMs", s ? s.bufferedMs : null],
    ["m.playedMs", s ? s.playedMs : null],
    ["m.targetMs", s ? s.targetMs : null],
    ["m.underruns", s ? s.underruns : null],
    ["m.overflowMs", s ? s.overflowMs : null],
    ["m.gain", s && Number.isFinite(s.gain) ? s.gain : null],
    ["m.interrupts", turns.interruptsSent],
    ["m.rtt", socket ? socket.lastRttMs : null],
    ["m.reconnects", socket ? Math.max(0, socket.connects - 1) : 0],
    ["m.contextRate", engine.sampleRate],
  ];
  renderFigures($("client-metrics"), rows, true);
}

function showBanner(id, key, params, kind) {
  ui.banners.set(id, { key, params, kind });
  renderBanners();
}

function hideBanner(id) {
  if (ui.banners.delete(id)) renderBanners();
}

function renderBanners() {
  const box = $("banners");
  const frag = document.createDocumentFragment();
  for (const { key, params, kind } of ui.banners.values()) {
    const div = document.createElement("div");
    div.className = `banner ${kind}`;
    div.setAttribute("role", kind === "error" ? "alert" : "status");
    div.textContent = t(key, params);
    frag.append(div);
  }
  box.replaceChildren(frag);
}

function logEvent(direction, obj) {
  const list = $("event-log");
  const li = document.createElement("li");
  li.className = direction;
  const time = new Date().toLocaleTimeString(lang === "vi" ? "vi-VN" : "en-GB", { hour12: false });
  const arrow = direction === "out" ? "→" : direction === "err" ? "!" : "←";
  let body = JSON.stringify(obj);
  if (body.length > 300) body = `${body.slice(0, 300)}…`;
  li.textContent = `${time} ${arrow} ${body}`;
  list.append(li);
  while (list.childElementCount > MAX_LOG) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

function renderAll() {
  applyI18n(document, t);
  renderTranscript();
  renderBanners();
  renderStatus();
}

// ---------------------------------------------------------------- options

function bindSettings() {
  const checks = { "opt-client-commits": "clientCommits", "opt-json-audio": "jsonAudio" };
  for (const [id, key] of Object.entries(checks)) {
    const el = $(id);
    el.checked = Boolean(settings[key]);
    el.addEventListener("change", () => {
      settings[key] = el.checked;
      turns.clientCommits = settings.clientCommits;
      saveSettings();
    });
  }
  const numbers = {
    "opt-vad-start": "vadStart",
    "opt-vad-stop": "vadStop",
    "opt-vad-hangover": "hangover",
    "opt-vad-min": "minSpeech",
    "opt-barge-boost": "bargeInBoost",
    "opt-jitter-start": "jitterStart",
  };
  for (const [id, key] of Object.entries(numbers)) {
    const el = $(id);
    el.value = settings[key];
    el.addEventListener("change", () => {
      const v = Number(el.value);
      if (!Number.isFinite(v)) {
        el.value = settings[key];
        return;
      }
      settings[key] = v;
      saveSettings();
      engine.configureVad(vadOptions());
      engine.setStartOffsetDb(ui.agentSpeaking ? settings.bargeInBoost : 0);
      engine.configurePlayer({ startMs: Math.max(20, settings.jitterStart) });
    });
  }
}

// ---------------------------------------------------------------- figures

// A read-only snapshot of the page's live state, for the console and the
// browser tests (tests/browser): `voiceTrio.figures()`.
globalThis.voiceTrio = Object.freeze({
  figures: () => ({
    sessionId,
    connState: ui.connState,
    sessionReady: ui.sessionReady,
    agentSpeaking: ui.agentSpeaking,
    micOn: engine.micOn,
    audioContext: engine.ctx ? engine.ctx.state : null,
    player: engine.lastStats, // the player worklet's last report
    playedMs: engine.playedMs(), // what an interrupt would send as played_ms
    ducked: ui.ducked, // the page has asked the player to duck (the user talks)
    stages: ui.stages ? Object.fromEntries(ui.stages) : null, // the last spoken reply's
    stagesOf: ui.stagesOf,
    interruptsSent: turns.interruptsSent,
    framesSent: counters.framesSent,
    framesDropped: counters.framesDropped,
    audioDropped: counters.audioDropped,
    reconnects: socket ? Math.max(0, socket.connects - 1) : 0,
    ttfaMs: timer.last,
  }),
});

// ---------------------------------------------------------------- start

function main() {
  document.documentElement.lang = lang;
  bindSettings();
  $("lang-toggle").addEventListener("click", () => setLang(otherLang(lang)));
  $("mic-btn").addEventListener("click", toggleMic);
  $("mute-btn").addEventListener("click", toggleMute);
  $("interrupt-btn").addEventListener("click", manualInterrupt);
  $("connect-btn").addEventListener("click", toggleConnection);
  $("new-session-btn").addEventListener("click", startNewSession);
  $("text-form").addEventListener("submit", onTextSubmit);
  $("clear-log-btn").addEventListener("click", () => $("event-log").replaceChildren());
  $("copy-btn").addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(sessionId);
      $("copy-btn").textContent = t("copied");
      setTimeout(() => ($("copy-btn").textContent = t("copy")), 1500);
    } catch {
      // clipboard refused (insecure context): the id is on screen anyway
    }
  });
  // Autoplay policy: the context may start suspended; any gesture resumes it.
  const resume = () => engine.resume().catch(() => {});
  document.addEventListener("pointerdown", resume);
  document.addEventListener("keydown", resume);

  engine.configurePlayer({ startMs: Math.max(20, settings.jitterStart) });
  engine.init().catch((err) => {
    showBanner("audio", "msg.audioFailed", { detail: err.detail || err.message || String(err) }, "error");
  });
  renderAll();
  openSocket();
  // Figures that change without an event (played ms, buffer, rtt).
  setInterval(renderClientMetrics, 250);
}

main();
