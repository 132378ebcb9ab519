// Pure helpers of the console: no DOM, no network.

export interface Claims {
  sub: string;
  name: string;
  stores: string[];
  exp: number; // unix seconds
}

/** The claims of a desk token, read without verifying it (the desk verifies
 * every request); throws on something that is not a desk token. */
export function readClaims(token: string): Claims {
  const parts = token.split(".");
  if (parts.length !== 3) {
    throw new Error("not a desk token (a JWT has three parts)");
  }
  let claims: unknown;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = new TextDecoder().decode(
      Uint8Array.from(atob(b64.padEnd(Math.ceil(b64.length / 4) * 4, "=")), (c) => c.charCodeAt(0)),
    );
    claims = JSON.parse(text);
  } catch {
    throw new Error("not a desk token (its claims do not decode)");
  }
  const c = claims as Partial<Claims>;
  if (
    typeof c.sub !== "string" ||
    typeof c.exp !== "number" ||
    !Array.isArray(c.stores) ||
    !c.stores.every((s) => typeof s === "string")
  ) {
    throw new Error("not a desk token (it needs sub, stores and exp)");
  }
  return {
    sub: c.sub,
    name: typeof c.name === "string" ? c.name : c.sub,
    stores: c.stores,
    exp: c.exp,
  };
}

/** `#token=...` (or `#access_token=...`) of a URL fragment, if any. */
export function tokenFromFragment(hash: string): string | null {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  return params.get("token") || params.get("access_token");
}

/** A duration as m:ss, or h:mm:ss from an hour on. */
export function clock(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

export type Tone = "ok" | "pending" | "bad";

/** The media badge of a waiting call: the hold worker's one-way audio verdict. */
export function mediaBadge(media: string): { text: string; tone: Tone } {
  switch (media) {
    case "ok":
      return { text: "audio ok", tone: "ok" };
    case "pending":
    case "":
      return { text: "checking audio", tone: "pending" };
    case "no_inbound_media":
      return { text: "no audio from the caller", tone: "bad" };
    case "inbound_stopped":
      return { text: "caller's audio stopped", tone: "bad" };
    case "inbound_digital_silence":
      return { text: "caller's line is silent", tone: "bad" };
    case "outbound_not_subscribed":
      return { text: "caller cannot hear us", tone: "bad" };
    default:
      return { text: media.replace(/_/g, " "), tone: "bad" };
  }
}

/** RMS level of samples in dBFS, floored at -100. */
export function dbfs(samples: Float32Array): number {
  let e = 0;
  for (let i = 0; i < samples.length; i++) {
    e += samples[i] * samples[i];
  }
  const rms = Math.sqrt(e / Math.max(1, samples.length));
  return rms > 1e-5 ? 20 * Math.log10(rms) : -100;
}
