// Types of the pushgate browser client (pushgate.js).

/** The sub-protocol that selects the gateway's envelope mode. */
export declare const PROTOCOL: "pushgate.v1";

/** One pushed message. */
export interface Push {
  event: string;
  /** The user's sequence number; null for a broadcast (which has none). */
  seq: number | null;
  /** When the gateway accepted the push, in milliseconds since the epoch. */
  ts: number;
  /** Text for a text push, bytes for a binary push. */
  data: string | Uint8Array;
}

/** After a resume: the replay covered `from`..`to`; `complete: false` means history no longer reached back, so messages were lost. */
export interface Recovered {
  from: number;
  to: number;
  complete: boolean;
}

/** An error message from the gateway (codes such as "bad_event", "too_many_events", "auth_unavailable"), or one of the client's own: "token_unavailable" (getToken failed), "token_expired", "protocol", "bad_frame", "bad_url". */
export interface PushgateError {
  code: string;
  message: string;
}

export type State = "connecting" | "connected" | "disconnected" | "closed";

/** Why the state changed, when a close caused it. `delay` is the wait before the next attempt (state "disconnected"). */
export interface StateInfo {
  code?: number;
  reason?: string;
  delay?: number;
}

export interface PushgateOptions {
  /** A fixed token (with `--auth none`, the user id). */
  token?: string;
  /** Called for a token before connecting and before the current JWT expires. */
  getToken?: () => string | Promise<string>;
  /** Events to register for. */
  events?: string[];
  /** Resume from this seq on the first connection (e.g. a `lastSeq` saved by an earlier page). */
  since?: number;
  /** The epoch `since` belongs to (a `client.epoch` saved with the `lastSeq`). */
  epoch?: string;
  /** Smallest reconnect delay in ms (default 500). */
  minReconnectDelay?: number;
  /** Largest reconnect delay in ms (default 30000). */
  maxReconnectDelay?: number;
  /** A connection not registered within this many ms is dropped and retried (default 10000). */
  connectTimeout?: number;
  /** Send a ping every this many ms while connected; 0 disables (default 25000). */
  pingInterval?: number;
  /** Reconnect when nothing arrives within this many ms of a ping (default 10000). */
  pongTimeout?: number;
  /** Refresh a JWT this many ms before its `exp`, at the latest half-way through its remaining life (default 30000). */
  refreshMargin?: number;
}

export interface PushgateEvents {
  push: (push: Push) => void;
  state: (state: State, info: StateInfo) => void;
  error: (error: PushgateError) => void;
  recovered: (recovered: Recovered) => void;
  /** The events the gateway confirms this connection has, after each register, subscribe and unsubscribe. */
  subscriptions: (events: string[]) => void;
}

export declare class PushgateClient {
  constructor(url: string, options: PushgateOptions);
  readonly url: string;
  /** The seq to resume from: the highest seq received. */
  readonly lastSeq: number;
  /** The epoch of the stream `lastSeq` belongs to; null before the first registration. */
  readonly epoch: string | null;
  readonly state: State;
  /** The events this client wants, kept across reconnects. */
  readonly events: string[];
  on<K extends keyof PushgateEvents>(type: K, listener: PushgateEvents[K]): () => void;
  off<K extends keyof PushgateEvents>(type: K, listener: PushgateEvents[K]): void;
  connect(): void;
  subscribe(events: string[]): void;
  unsubscribe(events: string[]): void;
  close(): void;
}

export default PushgateClient;

/** Delay in ms before reconnect attempt `attempt`: uniform in [min, min(max, min·2^(attempt+1))]. */
export declare function reconnectDelay(attempt: number, min?: number, max?: number, random?: () => number): number;
/** "reconnect", "token" (4002) or "stop" for a close code. */
export declare function closeAction(code: number): "reconnect" | "token" | "stop";
/** The `reconnect_after_ms=N` hint of a close reason, or null. */
export declare function reconnectHint(reason: string): number | null;
/** Decodes a binary push frame. */
export declare function decodeBinaryPush(frame: ArrayBuffer | Uint8Array): Push & { data: Uint8Array };
/** A JWT's `exp` in ms since the epoch (not verified), or null. */
export declare function tokenExpiry(token: string | null | undefined): number | null;
/** Ms to wait before refreshing a token expiring at `expiresAt`. */
export declare function refreshDelay(expiresAt: number, now?: number, margin?: number): number;
