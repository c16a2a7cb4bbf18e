// Interface text: Vietnamese by default, English by toggle. Pure module (the
// DOM part, applyI18n, only touches what it is given).

export const DICT = {
  vi: {
    title: "voice-trio: trợ lý giọng nói",
    subtitle: "Trang thử nghiệm: nói vào micro hoặc gõ chữ",
    langToggle: "English",
    langToggleTitle: "Chuyển sang tiếng Anh",
    session: "Phiên",
    newSession: "Phiên mới",
    copy: "Sao chép",
    copied: "Đã chép",
    connect: "Kết nối",
    disconnect: "Ngắt kết nối",
    "state.idle": "Chưa kết nối",
    "state.connecting": "Đang kết nối…",
    "state.open": "Đã mở, chờ phiên…",
    "state.ready": "Sẵn sàng",
    "state.waiting": "Mất kết nối",
    "state.closed": "Đã ngắt",
    micStart: "Bật micro",
    micStop: "Tắt micro",
    mute: "Tắt tiếng",
    unmute: "Bật tiếng",
    interrupt: "Ngắt lời trợ lý",
    you: "Bạn",
    agent: "Trợ lý",
    error: "Lỗi",
    notice: "Thông báo",
    youSpeaking: "Bạn đang nói",
    serverHears: "Máy chủ nghe thấy giọng",
    agentSpeaking: "Trợ lý đang nói",
    micLevel: "Mức micro",
    placeholder: "Gõ câu hỏi rồi nhấn Enter…",
    send: "Gửi",
    transcript: "Hội thoại",
    emptyTranscript: "Chưa có gì. Bật micro và nói, hoặc gõ một câu.",
    interrupted: "bị ngắt",
    cut: "mất kết nối",
    audioOnly: "(chỉ có âm thanh)",
    fatal: "lỗi nghiêm trọng",
    live: "Số liệu trực tiếp",
    serverFigures: "Máy chủ (sự kiện metrics)",
    clientFigures: "Trình duyệt",
    noMetrics: "Chưa nhận được số liệu.",
    "m.ttfa": "Thời gian tới âm thanh đầu (ms)",
    "m.ttfaMean": "TB thời gian tới âm thanh đầu (ms)",
    "m.framesSent": "Khung âm thanh đã gửi",
    "m.framesDropped": "Khung bỏ (socket chưa sẵn sàng/đầy)",
    "m.bufferedMs": "Đệm phát (ms)",
    "m.playedMs": "Đã phát của lượt này (ms)",
    "m.targetMs": "Mức đệm cần để phát (ms)",
    "m.underruns": "Lần thiếu dữ liệu phát",
    "m.overflowMs": "Âm thanh bỏ do đệm đầy (ms)",
    "m.interrupts": "Lần ngắt lời đã gửi",
    "m.rtt": "Ping khứ hồi (ms)",
    "m.reconnects": "Lần kết nối lại",
    "m.contextRate": "Tần số âm thanh trình duyệt (Hz)",
    "m.gain": "Âm lượng phát (1 = đủ, nhỏ lại khi bạn nói)",
    stageFigures: "Các bước của câu trả lời vừa nói (ms)",
    noStages: "Chưa có câu trả lời bằng giọng nói nào được đo.",
    "stage.end_of_turn": "Chờ hết lượt nói",
    "stage.asr": "Nhận dạng (tới câu chữ cuối)",
    "stage.brain": "Trợ lý trả lời (tới chữ đầu tiên)",
    "stage.tts": "Tổng hợp giọng (tới âm thanh đầu)",
    "stage.total": "Tổng: từ lúc ngừng nói tới âm thanh đầu",
    settings: "Tùy chọn",
    clientCommits: "Trình duyệt tự chốt lượt nói (gửi commit_audio khi bạn ngừng nói)",
    jsonAudio: "Gửi âm thanh dạng JSON int16 (thay cho khung nhị phân)",
    vadStart: "Ngưỡng bắt đầu nói (dBFS)",
    vadStop: "Ngưỡng ngừng nói (dBFS)",
    vadHangover: "Chờ sau khi ngừng (ms)",
    vadMinSpeech: "Độ dài tối thiểu của tiếng nói (ms)",
    bargeInBoost: "Nâng ngưỡng khi trợ lý đang nói (dB)",
    jitterStart: "Đệm trước khi phát (ms)",
    eventLog: "Nhật ký sự kiện",
    clearLog: "Xóa",
    roomInfo: "Phòng: vào {in} Hz, ra {out} Hz, brain {brain}, voice {voice}",
    "msg.micDenied": "Trình duyệt đã từ chối quyền dùng micro. Hãy cho phép micro cho trang này (biểu tượng ổ khóa cạnh địa chỉ) rồi bấm lại “Bật micro”. Bạn vẫn có thể gõ chữ.",
    "msg.micMissing": "Không tìm thấy micro nào. Hãy cắm micro rồi thử lại. Bạn vẫn có thể gõ chữ.",
    "msg.micBusy": "Micro đang bị ứng dụng khác dùng hoặc không mở được: {detail}",
    "msg.micInsecure": "Trình duyệt chỉ cho dùng micro trên HTTPS hoặc localhost. Hãy mở trang qua https:// hoặc http://localhost.",
    "msg.audioFailed": "Không khởi động được âm thanh: {detail}",
    "msg.socketDropped": "Mất kết nối tới máy chủ (mã {code}{reason}). Tự kết nối lại sau {seconds} giây…",
    "msg.socketRetrying": "Đang kết nối lại (lần {attempt})…",
    "msg.reconnected": "Đã kết nối lại.",
    "msg.soundBlocked": "Trình duyệt đang chặn phát âm thanh. Bấm vào bất kỳ đâu trên trang để bật tiếng.",
    "msg.noWebSocket": "Trình duyệt này không hỗ trợ WebSocket.",
    "msg.keepalive": "Máy chủ không trả lời ping",
    "msg.serverError": "Máy chủ báo lỗi {code}: {message}",
  },
  en: {
    title: "voice-trio: voice agent",
    subtitle: "Demo page: talk into the microphone or type",
    langToggle: "Tiếng Việt",
    langToggleTitle: "Switch to Vietnamese",
    session: "Session",
    newSession: "New session",
    copy: "Copy",
    copied: "Copied",
    connect: "Connect",
    disconnect: "Disconnect",
    "state.idle": "Not connected",
    "state.connecting": "Connecting…",
    "state.open": "Open, waiting for session…",
    "state.ready": "Ready",
    "state.waiting": "Connection lost",
    "state.closed": "Disconnected",
    micStart: "Start microphone",
    micStop: "Stop microphone",
    mute: "Mute",
    unmute: "Unmute",
    interrupt: "Interrupt the agent",
    you: "You",
    agent: "Agent",
    error: "Error",
    notice: "Notice",
    youSpeaking: "You are speaking",
    serverHears: "Server hears speech",
    agentSpeaking: "Agent is speaking",
    micLevel: "Mic level",
    placeholder: "Type a message and press Enter…",
    send: "Send",
    transcript: "Conversation",
    emptyTranscript: "Nothing yet. Start the microphone and talk, or type something.",
    interrupted: "interrupted",
    cut: "connection lost",
    audioOnly: "(audio only)",
    fatal: "fatal",
    live: "Live figures",
    serverFigures: "Server (metrics events)",
    clientFigures: "Browser",
    noMetrics: "No figures received yet.",
    "m.ttfa": "Time to first audio (ms)",
    "m.ttfaMean": "Mean time to first audio (ms)",
    "m.framesSent": "Audio frames sent",
    "m.framesDropped": "Frames dropped (socket not ready/full)",
    "m.bufferedMs": "Playback buffer (ms)",
    "m.playedMs": "Played of this response (ms)",
    "m.targetMs": "Buffer needed to start (ms)",
    "m.underruns": "Playback underruns",
    "m.overflowMs": "Audio dropped, buffer full (ms)",
    "m.interrupts": "Interrupts sent",
    "m.rtt": "Ping round trip (ms)",
    "m.reconnects": "Reconnects",
    "m.contextRate": "Browser audio rate (Hz)",
    "m.gain": "Playback gain (1 = full, lower while you talk)",
    stageFigures: "Stages of the last spoken reply (ms)",
    noStages: "No spoken reply timed yet.",
    "stage.end_of_turn": "Deciding the end of turn",
    "stage.asr": "Recognition (to the final transcript)",
    "stage.brain": "Brain (to the first text)",
    "stage.tts": "Voice (to the first audio)",
    "stage.total": "Total: end of speech to first audio",
    settings: "Options",
    clientCommits: "Browser commits turns (send commit_audio when you stop talking)",
    jsonAudio: "Send audio as JSON int16 (instead of binary frames)",
    vadStart: "Speech start threshold (dBFS)",
    vadStop: "Speech stop threshold (dBFS)",
    vadHangover: "Hangover after speech (ms)",
    vadMinSpeech: "Minimum speech (ms)",
    bargeInBoost: "Raise threshold while agent speaks (dB)",
    jitterStart: "Buffer before playing (ms)",
    eventLog: "Event log",
    clearLog: "Clear",
    roomInfo: "Room: in {in} Hz, out {out} Hz, brain {brain}, voice {voice}",
    "msg.micDenied": "The browser refused microphone access. Allow the microphone for this page (lock icon by the address) and press “Start microphone” again. You can still type.",
    "msg.micMissing": "No microphone found. Plug one in and try again. You can still type.",
    "msg.micBusy": "The microphone is in use by another application or could not be opened: {detail}",
    "msg.micInsecure": "Browsers allow the microphone only on HTTPS or localhost. Open the page over https:// or http://localhost.",
    "msg.audioFailed": "Could not start audio: {detail}",
    "msg.socketDropped": "Lost the connection to the server (code {code}{reason}). Reconnecting in {seconds} s…",
    "msg.socketRetrying": "Reconnecting (attempt {attempt})…",
    "msg.reconnected": "Reconnected.",
    "msg.soundBlocked": "The browser is blocking sound. Click anywhere on the page to enable it.",
    "msg.noWebSocket": "This browser does not support WebSocket.",
    "msg.keepalive": "The server did not answer ping",
    "msg.serverError": "Server error {code}: {message}",
  },
};

export const LANGS = Object.keys(DICT);
export const DEFAULT_LANG = "vi";

/**
 * Translator for one language: t(key, {name: value}) fills {name}. A missing
 * key falls back to Vietnamese, then to the key itself.
 */
export function translator(lang) {
  const dict = DICT[lang] || DICT[DEFAULT_LANG];
  return function t(key, params) {
    let text = dict[key] ?? DICT[DEFAULT_LANG][key] ?? key;
    if (params) {
      text = text.replace(/\{(\w+)\}/g, (m, name) => (name in params ? String(params[name]) : m));
    }
    return text;
  };
}

/** The other language, for the toggle. */
export function otherLang(lang) {
  return lang === "en" ? "vi" : "en";
}

/**
 * Fill elements under `root` marked data-i18n (text), data-i18n-placeholder,
 * data-i18n-title and data-i18n-aria-label.
 */
export function applyI18n(root, t) {
  for (const el of root.querySelectorAll("[data-i18n]")) el.textContent = t(el.dataset.i18n);
  for (const el of root.querySelectorAll("[data-i18n-placeholder]")) {
    el.placeholder = t(el.dataset.i18nPlaceholder);
  }
  for (const el of root.querySelectorAll("[data-i18n-title]")) el.title = t(el.dataset.i18nTitle);
  for (const el of root.querySelectorAll("[data-i18n-aria-label]")) {
    el.setAttribute("aria-label", t(el.dataset.i18nAriaLabel));
  }
}
