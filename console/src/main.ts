// The agents' console: sign in with a desk token, the live queue of the
// agent's stores, answer, and the controls of one call. Plain DOM, no framework.

import { CallRoom } from "./call";
import { type Call, Desk, type Taken } from "./desk";
import { type Claims, clock, mediaBadge, readClaims, tokenFromFragment } from "./format";

type CallState = "connecting" | "talking" | "on_hold" | "transferred";

interface Current {
  call: Call;
  taken: Taken;
  room: CallRoom;
  answeredAt: number; // Date.now()
  state: CallState;
  note: string;
}

const TOKEN_KEY = "hold-desk-token";
const NS_KEY = "hold-desk-noise-suppression"; // "off" when the agent turned it off
const BASE = ""; // the desk that served this page
const MUTE_AFTER_TRANSFER_MS = 1500; // after a transfer: once the hold audio is back

function el<T extends HTMLElement = HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (!found) {
    throw new Error(`the page has no #${id}`);
  }
  return found as T;
}

function make<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text = "",
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.className = className;
  e.textContent = text; // never innerHTML: notes and names come from other people
  return e;
}

let desk: Desk | null = null;
let claims: Claims | null = null;
let events: EventSource | null = null;
let calls: Call[] = [];
let current: Current | null = null;
let audioCtx: AudioContext | null = null;

// ---- one line of error, one of notice -------------------------------------------

function showError(line: string | null): void {
  const p = el("error");
  p.textContent = line ?? "";
  p.hidden = !line;
}

function showNotice(line: string | null): void {
  const p = el("notice");
  p.textContent = line ?? "";
  p.hidden = !line;
}

// ---- signing in -----------------------------------------------------------------

function signIn(token: string): void {
  let c: Claims;
  try {
    c = readClaims(token.trim());
  } catch (e) {
    showError((e as Error).message);
    return;
  }
  if (c.exp * 1000 <= Date.now()) {
    showError("this desk token has expired: ask for a new one");
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token.trim());
  claims = c;
  desk = new Desk(BASE, token.trim());
  showError(null);
  el("who").textContent = `${c.name} (${c.sub}) · ${c.stores.join(", ")}`;
  el("stores").replaceChildren(
    ...c.stores.map((s) => {
      const o = document.createElement("option");
      o.value = s;
      return o;
    }),
  );
  el("signin").hidden = true;
  el("signout").hidden = false;
  el("queue").hidden = false;
  events?.close();
  events = desk.events(
    (list) => {
      calls = list;
      if (el("error").textContent?.startsWith("the live list")) {
        showError(null); // reconnected
      }
      renderQueue();
    },
    (line) => showError(line),
  );
}

function signOut(): void {
  events?.close();
  events = null;
  void current?.room.leave();
  sessionStorage.removeItem(TOKEN_KEY);
  desk = null;
  claims = null;
  calls = [];
  el("who").textContent = "";
  el("signout").hidden = true;
  el("queue").hidden = true;
  el("call").hidden = true;
  el("signin").hidden = false;
  renderQueue();
}

// ---- the queue --------------------------------------------------------------------

function renderQueue(): void {
  const list = el("calls");
  const focused = (document.activeElement as HTMLElement | null)?.dataset.callId;
  el("count").textContent = String(calls.length);
  el("empty").hidden = calls.length > 0;
  const busy = current !== null && current.state !== "transferred";
  list.replaceChildren(
    ...calls.map((c, i) => {
      const li = make("li", "call");
      li.dataset.callId = c.id;
      const top = make("div", "line");
      top.append(
        make("span", "store", c.store),
        make("span", "caller", c.caller_number || c.caller),
        make("span", "position", `#${c.position}`),
      );
      const wait = make("span", "wait", clock(Date.now() - c.waiting_since));
      wait.dataset.since = String(c.waiting_since);
      wait.setAttribute("aria-label", "waiting");
      const badge = mediaBadge(c.media);
      const b = make("span", `badge ${badge.tone}`, badge.text);
      b.dataset.media = c.media;
      const second = make("div", "line");
      second.append(wait, b);
      li.append(top, second);
      if (c.transferred) {
        const by = c.transferred_by ? ` by ${c.transferred_by}` : "";
        const note = c.transfer_note ? `: ${c.transfer_note}` : "";
        const offer = c.offered_to ? ` (offered to ${c.offered_to})` : "";
        li.append(make("p", "note", `Transferred${by}${note}${offer}`));
      }
      if (c.requeued) {
        li.append(make("p", "note", "Back in line: the agent who took it left"));
      }
      const button = make("button", "answer", "Answer");
      button.type = "button";
      button.dataset.callId = c.id;
      const offeredElsewhere = c.offered_to !== undefined && c.offered_to !== claims?.sub;
      button.disabled = busy || offeredElsewhere;
      if (i === 0) {
        button.accessKey = "a";
      }
      button.addEventListener("click", () => void answer(c));
      li.append(button);
      return li;
    }),
  );
  if (focused) {
    list.querySelector<HTMLButtonElement>(`button[data-call-id="${focused}"]`)?.focus();
  }
}

function tick(): void {
  const now = Date.now();
  for (const w of document.querySelectorAll<HTMLElement>("#calls .wait")) {
    w.textContent = clock(now - Number(w.dataset.since));
  }
  if (current) {
    el("call-timer").textContent = clock(now - current.answeredAt);
  }
}

// ---- a call ----------------------------------------------------------------------------

async function answer(call: Call): Promise<void> {
  if (!desk) {
    return;
  }
  showError(null);
  showNotice(null);
  if (current) {
    if (current.state !== "transferred") {
      return;
    }
    await current.room.leave(); // still in a call we transferred: leave it first
  }
  // made in the click, so that the caller's audio may play and be measured
  audioCtx ??= new AudioContext();
  void audioCtx.resume();
  const r = await desk.request<Taken>("POST", `/calls/${call.id}/take`);
  if (!r.ok) {
    showError(r.takenBy ? `Taken by ${r.takenBy}: ${r.error}` : r.error);
    return;
  }
  const room = new CallRoom(
    audioCtx,
    el("audio"),
    {
      level: showLevel,
      ended: (why) => {
        if (current?.room === room) {
          current = null;
          showNotice(why);
          renderCall();
          renderQueue();
        }
      },
    },
    el<HTMLInputElement>("noise-suppression").checked,
  );
  current = { call, taken: r.data, room, answeredAt: Date.now(), state: "connecting", note: "" };
  renderCall();
  renderQueue();
  try {
    await room.join(r.data.url, r.data.token);
  } catch (e) {
    showError(`could not join the call (${String(e)}): it goes back in line`);
    await desk.request("POST", `/calls/${call.id}/transfer`, {
      note: "the agent's console could not join",
    });
    await room.leave();
    return;
  }
  if (current?.room === room) {
    current.state = "talking";
    renderCall();
  }
}

function showLevel(db: number): void {
  const meter = el<HTMLMeterElement>("level");
  meter.value = Math.max(-60, Math.min(0, db));
  meter.dataset.dbfs = db.toFixed(1);
  el("level-db").textContent = db <= -60 ? "silent" : `${Math.round(db)} dBFS`;
}

const STATUS: Record<CallState, string> = {
  connecting: "Joining the call…",
  talking: "Talking",
  on_hold: "On hold: the caller hears hold audio and not you",
  transferred: "Transferred",
};

function renderCall(): void {
  const section = el("call");
  section.hidden = current === null;
  if (!current) {
    section.dataset.state = "";
    el("level-db").textContent = "no audio yet";
    el<HTMLMeterElement>("level").value = -60;
    delete el("level").dataset.dbfs;
    return;
  }
  const { call, state } = current;
  section.dataset.state = state;
  section.dataset.callId = call.id;
  el("call-caller").textContent = call.caller_number || call.caller;
  el("call-store").textContent = current.taken.store;
  el("call-status").textContent = current.note || STATUS[state];
  const talking = state === "talking";
  const mute = el<HTMLButtonElement>("mute");
  mute.hidden = state === "transferred";
  mute.disabled = state === "connecting";
  mute.textContent = current.room.muted && state !== "connecting" ? "Unmute" : "Mute";
  mute.setAttribute("aria-pressed", String(current.room.muted && state !== "connecting"));
  el<HTMLButtonElement>("hold").hidden = state === "on_hold" || state === "transferred";
  el<HTMLButtonElement>("hold").disabled = !talking;
  el<HTMLButtonElement>("resume").hidden = state !== "on_hold";
  el<HTMLButtonElement>("leave").hidden = state !== "transferred";
  el("transfer-form").hidden = state === "transferred";
  el("hangup-form").hidden = state === "transferred";
  for (const b of section.querySelectorAll<HTMLButtonElement>("form button")) {
    b.disabled = state === "connecting";
  }
}

async function control(action: "hold" | "resume", next: CallState): Promise<void> {
  if (!desk || !current) {
    return;
  }
  const cur = current;
  showError(null);
  const r = await desk.request("POST", `/calls/${cur.call.id}/${action}`);
  if (!r.ok) {
    showError(r.error);
    return;
  }
  cur.state = next;
  renderCall();
}

async function toggleMute(): Promise<void> {
  if (!current) {
    return;
  }
  await current.room.setMuted(!current.room.muted);
  renderCall();
}

async function transfer(form: HTMLFormElement): Promise<void> {
  if (!desk || !current) {
    return;
  }
  const cur = current;
  const data = new FormData(form);
  const body: Record<string, string> = {};
  for (const k of ["store", "agent", "note"]) {
    const v = String(data.get(k) ?? "").trim();
    if (v) {
      body[k] = v;
    }
  }
  showError(null);
  const r = await desk.request<{ store: string; offered_to?: string }>(
    "POST",
    `/calls/${cur.call.id}/transfer`,
    body,
  );
  if (!r.ok) {
    showError(r.error);
    return;
  }
  // The hold worker cuts this microphone from the caller as it brings the
  // hold audio back (a few hundred ms). Muting at once would leave the caller
  // in silence until then, so the microphone is muted only after that.
  window.setTimeout(() => {
    if (current === cur && cur.state === "transferred") {
      void cur.room.setMuted(true);
    }
  }, MUTE_AFTER_TRANSFER_MS);
  const offered = r.data.offered_to ? `, offered to ${r.data.offered_to}` : "";
  cur.state = "transferred";
  cur.note =
    `Transferred to ${r.data.store}${offered}: the caller hears hold audio. You stay in ` +
    "the room, cut from the caller, until the next agent takes it.";
  form.reset();
  renderCall();
  renderQueue();
}

async function hangUp(form: HTMLFormElement): Promise<void> {
  if (!desk || !current) {
    return;
  }
  const cur = current;
  const reason = String(new FormData(form).get("reason") ?? "").trim() || "served";
  showError(null);
  const r = await desk.request("POST", `/calls/${cur.call.id}/hangup`, { reason });
  if (!r.ok) {
    showError(r.error);
    return;
  }
  form.reset();
  await cur.room.leave();
}

// ---- wiring -------------------------------------------------------------------------

function start(): void {
  el("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    signIn(el<HTMLInputElement>("token").value);
    el<HTMLInputElement>("token").value = "";
  });
  el("signout").addEventListener("click", signOut);
  el("mute").addEventListener("click", () => void toggleMute());
  el("hold").addEventListener("click", () => void control("hold", "on_hold"));
  el("resume").addEventListener("click", () => void control("resume", "talking"));
  el("leave").addEventListener("click", () => void current?.room.leave());
  el("transfer-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    void transfer(ev.currentTarget as HTMLFormElement);
  });
  el("hangup-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    void hangUp(ev.currentTarget as HTMLFormElement);
  });
  const ns = el<HTMLInputElement>("noise-suppression");
  ns.checked = localStorage.getItem(NS_KEY) !== "off";
  ns.addEventListener("change", () => localStorage.setItem(NS_KEY, ns.checked ? "on" : "off"));
  window.setInterval(tick, 1000);

  // a token handed over in the fragment (#token=...) is taken out of the URL at once
  const handed = tokenFromFragment(location.hash);
  if (handed) {
    history.replaceState(null, "", location.pathname + location.search);
  }
  const token = handed ?? sessionStorage.getItem(TOKEN_KEY);
  if (token) {
    signIn(token);
  } else {
    el<HTMLInputElement>("token").focus();
  }
}

start();
