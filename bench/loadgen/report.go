package main

import (
	"math"
	"runtime"
	"sort"
	"time"
)

const (
	gapMin        = 100 * time.Millisecond // a stretch longer than this without audio is a gap
	handoffSilent = time.Second            // hold audio has ended once this long passes without it
	audibleDBFS   = -50.0                  // a decoded 100 ms window above this is audible
)

type reportInput struct {
	steadyStart, steadyEnd, obsEnd int64
	cpuSteady, cpuAll              cpuSample
	wallAll                        int64
	ticksSteady                    int64
	connected                      int
}

type levelSummary struct {
	Windows       int      `json:"windows"`
	AudibleShare  *float64 `json:"audible_share"` // windows above -50 dBFS, steady window
	MeanDBFS      *float64 `json:"mean_dbfs"`
	MinDBFS       *float64 `json:"min_dbfs"`
	MaxDBFS       *float64 `json:"max_dbfs"`
	TotalDecoded  int      `json:"windows_total"`
	ThresholdDBFS float64  `json:"threshold_dbfs"`
}

type roomReport struct {
	Room             string        `json:"room"`
	Caller           string        `json:"caller"`
	Connected        bool          `json:"connected"`
	JoinedAt         *float64      `json:"joined_at"`
	DeadAirMs        *float64      `json:"dead_air_ms"` // the worker's join (livekit-sip's 200 OK) -> hold audio
	AnswerMs         *float64      `json:"answer_ms"`   // the caller's join -> hold audio (dispatch included)
	Packets          int           `json:"packets"`
	Bytes            int           `json:"bytes"`
	AudioPackets     int           `json:"audio_packets"`
	GapShare         *float64      `json:"gap_share"`
	GapMs            float64       `json:"gap_ms"`
	LongestGapMs     float64       `json:"longest_gap_ms"`
	MaxIntervalMs    float64       `json:"max_interval_ms"`
	HoldPackets      int           `json:"hold_packets_total"`
	HoldTracks       int32         `json:"hold_tracks"`
	AgentFirstSent   *float64      `json:"agent_first_packet_at"`
	HoldEndAt        *float64      `json:"hold_end_at"`
	HandoffMs        *float64      `json:"handoff_ms"`
	HandoffAudibleMs *float64      `json:"handoff_audible_ms,omitempty"` // decoded rooms: to the last window above -50 dBFS
	HoldUnpublished  *float64      `json:"hold_unpublished_at"`
	Levels           *levelSummary `json:"levels,omitempty"`
	Errors           []string      `json:"errors,omitempty"`
}

type genReport struct {
	CPUSteadyShare      float64 `json:"cpu_steady_share"` // of one core
	CPUOverallShare     float64 `json:"cpu_overall_share"`
	CPUSteadyPerRoomPct float64 `json:"cpu_steady_per_room_pct"`
	CPUSteadySysShare   float64 `json:"cpu_steady_sys_share"` // the kernel's part (loopback sends run the receive path too)
	CPUSteadyS          float64 `json:"cpu_steady_s"`
	CPUOverallS         float64 `json:"cpu_overall_s"`
	WallS               float64 `json:"wall_s"`
	Ticks               int64   `json:"ticks"`
	TicksSteady         int64   `json:"ticks_at_steady_end"`
	LateTicks           int64   `json:"late_ticks"`
	MaxLatenessMs       float64 `json:"max_lateness_ms"`
	GOMAXPROCS          int     `json:"gomaxprocs"`
}

type summary struct {
	Rooms           int      `json:"rooms"`
	Connected       int      `json:"connected"`
	Answered        int      `json:"answered"`
	DeadAirP50      *float64 `json:"dead_air_ms_p50"`
	DeadAirP95      *float64 `json:"dead_air_ms_p95"`
	DeadAirMax      *float64 `json:"dead_air_ms_max"`
	AnswerP50       *float64 `json:"answer_ms_p50"`
	AnswerP95       *float64 `json:"answer_ms_p95"`
	HandoffMeasured int      `json:"handoffs_measured"`
	HandoffP50      *float64 `json:"handoff_ms_p50"`
	HandoffP95      *float64 `json:"handoff_ms_p95"`
	HandoffMax      *float64 `json:"handoff_ms_max"`
	GapShareMean    *float64 `json:"gap_share_mean"`
	GapShareMax     *float64 `json:"gap_share_max"`
	RoomsWithGaps   int      `json:"rooms_with_gaps"`
}

type report struct {
	Tool      string             `json:"tool"`
	RunTag    string             `json:"runtag"`
	Config    map[string]any     `json:"config"`
	Phases    map[string]float64 `json:"phases"`
	SteadyS   float64            `json:"steady_s"`
	Generator genReport          `json:"generator"`
	Summary   summary            `json:"summary"`
	Rooms     []roomReport       `json:"rooms"`
}

func ptr(v float64) *float64 { return &v }

func ms(ns int64) float64 { return math.Round(float64(ns)/1e4) / 100 }

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}

// percentile: nearest rank on a sorted copy.
func percentile(vals []float64, p float64) *float64 {
	if len(vals) == 0 {
		return nil
	}
	s := append([]float64(nil), vals...)
	sort.Float64s(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	i = max(0, min(i, len(s)-1))
	return ptr(s[i])
}

func (g *gen) report(rooms []*roomRun, in reportInput) report {
	c := g.cfg
	window := in.steadyEnd - in.steadyStart
	rep := report{
		Tool:   "bench/loadgen",
		RunTag: c.RunTag,
		Config: map[string]any{
			"url": c.URL, "rooms": c.Rooms, "prefix": c.Prefix, "agent_name": c.AgentName,
			"join_interval_ms": c.JoinInterval.Milliseconds(), "store": c.Store,
			"trunk_number": c.TrunkNumber, "answer_timeout_s": c.AnswerTimeout.Seconds(),
			"settle_s": c.Settle.Seconds(), "steady_s": c.Steady.Seconds(), "handoff": c.Handoff,
			"agent_interval_ms": c.AgentInterval.Milliseconds(), "handoff_wait_s": c.HandoffWait.Seconds(),
			"decode_rooms": c.DecodeRooms,
		},
		Phases:  g.phases,
		SteadyS: round(float64(window)/1e9, 3),
	}
	steadyCPU := in.cpuSteady.total().Seconds() / (float64(window) / 1e9)
	rep.Generator = genReport{
		CPUSteadyShare:      round(steadyCPU, 4),
		CPUOverallShare:     round(in.cpuAll.total().Seconds()/(float64(in.wallAll)/1e9), 4),
		CPUSteadySysShare:   round(in.cpuSteady.sys.Seconds()/(float64(window)/1e9), 4),
		CPUSteadyPerRoomPct: round(100*steadyCPU/float64(c.Rooms), 4),
		CPUSteadyS:          round(in.cpuSteady.total().Seconds(), 3),
		CPUOverallS:         round(in.cpuAll.total().Seconds(), 3),
		WallS:               round(float64(in.wallAll)/1e9, 3),
		Ticks:               g.tk.ticks.Load(),
		TicksSteady:         in.ticksSteady,
		LateTicks:           g.tk.lateTicks.Load(),
		MaxLatenessMs:       ms(g.tk.maxLateness.Load()),
		GOMAXPROCS:          runtime.GOMAXPROCS(0),
	}

	var deadAir, answer, handoff, gapShares []float64
	sum := summary{Rooms: c.Rooms, Connected: in.connected}
	for _, r := range rooms {
		rr := g.roomFigures(r, in.steadyStart, in.steadyEnd, in.obsEnd)
		if rr.DeadAirMs != nil {
			sum.Answered++
			deadAir = append(deadAir, *rr.DeadAirMs)
		}
		if rr.AnswerMs != nil {
			answer = append(answer, *rr.AnswerMs)
		}
		if rr.HandoffMs != nil {
			handoff = append(handoff, *rr.HandoffMs)
		}
		if rr.GapShare != nil {
			gapShares = append(gapShares, *rr.GapShare)
			if *rr.GapShare > 0 {
				sum.RoomsWithGaps++
			}
		}
		rep.Rooms = append(rep.Rooms, rr)
	}
	sum.DeadAirP50, sum.DeadAirP95, sum.DeadAirMax = percentile(deadAir, 50), percentile(deadAir, 95), percentile(deadAir, 100)
	sum.AnswerP50, sum.AnswerP95 = percentile(answer, 50), percentile(answer, 95)
	sum.HandoffMeasured = len(handoff)
	sum.HandoffP50, sum.HandoffP95, sum.HandoffMax = percentile(handoff, 50), percentile(handoff, 95), percentile(handoff, 100)
	if len(gapShares) > 0 {
		var total float64
		for _, v := range gapShares {
			total += v
		}
		sum.GapShareMean = ptr(round(total/float64(len(gapShares)), 5))
		sum.GapShareMax = percentile(gapShares, 100)
	}
	rep.Summary = sum
	return rep
}

// endOfRun: the first time in ts (sorted) from a - 1 s on that is followed by
// >= 1 s without another one (or by obsEnd).
func endOfRun(ts []int64, a, obsEnd int64) (int64, bool) {
	var kept []int64
	for _, t := range ts {
		if t <= obsEnd {
			kept = append(kept, t)
		}
	}
	// The worker may start its fade when the agent's track is published, a
	// little before its first packet; audio that had stopped more than 1 s
	// before it is no handoff (null).
	i := sort.Search(len(kept), func(i int) bool { return kept[i] >= a-int64(handoffSilent) })
	for ; i < len(kept); i++ {
		next := obsEnd
		if i+1 < len(kept) {
			next = kept[i+1]
		}
		if next-kept[i] >= int64(handoffSilent) {
			return kept[i], true
		}
	}
	return 0, false
}

func (g *gen) roomFigures(r *roomRun, s, e, obsEnd int64) roomReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	rr := roomReport{Room: r.name, Caller: r.caller, Connected: r.connectedAt != 0, HoldPackets: len(r.rx),
		HoldTracks: r.holdTrackSubscriptions.Load()}
	for _, e := range []string{r.connectErr, r.dispatch, r.agentErr} {
		if e != "" {
			rr.Errors = append(rr.Errors, e)
		}
	}
	if r.connectedAt == 0 {
		return rr
	}
	rr.JoinedAt = ptr(round(r.joinedUnix, 3))
	if fb := r.firstBig.Load(); fb != 0 {
		rr.AnswerMs = ptr(ms(fb - r.connectedAt))
		from := r.connectedAt
		if wj := r.workerJoined.Load(); wj > from {
			from = wj
		}
		rr.DeadAirMs = ptr(ms(fb - from))
	}
	if r.holdUnpublishedAt != 0 {
		rr.HoldUnpublished = ptr(round(g.unix(r.holdUnpublishedAt), 3))
	}

	// Hold audio: packets with a payload > 10 bytes that are not the SFU's
	// silence frame and have another such packet within 100 ms (a lone one is
	// a DTX comfort-noise update, sent every 400 ms during silence).
	var aud []int64
	for _, p := range r.rx {
		if p.audio {
			aud = append(aud, p.at)
		}
	}
	var music []int64
	for i, t := range aud {
		if (i > 0 && t-aud[i-1] <= int64(gapMin)) || (i+1 < len(aud) && aud[i+1]-t <= int64(gapMin)) {
			music = append(music, t)
		}
	}

	// Steady window: every packet counted; gaps between music packets.
	for _, p := range r.rx {
		if p.at >= s && p.at <= e {
			rr.Packets++
			rr.Bytes += int(p.size)
		}
	}
	prev := s
	var gap, longest, maxInterval int64
	stretch := func(d int64) {
		maxInterval = max(maxInterval, d)
		if d > int64(gapMin) {
			gap += d - int64(framePeriod)
			longest = max(longest, d)
		}
	}
	for _, t := range music {
		if t < s || t > e {
			continue
		}
		rr.AudioPackets++
		stretch(t - prev)
		prev = t
	}
	stretch(e - prev)
	if e > s {
		rr.GapShare = ptr(round(float64(gap)/float64(e-s), 5))
	}
	rr.GapMs = ms(gap)
	rr.LongestGapMs = ms(longest)
	rr.MaxIntervalMs = ms(maxInterval)

	// Handoff: agent's first packet sent -> the last music packet after which
	// none came for >= 1 s (within the observation, which ends at obsEnd).
	if r.agentTx != nil {
		if a := r.agentTx.firstSent.Load(); a != 0 {
			rr.AgentFirstSent = ptr(round(g.unix(a), 3))
			if end, ok := endOfRun(music, a, obsEnd); ok {
				rr.HoldEndAt = ptr(round(g.unix(end), 3))
				rr.HandoffMs = ptr(ms(end - a))
			}
			if r.meter != nil {
				var loud []int64
				for _, w := range r.meter.levels {
					if w.dbfs > audibleDBFS {
						loud = append(loud, w.at)
					}
				}
				if end, ok := endOfRun(loud, a, obsEnd); ok {
					rr.HandoffAudibleMs = ptr(ms(end - a))
				}
			}
		}
	}

	if r.meter != nil {
		ls := &levelSummary{TotalDecoded: len(r.meter.levels), ThresholdDBFS: audibleDBFS}
		var audible int
		var sumDB float64
		lo, hi := math.Inf(1), math.Inf(-1)
		for _, w := range r.meter.levels {
			if w.at < s || w.at > e {
				continue
			}
			ls.Windows++
			if w.dbfs > audibleDBFS {
				audible++
			}
			sumDB += w.dbfs
			lo, hi = min(lo, w.dbfs), max(hi, w.dbfs)
		}
		if ls.Windows > 0 {
			ls.AudibleShare = ptr(round(float64(audible)/float64(ls.Windows), 4))
			ls.MeanDBFS = ptr(round(sumDB/float64(ls.Windows), 1))
			ls.MinDBFS = ptr(round(lo, 1))
			ls.MaxDBFS = ptr(round(hi, 1))
		}
		rr.Levels = ls
	}
	return rr
}
