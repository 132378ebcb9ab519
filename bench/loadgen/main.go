// loadgen: N synthetic SIP callers against a LiveKit hold-music worker, for a
// capacity benchmark.
//
// Per room it joins a "caller" whose token says participant kind SIP with the
// attributes livekit-sip would set (sip.phoneNumber, sip.callID,
// sip.callStatus=active, sip.trunkPhoneNumber, store.id), has -agent-name
// dispatched to the room the way livekit-sip's dispatch rule does it (the
// caller's token carries a room configuration naming the agent, so the room
// is created with the dispatch; -dispatch api instead creates an explicit
// dispatch through the API right after the caller connected), and
// publishes one Opus audio track: a two-tone signal (697 + 1209 Hz, -20 dBFS),
// encoded once at start into a one-second loop of 50 packets and replayed with
// running sequence numbers and timestamps. One shared goroutine writes the next
// packet of every track every 20 ms (no encoder per room, no goroutine per
// track) and counts its own late wake-ups.
//
// The caller subscribes only to the audio of participants of kind AGENT (the
// hold worker; the baseline worker looks the same) and records, without
// decoding, the arrival time and payload size of every packet. The first
// -decode-rooms rooms are also decoded to a level per 100 ms window, to check
// that the music is audible.
//
// Phases (fixed lengths, from flags) are announced on stdout, one JSON object a
// line, so a driver can measure the worker's CPU exactly between steady_start
// and steady_end:
//
//	{"event":"joined","t":1700000000.123,"rooms":40,"held":40}
//	{"event":"steady_start","t":...}  {"event":"steady_end","t":...}
//	{"event":"handoff_start","t":...} {"event":"handoff_end","t":...}
//	{"event":"done","t":...}
//
// Phase 1: join every caller (-join-interval apart), wait until every room
// hears its first hold packet or -answer-timeout, print joined. Phase 2:
// -settle s, steady_start, -steady s, steady_end. Phase 3 (with -handoff): one
// agent per room (identity agent-bench-<runtag>-<i>, kind standard,
// -agent-interval apart) publishes a 1700 Hz tone the same way; handoff_start
// at the first agent's join, handoff_end -handoff-wait s after the last
// agent's first packet; the worker should fade out and unpublish. Phase 4:
// callers set sip.callStatus=hangup and leave, agents leave, done.
//
// Hold audio at the caller is a packet with a payload > 10 bytes (smaller ones
// are DTX) that is not livekit-server's own Opus silence frame (0xf8 0xff 0xfe
// and zeros, sent for a while when a track is muted or unpublished); for gaps
// and handoff it must also have another one within 100 ms (a lone one is a DTX
// comfort-noise update, every 400 ms during silence).
//
// The report (-json PATH) holds per room: dead air (caller connected -> first
// hold audio packet), steady-window packets/bytes, gap share (stretches
// > 100 ms without hold audio, minus 20 ms each, over the window), longest
// gap, handoff (agent's first packet sent -> last hold audio packet after
// which none came for >= 1 s; decoded rooms also give handoff_audible_ms from
// the levels); the generator's own CPU (getrusage) in the
// steady window and overall, its ticks, late ticks (> 10 ms) and worst
// lateness; and a summary (answered rooms, p50/p95 dead air and handoff,
// mean/max gap share).
//
// Build: bench/loadgen/build.sh (-> .devstack/bin/loadgen). Run inside the
// stack's network namespace, e.g.
//
//	ip netns exec holdtest .devstack/bin/loadgen -rooms 20 -agent-name loadgen-test -json /tmp/lg.json
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	protoLogger "github.com/livekit/protocol/logger"
	lksdk "github.com/livekit/server-sdk-go/v2"
)

type config struct {
	URL, APIKey, APISecret string
	Rooms                  int
	Prefix                 string
	RunTag                 string
	AgentName              string
	JoinInterval           time.Duration
	Store                  string
	TrunkNumber            string
	AnswerTimeout          time.Duration
	Settle                 time.Duration
	Steady                 time.Duration
	Handoff                bool
	AgentInterval          time.Duration
	HandoffWait            time.Duration
	DecodeRooms            int
	JSONPath               string
	LogLevel               string
	DumpPath               string
	CPUProfile             string
	SinglePC               bool
	Procs                  int
	Interceptors           bool
	Dispatch               string
}

func parseFlags() config {
	var c config
	flag.StringVar(&c.URL, "url", os.Getenv("LIVEKIT_URL"), "LiveKit URL (LIVEKIT_URL)")
	flag.StringVar(&c.APIKey, "api-key", os.Getenv("LIVEKIT_API_KEY"), "API key (LIVEKIT_API_KEY)")
	flag.StringVar(&c.APISecret, "api-secret", os.Getenv("LIVEKIT_API_SECRET"), "API secret (LIVEKIT_API_SECRET)")
	flag.IntVar(&c.Rooms, "rooms", 5, "number of rooms (callers)")
	flag.StringVar(&c.Prefix, "prefix", "lg-", "room name prefix: rooms are <prefix><runtag>-<i>")
	flag.StringVar(&c.RunTag, "runtag", "", "run tag (digits; default: 4 random digits)")
	flag.StringVar(&c.AgentName, "agent-name", "", "agent name of the hold worker to dispatch (empty: no dispatch)")
	flag.StringVar(&c.Dispatch, "dispatch", "token", "token: the caller's token names the agent in its room configuration (as livekit-sip's dispatch rule); api: CreateDispatch after the caller joined")
	flag.DurationVar(&c.JoinInterval, "join-interval", 100*time.Millisecond, "time between two callers' joins")
	flag.StringVar(&c.Store, "store", "", "store.id attribute of the callers (optional)")
	flag.StringVar(&c.TrunkNumber, "trunk-number", "", "sip.trunkPhoneNumber attribute of the callers (optional)")
	flag.DurationVar(&c.AnswerTimeout, "answer-timeout", 60*time.Second, "how long to wait for every room's first hold packet")
	settle := flag.Float64("settle", 3, "seconds between joined and steady_start")
	steady := flag.Float64("steady", 20, "seconds of the steady window")
	flag.BoolVar(&c.Handoff, "handoff", true, "let an agent join every room after the steady window")
	flag.DurationVar(&c.AgentInterval, "agent-interval", 100*time.Millisecond, "time between two agents' joins")
	handoffWait := flag.Float64("handoff-wait", 5, "seconds to watch after the last agent's first packet")
	flag.IntVar(&c.DecodeRooms, "decode-rooms", 2, "decode the hold audio of the first K rooms to levels")
	flag.StringVar(&c.JSONPath, "json", "", "write the JSON report here")
	flag.StringVar(&c.DumpPath, "dump", "", "debug: write every room's received packets (ms since its caller joined, payload size) as JSON here")
	flag.StringVar(&c.CPUProfile, "cpuprofile", "", "debug: write a Go CPU profile of the whole run here")
	flag.IntVar(&c.Procs, "procs", 0, "GOMAXPROCS for the generator (0: Go's default)")
	flag.BoolVar(&c.SinglePC, "single-pc", false, "one peer connection per participant (publish and subscribe on it)")
	flag.BoolVar(&c.Interceptors, "interceptors", true, "the SDK's default interceptors (NACK, TWCC, RTCP reports)")
	flag.StringVar(&c.LogLevel, "log-level", "error", "SDK / pion log level (debug|info|warn|error)")
	flag.Parse()
	c.Settle = secs(*settle)
	c.Steady = secs(*steady)
	c.HandoffWait = secs(*handoffWait)
	if c.RunTag == "" {
		c.RunTag = fmt.Sprintf("%04d", rand.IntN(10000))
	}
	if c.Dispatch != "token" && c.Dispatch != "api" {
		fmt.Fprintf(os.Stderr, "loadgen: -dispatch must be token or api, not %q\n", c.Dispatch)
		os.Exit(2)
	}
	return c
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// rxPkt is one received hold packet: arrival (ns since start) and payload size.
type rxPkt struct {
	at    int64
	size  uint16
	audio bool // payload > 10 bytes and not the SFU's silence frame
}

type roomRun struct {
	idx                    int
	name, caller, agent    string
	callerRoom, agentRoom  *lksdk.Room
	callerTx, agentTx      *sender
	connectedAt            int64 // ns since start, 0: not connected
	joinedUnix             float64
	connectErr, dispatch   string
	agentErr               string
	agentJoined            int64
	firstBig               atomic.Int64
	workerJoined           atomic.Int64 // ns since start the hold worker joined (0: not seen)
	mu                     sync.Mutex
	rx                     []rxPkt
	meter                  *levelMeter
	holdUnpublishedAt      int64
	holdTrackSubscriptions atomic.Int32
}

type gen struct {
	cfg       config
	start     time.Time
	tk        *ticker
	callerArr [][]byte
	agentArr  [][]byte
	dispatch  *lksdk.AgentDispatchClient
	outMu     sync.Mutex
	phases    map[string]float64
}

func (g *gen) now() int64 { return int64(time.Since(g.start)) }

func (g *gen) unix(ns int64) float64 {
	return float64(g.start.Add(time.Duration(ns)).UnixNano()) / 1e9
}

func (g *gen) emit(event string, extra map[string]any) {
	t := float64(time.Now().UnixNano()) / 1e9
	m := map[string]any{"event": event, "t": t}
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	g.outMu.Lock()
	g.phases[event] = t
	_, _ = os.Stdout.Write(append(b, '\n'))
	g.outMu.Unlock()
}

func (g *gen) token(room, identity string, kind livekit.ParticipantInfo_Kind, attrs map[string]string) (string, error) {
	yes := true
	at := auth.NewAccessToken(g.cfg.APIKey, g.cfg.APISecret)
	at.SetVideoGrant(&auth.VideoGrant{
		RoomJoin: true, Room: room,
		CanPublish: &yes, CanSubscribe: &yes, CanUpdateOwnMetadata: &yes,
	}).SetIdentity(identity).SetName(identity).SetKind(kind).SetValidFor(2 * time.Hour)
	if len(attrs) > 0 {
		at.SetAttributes(attrs)
	}
	if kind == livekit.ParticipantInfo_SIP && g.cfg.AgentName != "" && g.cfg.Dispatch == "token" {
		at.SetRoomConfig(&livekit.RoomConfiguration{
			Agents: []*livekit.RoomAgentDispatch{{AgentName: g.cfg.AgentName, Metadata: "loadgen"}},
		})
	}
	return at.ToJWT()
}

func (g *gen) connectOpts() []lksdk.ConnectOption {
	opts := []lksdk.ConnectOption{lksdk.WithAutoSubscribe(false)}
	if g.cfg.SinglePC {
		opts = append(opts, lksdk.WithSinglePeerConnection())
	}
	if !g.cfg.Interceptors {
		opts = append(opts, lksdk.WithIncludeDefaultInterceptors(false))
	}
	return opts
}

func publishLoop(room *lksdk.Room, loop [][]byte) (*lksdk.LocalTrack, error) {
	track, err := lksdk.NewLocalTrack(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: sampleRate, Channels: 2,
		SDPFmtpLine: "minptime=10;useinbandfec=1",
	})
	if err != nil {
		return nil, err
	}
	_, err = room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{
		Name: "microphone", Source: livekit.TrackSource_MICROPHONE,
	})
	return track, err
}

func isHoldPublication(pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) bool {
	return rp.Kind() == lksdk.ParticipantAgent && pub.Kind() == lksdk.TrackKindAudio
}

func (g *gen) joinCaller(r *roomRun) {
	callID := fmt.Sprintf("SCL_lg%016x", rand.Uint64())
	attrs := map[string]string{
		"sip.phoneNumber": "+1777" + g.cfg.RunTag + fmt.Sprintf("%04d", r.idx),
		"sip.callID":      callID,
		"sip.callStatus":  "active",
	}
	if g.cfg.TrunkNumber != "" {
		attrs["sip.trunkPhoneNumber"] = g.cfg.TrunkNumber
	}
	if g.cfg.Store != "" {
		attrs["store.id"] = g.cfg.Store
	}
	tok, err := g.token(r.name, r.caller, livekit.ParticipantInfo_SIP, attrs)
	if err != nil {
		r.connectErr = err.Error()
		return
	}
	cb := lksdk.NewRoomCallback()
	cb.OnTrackPublished = func(pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		if isHoldPublication(pub, rp) {
			_ = pub.SetSubscribed(true)
		}
	}
	cb.OnTrackUnpublished = func(pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		if isHoldPublication(pub, rp) {
			r.mu.Lock()
			r.holdUnpublishedAt = g.now()
			r.mu.Unlock()
		}
	}
	cb.OnParticipantConnected = func(rp *lksdk.RemoteParticipant) {
		if rp.Kind() == lksdk.ParticipantAgent {
			r.workerJoined.CompareAndSwap(0, g.now())
		}
	}
	cb.OnTrackSubscribed = func(track *webrtc.TrackRemote, pub *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
		if rp.Kind() == lksdk.ParticipantAgent && track.Kind() == webrtc.RTPCodecTypeAudio {
			go g.readHold(r, track)
		}
	}
	room, err := lksdk.ConnectToRoomWithToken(g.cfg.URL, tok, cb, g.connectOpts()...)
	if err != nil {
		r.connectErr = err.Error()
		return
	}
	r.connectedAt = g.now()
	r.joinedUnix = g.unix(r.connectedAt)
	r.callerRoom = room
	for _, rp := range room.GetRemoteParticipants() {
		if rp.Kind() == lksdk.ParticipantAgent { // there before the caller (the floor)
			r.workerJoined.CompareAndSwap(0, r.connectedAt)
		}
	}
	if g.dispatch != nil {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := g.dispatch.CreateDispatch(ctx, &livekit.CreateAgentDispatchRequest{
				AgentName: g.cfg.AgentName, Room: r.name, Metadata: "loadgen",
			})
			if err != nil {
				r.mu.Lock()
				r.dispatch = err.Error()
				r.mu.Unlock()
			}
		}()
	}
	// A worker already in the room (none expected: dispatched just now).
	for _, rp := range room.GetRemoteParticipants() {
		for _, tp := range rp.TrackPublications() {
			if pub, ok := tp.(*lksdk.RemoteTrackPublication); ok && isHoldPublication(pub, rp) {
				_ = pub.SetSubscribed(true)
			}
		}
	}
	track, err := publishLoop(room, g.callerArr)
	if err != nil {
		r.connectErr = "publish: " + err.Error()
		return
	}
	r.callerTx = newSender(track, g.callerArr)
	g.tk.add(r.callerTx)
}

// readHold records every packet of the hold track: arrival and payload size;
// decoded rooms also feed the level meter.
func (g *gen) readHold(r *roomRun, track *webrtc.TrackRemote) {
	r.holdTrackSubscriptions.Add(1)
	buf := make([]byte, 1500)
	for {
		n, _, err := track.Read(buf)
		if err != nil {
			return
		}
		at := g.now()
		payload := rtpPayload(buf[:n])
		if payload == nil {
			continue
		}
		size := len(payload)
		audio := size > bigPayloadSize && !isSFUSilence(payload)
		r.mu.Lock()
		r.rx = append(r.rx, rxPkt{at: at, size: uint16(size), audio: audio})
		if r.meter != nil {
			r.meter.add(at, payload)
		}
		r.mu.Unlock()
		if audio && r.firstBig.Load() == 0 {
			r.firstBig.CompareAndSwap(0, at)
		}
	}
}

// isSFUSilence: livekit-server's Opus silence frame (TOC 0xf8, 0xff 0xfe, then
// zeros), written to a subscriber when a track is muted or unpublished.
func isSFUSilence(p []byte) bool {
	if len(p) < 3 || p[0] != 0xf8 || p[1] != 0xff || p[2] != 0xfe {
		return false
	}
	for _, b := range p[3:] {
		if b != 0 {
			return false
		}
	}
	return true
}

// rtpPayload returns the payload of a raw RTP packet (nil if malformed).
func rtpPayload(b []byte) []byte {
	if len(b) < 12 {
		return nil
	}
	hl := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 {
		if len(b) < hl+4 {
			return nil
		}
		hl += 4 + 4*(int(b[hl+2])<<8|int(b[hl+3]))
	}
	end := len(b)
	if b[0]&0x20 != 0 && end > 0 {
		end -= int(b[end-1])
	}
	if hl > end {
		return nil
	}
	return b[hl:end]
}

func (g *gen) joinAgent(r *roomRun, once *sync.Once) {
	tok, err := g.token(r.name, r.agent, livekit.ParticipantInfo_STANDARD, nil)
	if err != nil {
		r.agentErr = err.Error()
		return
	}
	room, err := lksdk.ConnectToRoomWithToken(g.cfg.URL, tok, lksdk.NewRoomCallback(), g.connectOpts()...)
	if err != nil {
		r.agentErr = err.Error()
		return
	}
	r.agentJoined = g.now()
	r.agentRoom = room
	once.Do(func() { g.emit("handoff_start", nil) })
	track, err := publishLoop(room, g.agentArr)
	if err != nil {
		r.agentErr = "publish: " + err.Error()
		return
	}
	r.agentTx = newSender(track, g.agentArr)
	g.tk.add(r.agentTx)
}

// cpuTime: this process's user and system CPU time so far.
func cpuTime() cpuSample {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return cpuSample{}
	}
	return cpuSample{user: time.Duration(ru.Utime.Nano()), sys: time.Duration(ru.Stime.Nano())}
}

type cpuSample struct{ user, sys time.Duration }

func (c cpuSample) sub(o cpuSample) cpuSample { return cpuSample{c.user - o.user, c.sys - o.sys} }

func (c cpuSample) total() time.Duration { return c.user + c.sys }

func main() {
	cfg := parseFlags()
	if cfg.URL == "" || cfg.APIKey == "" || cfg.APISecret == "" {
		fmt.Fprintln(os.Stderr, "loadgen: LIVEKIT_URL, LIVEKIT_API_KEY and LIVEKIT_API_SECRET (or -url/-api-key/-api-secret) are required")
		os.Exit(2)
	}
	if cfg.Rooms < 1 {
		fmt.Fprintln(os.Stderr, "loadgen: -rooms must be at least 1")
		os.Exit(2)
	}
	if l, err := protoLogger.NewZapLogger(&protoLogger.Config{Level: cfg.LogLevel}); err == nil {
		lksdk.SetLogger(l)
		protoLogger.SetLogger(l, "loadgen")
	}

	callerLoop, err := encodeToneLoop([]int{697, 1209}, -20)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
	agentLoop, err := encodeToneLoop([]int{1700}, -20)
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}

	if cfg.Procs > 0 {
		runtime.GOMAXPROCS(cfg.Procs)
	}
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err == nil && pprof.StartCPUProfile(f) == nil {
			defer pprof.StopCPUProfile()
		}
	}
	g := &gen{cfg: cfg, start: time.Now(), callerArr: callerLoop, agentArr: agentLoop, phases: map[string]float64{}}
	cpu0 := cpuTime()
	if cfg.AgentName != "" && cfg.Dispatch == "api" {
		g.dispatch = lksdk.NewAgentDispatchServiceClient(cfg.URL, cfg.APIKey, cfg.APISecret)
	}
	g.tk = newTicker(g.start)
	go g.tk.run()

	rooms := make([]*roomRun, cfg.Rooms)
	var wg sync.WaitGroup
	for i := range rooms {
		r := &roomRun{
			idx:    i,
			name:   fmt.Sprintf("%s%s-%d", cfg.Prefix, cfg.RunTag, i),
			caller: fmt.Sprintf("sip_+1777%s%04d", cfg.RunTag, i),
			agent:  fmt.Sprintf("agent-bench-%s-%d", cfg.RunTag, i),
		}
		if i < cfg.DecodeRooms {
			if m, err := newLevelMeter(); err == nil {
				r.meter = m
			}
		}
		rooms[i] = r
		if i > 0 {
			time.Sleep(cfg.JoinInterval)
		}
		wg.Add(1)
		go func() { defer wg.Done(); g.joinCaller(r) }()
	}
	wg.Wait()

	connected := 0
	var firstErr string
	for _, r := range rooms {
		if r.connectedAt != 0 {
			connected++
		} else if firstErr == "" {
			firstErr = r.connectErr
		}
	}
	if connected == 0 {
		g.tk.close()
		fmt.Fprintf(os.Stderr, "loadgen: no caller could connect to %s: %s\n", cfg.URL, firstErr)
		os.Exit(1)
	}

	answerDeadline := time.Now().Add(cfg.AnswerTimeout)
	held := 0
	for {
		held = 0
		for _, r := range rooms {
			if r.firstBig.Load() != 0 {
				held++
			}
		}
		if held == connected || time.Now().After(answerDeadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	g.emit("joined", map[string]any{"rooms": cfg.Rooms, "held": held})

	time.Sleep(cfg.Settle)
	steadyStart := g.now()
	cpuS0 := cpuTime()
	g.emit("steady_start", nil)
	time.Sleep(cfg.Steady)
	steadyEnd := g.now()
	cpuS1 := cpuTime()
	g.emit("steady_end", nil)
	ticksSteady := g.tk.ticks.Load()

	obsEnd := int64(0)
	if cfg.Handoff {
		var once sync.Once
		var awg sync.WaitGroup
		first := true
		for _, r := range rooms {
			if r.callerRoom == nil {
				continue
			}
			if !first {
				time.Sleep(cfg.AgentInterval)
			}
			first = false
			awg.Add(1)
			go func() { defer awg.Done(); g.joinAgent(r, &once) }()
		}
		awg.Wait()
		// Every agent's first packet (or give up after answer-timeout).
		deadline := time.Now().Add(cfg.AnswerTimeout)
		for time.Now().Before(deadline) {
			pending := false
			for _, r := range rooms {
				if r.agentTx != nil && r.agentTx.firstSent.Load() == 0 {
					pending = true
				}
			}
			if !pending {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		lastFirst := int64(0)
		for _, r := range rooms {
			if r.agentTx != nil {
				lastFirst = max(lastFirst, r.agentTx.firstSent.Load())
			}
		}
		if wait := time.Duration(lastFirst) + cfg.HandoffWait - time.Duration(g.now()); wait > 0 {
			time.Sleep(wait)
		}
		obsEnd = g.now()
		g.emit("handoff_end", nil)
	} else {
		obsEnd = g.now()
	}

	// Hang up: sip.callStatus=hangup as livekit-sip does, then leave.
	for _, r := range rooms {
		if r.callerRoom != nil {
			r.callerRoom.LocalParticipant.SetAttributes(map[string]string{"sip.callStatus": "hangup"})
		}
	}
	time.Sleep(300 * time.Millisecond)
	var dwg sync.WaitGroup
	for _, r := range rooms {
		for _, room := range []*lksdk.Room{r.callerRoom, r.agentRoom} {
			if room != nil {
				dwg.Add(1)
				go func() { defer dwg.Done(); room.Disconnect() }()
			}
		}
		for _, tx := range []*sender{r.callerTx, r.agentTx} {
			if tx != nil {
				g.tk.remove(tx)
			}
		}
	}
	dwg.Wait()
	g.tk.close()
	cpuEnd := cpuTime()
	wallEnd := g.now()
	g.emit("done", nil)

	rep := g.report(rooms, reportInput{
		steadyStart: steadyStart, steadyEnd: steadyEnd, obsEnd: obsEnd,
		cpuSteady: cpuS1.sub(cpuS0), cpuAll: cpuEnd.sub(cpu0), wallAll: wallEnd,
		ticksSteady: ticksSteady, connected: connected,
	})
	if cfg.DumpPath != "" {
		g.dump(rooms)
	}
	if cfg.JSONPath != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(cfg.JSONPath, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen: writing the report:", err)
			os.Exit(1)
		}
	}
}

// dump writes, per room, the received hold packets as [ms since the caller
// connected, payload bytes (negative: the SFU's silence frame)] and the agent's first packet on the same clock.
func (g *gen) dump(rooms []*roomRun) {
	out := map[string]any{}
	for _, r := range rooms {
		r.mu.Lock()
		pk := make([][2]float64, 0, len(r.rx))
		for _, p := range r.rx {
			size := float64(p.size)
			if !p.audio && p.size > bigPayloadSize {
				size = -size // the SFU's silence frame
			}
			pk = append(pk, [2]float64{ms(p.at - r.connectedAt), size})
		}
		r.mu.Unlock()
		var agent *float64
		if r.agentTx != nil && r.agentTx.firstSent.Load() != 0 {
			agent = ptr(ms(r.agentTx.firstSent.Load() - r.connectedAt))
		}
		out[r.name] = map[string]any{"packets": pk, "agent_first_ms": agent}
	}
	b, _ := json.Marshal(out)
	if err := os.WriteFile(g.cfg.DumpPath, b, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen: dump:", err)
	}
}
