// call.ts takes part in a Parley call from a browser: one RTCPeerConnection to
// Parley's media server, signaled through CallsService. The server always
// makes the offers; this side answers them, puts its microphone and camera on
// the transceivers the server designates (SdpOffer.send_mids), trickles ICE
// both ways and reports the tracks it receives, by participant and source.

import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";

import {
  CallState,
  TrackSource,
  type Call,
  type CallsService,
  type IceCandidate,
  type IceServer,
  type SdpOffer,
  type SignalRequestSchema,
  type SignalsResponse,
} from "../../gen/es/parley/v1/calls_pb.js";

/** RemoteTrack is a track another participant publishes, as this side receives it. */
export interface RemoteTrack {
  /** userId is the participant who publishes the track. */
  userId: string;
  /** source says what the track carries. */
  source: TrackSource;
  /** mid is the transceiver that receives it. */
  mid: string;
  /** track is the media, for a <video> or <audio> element. */
  track: MediaStreamTrack;
  /** muted is what the publisher last said of it. */
  muted: boolean;
}

/** CallEvents are what a CallSession reports to its page. */
export interface CallEvents {
  /** call is the call's state: when Signals opens and whenever it changes. */
  call?(call: Call): void;
  /** trackAdded is a remote track that started arriving. */
  trackAdded?(t: RemoteTrack): void;
  /** trackRemoved is a remote track its publisher stopped. */
  trackRemoved?(t: RemoteTrack): void;
  /** muteChanged is a remote track muted or unmuted. */
  muteChanged?(t: RemoteTrack): void;
  /** ended says the session is over: the call ended, this side left, or err broke it. */
  ended?(err?: Error): void;
  /** log is a line for a human reading the page. */
  log?(line: string): void;
}

/** InboundStats sums what a connection receives of one kind of media. */
export interface InboundStats {
  packetsReceived: number;
  bytesReceived: number;
  /** framesDecoded counts decoded video frames (video only). */
  framesDecoded: number;
  /** totalSamplesReceived counts audio samples (audio only). */
  totalSamplesReceived: number;
}

/**
 * reopenForMs is how long a dropped Signals stream is retried: the server
 * keeps a joined participant's place for 30 seconds.
 */
const reopenForMs = 25_000;
const reopenFirstDelayMs = 250;
const reopenMaxDelayMs = 4_000;
/** terminalCodes end the session rather than reopening Signals: the call is over for this side, or it may not take part. */
const terminalCodes = new Set([Code.FailedPrecondition, Code.NotFound, Code.PermissionDenied, Code.Unauthenticated, Code.InvalidArgument]);

/** CallStats is a summary of RTCPeerConnection.getStats(). */
export interface CallStats {
  connectionState: RTCPeerConnectionState;
  iceConnectionState: RTCIceConnectionState;
  inbound: { audio: InboundStats; video: InboundStats };
  outbound: { audio: { packetsSent: number }; video: { packetsSent: number; framesEncoded: number } };
  /** route is the selected ICE candidate pair, as "address:port" each side; unset until one is. */
  route?: { local: string; remote: string };
}

type SignalInit = MessageInitShape<typeof SignalRequestSchema>["signal"];

/** rtcIceServers turns the server's ICE servers into an RTCConfiguration's. */
export function rtcIceServers(servers: IceServer[]): RTCIceServer[] {
  return servers.map((s) => ({
    urls: s.urls,
    ...(s.username !== "" ? { username: s.username, credential: s.credential } : {}),
  }));
}

/**
 * CallSession is this client's part in one call it has joined (StartCall or
 * AnswerCall succeeded). start opens Signals; hangUp leaves the call.
 */
export class CallSession {
  readonly callId: string;
  private readonly calls: Client<typeof CallsService>;
  private readonly local: MediaStream;
  private readonly events: CallEvents;
  private readonly pc: RTCPeerConnection;
  private readonly abort = new AbortController();
  /** published maps the mid of each receiving transceiver to what TrackPublished said it carries. */
  private readonly published = new Map<string, Omit<RemoteTrack, "track">>();
  private readonly receiving = new Map<string, RemoteTrack>();
  private done = false;
  /** streamAbort cancels the current Signals stream only. */
  private streamAbort: AbortController | undefined;
  /** reopened counts the times Signals was opened again after it dropped. */
  reopened = 0;

  constructor(calls: Client<typeof CallsService>, callId: string, iceServers: IceServer[], local: MediaStream, events: CallEvents = {}) {
    this.calls = calls;
    this.callId = callId;
    this.local = local;
    this.events = events;
    this.pc = new RTCPeerConnection({ iceServers: rtcIceServers(iceServers) });
    this.pc.onicecandidate = (ev) => {
      // A null candidate ends gathering: say so with an empty one.
      const c = ev.candidate;
      const candidate = {
        candidate: c?.candidate ?? "",
        sdpMid: c?.sdpMid ?? undefined,
        sdpMlineIndex: c?.sdpMLineIndex ?? undefined,
        usernameFragment: c?.usernameFragment ?? "",
      };
      this.send({ case: "candidate", value: candidate }).catch((err) => this.log(`Signal(candidate): ${errorText(err)}`));
    };
    this.pc.ontrack = (ev) => this.onTrack(ev);
    this.pc.onconnectionstatechange = () => this.log(`connection ${this.pc.connectionState}`);
  }

  /** start opens the Signals stream and handles it until the call ends or hangUp. */
  start(): Promise<void> {
    return this.run().then(
      () => this.finish(),
      (err: unknown) => this.finish(this.abort.signal.aborted ? undefined : toError(err)),
    );
  }

  /**
   * run handles Signals until the call ends. A stream that drops (the
   * network, a server restarting) is opened again for as long as the server
   * keeps a joined participant's place; the server answers a new stream with
   * the call's state and a fresh offer.
   */
  private async run(): Promise<void> {
    let droppedAt: number | undefined;
    let delay = reopenFirstDelayMs;
    for (;;) {
      const ctl = new AbortController();
      const stop = () => ctl.abort();
      this.abort.signal.addEventListener("abort", stop);
      this.streamAbort = ctl;
      try {
        const stream = this.calls.signals({ callId: this.callId }, { signal: ctl.signal });
        // One message at a time, in order: an offer must be set before the
        // candidates that follow it are added.
        for await (const m of stream) {
          if (droppedAt !== undefined) {
            droppedAt = undefined;
            delay = reopenFirstDelayMs;
            this.reopened++;
            this.log("Signals open again");
          }
          await this.handle(m);
        }
        return; // the call ended, or this side left it
      } catch (err) {
        const code = ConnectError.from(err).code;
        if (this.abort.signal.aborted || terminalCodes.has(code)) {
          throw err;
        }
        droppedAt ??= Date.now();
        if (Date.now() - droppedAt > reopenForMs) {
          throw err;
        }
        this.log(`Signals dropped (${errorText(err)}); opening it again`);
        await new Promise((ok) => setTimeout(ok, delay));
        delay = Math.min(delay * 2, reopenMaxDelayMs);
      } finally {
        this.abort.signal.removeEventListener("abort", stop);
      }
    }
  }

  /** dropSignals ends the current Signals stream as a network failure would; the session opens it again. */
  dropSignals(): void {
    this.streamAbort?.abort();
  }

  private async handle(m: SignalsResponse): Promise<void> {
    const s = m.signal;
    switch (s.case) {
      case "call":
        this.events.call?.(s.value);
        if (s.value.state === CallState.ENDED) {
          this.log("the call ended");
        }
        return;
      case "offer":
        return this.answer(s.value);
      case "candidate":
        return this.addCandidate(s.value);
      case "trackPublished": {
        const t = s.value;
        this.published.set(t.mid, { userId: t.userId, source: t.source, mid: t.mid, muted: t.muted });
        return;
      }
      case "trackUnpublished": {
        const t = this.receiving.get(s.value.mid);
        this.published.delete(s.value.mid);
        this.receiving.delete(s.value.mid);
        if (t !== undefined) {
          this.events.trackRemoved?.(t);
        }
        return;
      }
      case "muteChanged": {
        for (const t of this.receiving.values()) {
          if (t.userId === s.value.userId && t.source === s.value.source) {
            t.muted = s.value.muted;
            this.events.muteChanged?.(t);
          }
        }
        return;
      }
      case "participantJoined":
        this.log(`${s.value.userId} joined`);
        return;
      case "participantLeft":
        this.log(`${s.value.userId} left`);
        return;
    }
  }

  /** answer sets the server's offer, attaches local tracks to the send slots and answers. */
  private async answer(offer: SdpOffer): Promise<void> {
    await this.pc.setRemoteDescription({ type: "offer", sdp: offer.sdp });
    for (const [mid, source] of Object.entries(offer.sendMids)) {
      const tr = this.pc.getTransceivers().find((t) => t.mid === mid);
      const track = this.localTrack(source);
      if (tr === undefined || track === undefined) {
        continue; // a slot this client has nothing for (the screen) stays empty
      }
      tr.direction = "sendonly";
      if (tr.sender.track !== track) {
        await tr.sender.replaceTrack(track);
      }
    }
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    const sdp = this.pc.localDescription?.sdp ?? answer.sdp ?? "";
    await this.send({ case: "answer", value: { sdp, revision: offer.revision } });
    this.log(`answered offer ${offer.revision}${offer.iceRestart ? " (ICE restart)" : ""}`);
  }

  private async addCandidate(c: IceCandidate): Promise<void> {
    if (c.candidate === "") {
      return; // end of the server's candidates
    }
    try {
      await this.pc.addIceCandidate({
        candidate: c.candidate,
        sdpMid: c.sdpMid ?? null,
        sdpMLineIndex: c.sdpMlineIndex ?? null,
        usernameFragment: c.usernameFragment !== "" ? c.usernameFragment : null,
      });
    } catch (err) {
      // A candidate of an ICE generation already replaced is harmless.
      this.log(`addIceCandidate: ${errorText(err)}`);
    }
  }

  private localTrack(source: TrackSource): MediaStreamTrack | undefined {
    switch (source) {
      case TrackSource.MICROPHONE:
        return this.local.getAudioTracks()[0];
      case TrackSource.CAMERA:
        return this.local.getVideoTracks()[0];
      default:
        return undefined;
    }
  }

  private onTrack(ev: RTCTrackEvent): void {
    const mid = ev.transceiver.mid ?? "";
    const pub = this.published.get(mid);
    if (pub === undefined) {
      this.log(`a track on ${mid} nobody announced`);
      return;
    }
    const t: RemoteTrack = { ...pub, track: ev.track };
    this.receiving.set(mid, t);
    this.events.trackAdded?.(t);
  }

  /** remoteTracks are the tracks this side receives now. */
  remoteTracks(): RemoteTrack[] {
    return [...this.receiving.values()];
  }

  /** setMuted mutes or unmutes a local source and tells the others. */
  async setMuted(source: TrackSource, muted: boolean): Promise<void> {
    const track = this.localTrack(source);
    if (track !== undefined) {
      track.enabled = !muted;
    }
    await this.send({ case: "mute", value: { source, muted } });
  }

  /** hangUp leaves the call and closes the session. */
  async hangUp(): Promise<Call | undefined> {
    try {
      const res = await this.calls.hangUp({ callId: this.callId });
      return res.call;
    } finally {
      this.abort.abort();
    }
  }

  /** stats sums the connection's RTP statistics by direction and kind. */
  async stats(): Promise<CallStats> {
    const zero = (): InboundStats => ({ packetsReceived: 0, bytesReceived: 0, framesDecoded: 0, totalSamplesReceived: 0 });
    const out: CallStats = {
      connectionState: this.pc.connectionState,
      iceConnectionState: this.pc.iceConnectionState,
      inbound: { audio: zero(), video: zero() },
      outbound: { audio: { packetsSent: 0 }, video: { packetsSent: 0, framesEncoded: 0 } },
    };
    const report = await this.pc.getStats();
    const endpoint = (id: unknown): string => {
      const c = typeof id === "string" ? (report.get(id) as Record<string, unknown> | undefined) : undefined;
      return c === undefined ? "" : `${String(c.address ?? c.ip)}:${String(c.port)}`;
    };
    report.forEach((r: Record<string, unknown>) => {
      if (r.type === "transport" && typeof r.selectedCandidatePairId === "string") {
        const pair = report.get(r.selectedCandidatePairId) as Record<string, unknown> | undefined;
        if (pair !== undefined) {
          out.route = { local: endpoint(pair.localCandidateId), remote: endpoint(pair.remoteCandidateId) };
        }
      }
      const kind = r.kind === "audio" || r.kind === "video" ? r.kind : undefined;
      if (kind === undefined) {
        return;
      }
      if (r.type === "inbound-rtp") {
        const s = out.inbound[kind];
        s.packetsReceived += num(r.packetsReceived);
        s.bytesReceived += num(r.bytesReceived);
        s.framesDecoded += num(r.framesDecoded);
        s.totalSamplesReceived += num(r.totalSamplesReceived);
      } else if (r.type === "outbound-rtp") {
        out.outbound[kind].packetsSent += num(r.packetsSent);
        if (kind === "video") {
          out.outbound.video.framesEncoded += num(r.framesEncoded);
        }
      }
    });
    return out;
  }

  private async send(signal: SignalInit): Promise<void> {
    if (this.done) {
      return;
    }
    try {
      await this.calls.signal({ callId: this.callId, signal });
    } catch (err) {
      const code = ConnectError.from(err).code;
      // After the call ended (or the stream was replaced) signals have nowhere to go.
      if (this.done || code === Code.Canceled) {
        return;
      }
      // The call ended for this side while the signal was on its way: an
      // answer to an offer sent just before the end is refused as "not
      // joined". The server ends Signals then, and how that stream ends
      // says how the session ends, not this refusal.
      if (code === Code.FailedPrecondition || code === Code.NotFound) {
        this.log(`Signal refused (${errorText(err)}); Signals will say how the call ended`);
        return;
      }
      throw err;
    }
  }

  private finish(err?: Error): void {
    if (this.done) {
      return;
    }
    this.done = true;
    this.abort.abort();
    this.pc.close();
    for (const t of this.local.getTracks()) {
      t.stop();
    }
    this.events.ended?.(err);
  }

  private log(line: string): void {
    this.events.log?.(line);
  }
}

function num(v: unknown): number {
  return typeof v === "number" ? v : 0;
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** errorText is an error as a person should read it. */
export function errorText(err: unknown): string {
  if (err instanceof ConnectError) {
    return `${Code[err.code]}: ${err.rawMessage}`;
  }
  return toError(err).message;
}
