// main.ts is the call page: sign in, start or answer a call, show the media.
// Every field of its form can be given in the query string; with a username,
// a password and a conversation or call id there, the page joins at once.
// window.parley lets tests (and people in the console) see how it stands.

import { Api } from "./api.js";
import { CallSession, errorText, type CallStats, type RemoteTrack } from "./call.js";
import { CallState, TrackSource, type IceServer } from "../../gen/es/parley/v1/calls_pb.js";
import { CallKind } from "../../gen/es/parley/v1/types_pb.js";

/** Params are what the page needs to join a call. */
interface Params {
  server: string;
  username: string;
  password: string;
  register: boolean;
  /** conversation, when set, is where to start a call. */
  conversation: string;
  /** call, when set, is the call to answer. */
  call: string;
  kind: "audio" | "video";
}

type PageState = "idle" | "signing-in" | "joining" | "in-call" | "ended" | "failed";

/** ParleyHook is window.parley. */
interface ParleyHook {
  state: PageState;
  error?: string;
  userId?: string;
  callId?: string;
  /** callState is the call's last state from Signals, such as "ACTIVE". */
  callState?: string;
  remoteTracks(): { userId: string; source: string; kind: string; muted: boolean }[];
  stats(): Promise<CallStats | undefined>;
  /** setMuted mutes or unmutes this side's microphone or camera, as the buttons do. */
  setMuted(source: "MICROPHONE" | "CAMERA", muted: boolean): Promise<void>;
  /** dropSignals ends the Signals stream as a network failure would; reopened() counts how often it was opened again. */
  dropSignals(): void;
  reopened(): number;
  hangUp(): Promise<void>;
}

declare global {
  interface Window {
    parley: ParleyHook;
  }
}

const $ = <T extends HTMLElement>(id: string): T => {
  const el = document.getElementById(id);
  if (el === null) {
    throw new Error(`the page has no #${id}`);
  }
  return el as T;
};

const form = $<HTMLFormElement>("join");
const media = $<HTMLDivElement>("media");
const logBox = $<HTMLPreElement>("log");
let session: CallSession | undefined;
const names = new Map<string, string>();

const hook: ParleyHook = {
  state: "idle",
  remoteTracks: () =>
    (session?.remoteTracks() ?? []).map((t) => ({ userId: t.userId, source: TrackSource[t.source], kind: t.track.kind, muted: t.muted })),
  stats: async () => session?.stats(),
  setMuted: async (source, muted) => {
    if (session === undefined) {
      throw new Error("not in a call");
    }
    await session.setMuted(TrackSource[source], muted);
  },
  dropSignals: () => session?.dropSignals(),
  reopened: () => session?.reopened ?? 0,
  hangUp: async () => {
    await session?.hangUp();
  },
};
window.parley = hook;

function setState(state: PageState, error?: string): void {
  hook.state = state;
  if (error !== undefined) {
    hook.error = error;
  }
  $("status").textContent = error === undefined ? state : `${state}: ${error}`;
}

function log(line: string): void {
  logBox.textContent += `${new Date().toISOString().slice(11, 23)} ${line}\n`;
  logBox.scrollTop = logBox.scrollHeight;
}

function readParams(): Params {
  const f = new FormData(form);
  const get = (k: string) => String(f.get(k) ?? "").trim();
  return {
    server: get("server") || location.origin,
    username: get("username"),
    password: String(f.get("password") ?? ""),
    register: f.get("register") !== null,
    conversation: get("conversation"),
    call: get("call"),
    kind: get("kind") === "audio" ? "audio" : "video",
  };
}

/** fillForm copies the query string into the form; it reports whether it names a call to join. */
function fillForm(q: URLSearchParams): boolean {
  for (const el of Array.from(form.elements)) {
    if (!(el instanceof HTMLInputElement || el instanceof HTMLSelectElement) || !q.has(el.name)) {
      continue;
    }
    if (el instanceof HTMLInputElement && el.type === "checkbox") {
      el.checked = ["1", "true", "on"].includes(q.get(el.name) ?? "");
    } else {
      el.value = q.get(el.name) ?? "";
    }
  }
  return q.has("username") && q.has("password") && (q.has("conversation") || q.has("call"));
}

async function join(p: Params): Promise<void> {
  if ((p.conversation === "") === (p.call === "")) {
    throw new Error("give a conversation to call or a call to answer, not both");
  }
  form.hidden = true;
  setState("signing-in");
  const api = new Api(p.server);
  const me = await api.login(p.username, p.password, { register: p.register, deviceName: "web call page" });
  hook.userId = me.id;
  names.set(me.id, me.displayName);
  log(`signed in as ${me.username}`);

  setState("joining");
  // The camera and microphone first: a refused camera should not ring anyone.
  let kind = p.kind === "audio" ? CallKind.AUDIO : CallKind.VIDEO;
  if (p.call !== "") {
    kind = (await api.calls.getCall({ callId: p.call })).call?.kind ?? kind;
  }
  const local = await navigator.mediaDevices.getUserMedia({ audio: true, video: kind === CallKind.VIDEO });
  showLocal(local);

  let callId: string;
  let iceServers: IceServer[];
  if (p.call !== "") {
    const res = await api.calls.answerCall({ callId: p.call });
    callId = p.call;
    iceServers = res.iceServers;
  } else {
    const res = await api.calls.startCall({ conversationId: p.conversation, kind });
    callId = res.call?.id ?? "";
    iceServers = res.iceServers;
  }
  hook.callId = callId;
  $("call-id").textContent = `call ${callId}`;
  log(`joined call ${callId}`);

  const s = new CallSession(api.calls, callId, iceServers, local, {
    call: (call) => {
      hook.callState = CallState[call.state];
      for (const part of call.participants) {
        if (!names.has(part.userId)) {
          void lookUpName(api, part.userId);
        }
      }
    },
    trackAdded: (t) => showRemote(t),
    trackRemoved: (t) => document.getElementById(tileId(t))?.remove(),
    muteChanged: (t) => document.getElementById(tileId(t))?.classList.toggle("muted", t.muted),
    ended: (err) => {
      $("controls").hidden = true;
      setState(err === undefined ? "ended" : "failed", err === undefined ? undefined : errorText(err));
    },
    log,
  });
  session = s;
  wireControls(s);
  setState("in-call");
  await s.start();
}

async function lookUpName(api: Api, userId: string): Promise<void> {
  try {
    const res = await api.auth.getUsers({ userIds: [userId] });
    for (const u of res.users) {
      names.set(u.id, u.displayName);
      for (const cap of Array.from(document.querySelectorAll<HTMLElement>(`figcaption[data-user="${u.id}"]`))) {
        cap.textContent = caption(u.id, Number(cap.dataset.source) as TrackSource);
      }
    }
  } catch (err) {
    log(`GetUsers: ${errorText(err)}`);
  }
}

function caption(userId: string, source: TrackSource): string {
  return `${names.get(userId) ?? userId} · ${TrackSource[source].toLowerCase()}`;
}

function tileId(t: RemoteTrack): string {
  return `track-${t.mid}`;
}

function tile(id: string, el: HTMLMediaElement, text: string, userId?: string, source?: TrackSource): HTMLElement {
  const fig = document.createElement("figure");
  fig.id = id;
  const cap = document.createElement("figcaption");
  cap.textContent = text;
  if (userId !== undefined && source !== undefined) {
    cap.dataset.user = userId;
    cap.dataset.source = String(source);
  }
  fig.append(el, cap);
  media.append(fig);
  return fig;
}

function showLocal(local: MediaStream): void {
  if (local.getVideoTracks().length === 0) {
    return;
  }
  const v = document.createElement("video");
  v.muted = true;
  v.autoplay = true;
  v.playsInline = true;
  v.srcObject = local;
  tile("local", v, "you · camera");
}

function showRemote(t: RemoteTrack): void {
  document.getElementById(tileId(t))?.remove();
  const el = document.createElement(t.track.kind === "video" ? "video" : "audio");
  el.autoplay = true;
  if (el instanceof HTMLVideoElement) {
    el.playsInline = true;
    el.muted = true; // the sound comes through the audio track's element
  } else {
    el.controls = true;
  }
  el.srcObject = new MediaStream([t.track]);
  const fig = tile(tileId(t), el, caption(t.userId, t.source), t.userId, t.source);
  fig.dataset.user = t.userId;
  fig.dataset.source = TrackSource[t.source].toLowerCase();
  fig.classList.toggle("muted", t.muted);
  el.play().catch((err: unknown) => log(`play ${TrackSource[t.source]}: ${errorText(err)}`));
}

function wireControls(s: CallSession): void {
  $("controls").hidden = false;
  $("hangup").onclick = () => {
    s.hangUp().catch((err: unknown) => log(`HangUp: ${errorText(err)}`));
  };
  const toggle = (id: string, source: TrackSource, on: string, off: string) => {
    let muted = false;
    const b = $<HTMLButtonElement>(id);
    b.onclick = () => {
      muted = !muted;
      b.textContent = muted ? off : on;
      s.setMuted(source, muted).catch((err: unknown) => log(`mute: ${errorText(err)}`));
    };
  };
  toggle("mute-mic", TrackSource.MICROPHONE, "Mute microphone", "Unmute microphone");
  toggle("mute-camera", TrackSource.CAMERA, "Turn camera off", "Turn camera on");
}

function run(p: Params): void {
  join(p).catch((err: unknown) => {
    const text = errorText(err);
    log(text);
    setState("failed", text);
  });
}

form.addEventListener("submit", (ev) => {
  ev.preventDefault();
  run(readParams());
});
if (fillForm(new URLSearchParams(location.search))) {
  run(readParams());
}
