package main

import (
	"fmt"
	"math"

	"gopkg.in/hraban/opus.v2"
)

const (
	sampleRate     = 48000
	frameSamples   = 960 // 20 ms at 48 kHz
	framesPerLoop  = 50  // one second of audio, replayed forever
	toneBitrate    = 32000
	bigPayloadSize = 10 // payloads of at most this many bytes are DTX / comfort noise
)

// encodeToneLoop encodes one second of the sum of the given sine tones (whole
// numbers of Hz, so one second loops without a click) into 50 Opus packets.
// The encoder runs over two seconds and only the second is kept, so the loop
// does not start with the encoder's warm-up packets. levelDBFS is the RMS level
// of the sum (the tones are equal in amplitude and uncorrelated).
func encodeToneLoop(freqs []int, levelDBFS float64) ([][]byte, error) {
	enc, err := opus.NewEncoder(sampleRate, 1, opus.AppAudio)
	if err != nil {
		return nil, fmt.Errorf("opus encoder: %w", err)
	}
	if err := enc.SetBitrate(toneBitrate); err != nil {
		return nil, fmt.Errorf("opus bitrate: %w", err)
	}
	// RMS of n equal uncorrelated sines of amplitude a is a*sqrt(n/2).
	rms := math.Pow(10, levelDBFS/20) * 32767
	amp := rms / math.Sqrt(float64(len(freqs))/2)
	pcm := make([]int16, frameSamples)
	buf := make([]byte, 1500)
	loop := make([][]byte, 0, framesPerLoop)
	for f := 0; f < 2*framesPerLoop; f++ {
		for i := range pcm {
			n := float64(f*frameSamples + i)
			var v float64
			for _, hz := range freqs {
				v += amp * math.Sin(2*math.Pi*float64(hz)*n/sampleRate)
			}
			pcm[i] = int16(math.Round(v))
		}
		n, err := enc.Encode(pcm, buf)
		if err != nil {
			return nil, fmt.Errorf("opus encode: %w", err)
		}
		if f >= framesPerLoop {
			loop = append(loop, append([]byte(nil), buf[:n]...))
		}
	}
	return loop, nil
}

// levelMeter decodes a room's hold audio and keeps the RMS level (dBFS) of
// every 100 ms window, stamped with the window's end.
type levelMeter struct {
	dec    *opus.Decoder
	pcm    []int16
	sumSq  float64
	count  int
	levels []levelWindow
}

type levelWindow struct {
	at   int64 // ns since the generator's start, end of the window
	dbfs float64
}

func newLevelMeter() (*levelMeter, error) {
	dec, err := opus.NewDecoder(sampleRate, 1)
	if err != nil {
		return nil, err
	}
	return &levelMeter{dec: dec, pcm: make([]int16, 5760)}, nil
}

func (m *levelMeter) add(at int64, payload []byte) {
	n, err := m.dec.Decode(payload, m.pcm)
	if err != nil {
		return
	}
	for _, s := range m.pcm[:n] {
		v := float64(s)
		m.sumSq += v * v
		m.count++
		if m.count == sampleRate/10 {
			m.levels = append(m.levels, levelWindow{at: at, dbfs: toDBFS(m.sumSq / float64(m.count))})
			m.sumSq, m.count = 0, 0
		}
	}
}

func toDBFS(meanSq float64) float64 {
	if meanSq <= 0 {
		return -120
	}
	return math.Max(-120, 10*math.Log10(meanSq/(32767.0*32767.0)))
}
