// The desk's HTTP API (worker/desk.py), as the console uses it.

export interface Call {
  id: string;
  room: string;
  store: string;
  caller: string; // masked
  caller_number?: string; // stores with show_caller_number only
  waiting_since: number; // unix ms
  position: number;
  state: string;
  media: string;
  transferred: boolean;
  transfer_note?: string;
  transferred_by?: string;
  offered_to?: string;
  requeued?: number;
}

export interface Taken {
  id: string;
  room: string;
  store: string;
  taken_at: number;
  url: string;
  token: string;
}

export type Result<T> =
  | { ok: true; data: T }
  | { ok: false; status: number; error: string; takenBy?: string };

export class Desk {
  constructor(
    private readonly base: string,
    private readonly token: string,
  ) {}

  /** One request; any refusal becomes the desk's one-line `error`. */
  async request<T>(method: string, path: string, body?: object): Promise<Result<T>> {
    const headers: Record<string, string> = { Authorization: `Bearer ${this.token}` };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
    }
    let resp: Response;
    try {
      resp = await fetch(`${this.base}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      return { ok: false, status: 0, error: `the desk is unreachable (${String(e)})` };
    }
    let data: unknown = null;
    try {
      data = await resp.json();
    } catch {
      // not JSON: a proxy's page, say
    }
    if (resp.ok) {
      return { ok: true, data: data as T };
    }
    const d = (data ?? {}) as { error?: unknown; taken_by?: unknown };
    return {
      ok: false,
      status: resp.status,
      error: typeof d.error === "string" ? d.error : `HTTP ${resp.status}`,
      takenBy: typeof d.taken_by === "string" ? d.taken_by : undefined,
    };
  }

  /** The live list (`GET /events`, Server-Sent Events). `onProblem` gets a
   * line when the stream fails for good (a refused token) or ends (expiry). */
  events(onCalls: (calls: Call[]) => void, onProblem: (line: string) => void): EventSource {
    const es = new EventSource(
      `${this.base}/events?access_token=${encodeURIComponent(this.token)}`,
    );
    es.addEventListener("calls", (ev) => {
      const data = JSON.parse((ev as MessageEvent<string>).data) as { calls: Call[] };
      onCalls(data.calls);
    });
    es.addEventListener("expired", () => {
      es.close();
      onProblem("your desk token has expired: sign in again");
    });
    es.addEventListener("error", () => {
      if (es.readyState === EventSource.CLOSED) {
        // the browser gave up (a 401, say): ask the desk why, in one line
        void this.request<unknown>("GET", "/calls").then((r) => {
          onProblem(r.ok ? "the live list stopped: reload the page" : r.error);
        });
      } else {
        onProblem("the live list was cut: reconnecting");
      }
    });
    return es;
  }
}
