// One answered call: the LiveKit room joined with the token the desk's take
// returned, the microphone published, the caller's audio played and measured.

import {
  DisconnectReason,
  type Participant,
  ParticipantKind,
  type RemoteTrack,
  Room,
  RoomEvent,
  Track,
} from "livekit-client";
import { dbfs } from "./format";

export interface CallEvents {
  /** The caller's audio level (dBFS), every LEVEL_MS while their audio plays. */
  level(db: number): void;
  /** The call is over for this console, with why. */
  ended(why: string): void;
}

const LEVEL_MS = 100;

function disconnectedWhy(reason: DisconnectReason | undefined): string {
  switch (reason) {
    case DisconnectReason.PARTICIPANT_REMOVED:
      return "you left the call (the desk removed you: the next agent took it, or it was hung up)";
    case DisconnectReason.ROOM_DELETED:
    case DisconnectReason.ROOM_CLOSED:
      return "the call has ended";
    case DisconnectReason.CLIENT_INITIATED:
      return "you left the call";
    case DisconnectReason.DUPLICATE_IDENTITY:
      return "you joined this call from another tab";
    default:
      return "the connection to the call was lost";
  }
}

export class CallRoom {
  readonly room: Room;
  private analyser: AnalyserNode | null = null;
  private timer: number | undefined;
  private readonly audio: HTMLElement;
  private over = false;

  /** `ctx`: an AudioContext made in the click that answered (autoplay rules).
   * `noiseSuppression`: the browser's, on the microphone (it also removes a
   * steady tone after some seconds, such as a test signal). */
  constructor(
    private readonly ctx: AudioContext,
    audioBox: HTMLElement,
    private readonly on: CallEvents,
    noiseSuppression = true,
  ) {
    this.audio = audioBox;
    this.room = new Room({
      adaptiveStream: false,
      dynacast: false,
      disconnectOnPageLeave: true, // a closed tab leaves at once: hold audio is back
      audioCaptureDefaults: { echoCancellation: true, autoGainControl: true, noiseSuppression },
    });
    this.room
      .on(RoomEvent.TrackSubscribed, (track, _pub, participant) =>
        this.subscribed(track, participant),
      )
      .on(RoomEvent.TrackUnsubscribed, (track) => {
        for (const el of track.detach()) {
          el.remove();
        }
      })
      .on(RoomEvent.ParticipantDisconnected, (p) => {
        if (p.kind === ParticipantKind.SIP) {
          this.end("the caller hung up");
        }
      })
      .on(RoomEvent.Disconnected, (reason) => this.end(disconnectedWhy(reason)));
  }

  /** Join and publish the microphone. */
  async join(url: string, token: string): Promise<void> {
    await this.room.connect(url, token, { autoSubscribe: true });
    await this.room.startAudio();
    await this.room.localParticipant.setMicrophoneEnabled(true);
  }

  get muted(): boolean {
    return !this.room.localParticipant.isMicrophoneEnabled;
  }

  async setMuted(muted: boolean): Promise<void> {
    await this.room.localParticipant.setMicrophoneEnabled(!muted);
  }

  async leave(): Promise<void> {
    await this.room.disconnect();
  }

  private subscribed(track: RemoteTrack, participant: Participant): void {
    if (track.kind !== Track.Kind.Audio) {
      return;
    }
    this.audio.append(track.attach()); // play it (and Chrome feeds Web Audio only then)
    if (participant.kind === ParticipantKind.SIP) {
      this.measure(track.mediaStreamTrack);
    }
  }

  /** The caller's level through a Web Audio AnalyserNode on their track. */
  private measure(track: MediaStreamTrack): void {
    const source = this.ctx.createMediaStreamSource(new MediaStream([track]));
    const analyser = this.ctx.createAnalyser();
    analyser.fftSize = 2048;
    source.connect(analyser);
    this.analyser = analyser;
    const buf = new Float32Array(analyser.fftSize);
    window.clearInterval(this.timer);
    this.timer = window.setInterval(() => {
      if (this.analyser) {
        this.analyser.getFloatTimeDomainData(buf);
        this.on.level(dbfs(buf));
      }
    }, LEVEL_MS);
  }

  private end(why: string): void {
    if (this.over) {
      return;
    }
    this.over = true;
    window.clearInterval(this.timer);
    this.analyser?.disconnect();
    this.analyser = null;
    this.audio.replaceChildren();
    void this.room.disconnect(); // nothing when already disconnected
    this.on.ended(why);
  }
}
