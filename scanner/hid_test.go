package scanner

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/scanpay/scanpay/device"
)

var sessionCodes = []string{"134567890123456789", "2812345678901234", "6212345678901234567", "AbC-123_xyz", "301234567890123456789012"}

func TestRecordedStreams(t *testing.T) {
	for _, tc := range []struct {
		file   string
		layout Layout
	}{{"testdata/session-64.ev", Layout64}, {"testdata/session-32.ev", Layout32}} {
		t.Run(tc.file, func(t *testing.T) {
			b, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			evs, err := ReadEvents(bytes.NewReader(b), tc.layout)
			if err != nil {
				t.Fatal(err)
			}
			got := DecodeStream(evs, NewDecoder(DecoderConfig{StripAIM: true}))
			if strings.Join(got, ",") != strings.Join(sessionCodes, ",") {
				t.Fatalf("decoded %q, want %q", got, sessionCodes)
			}
			raw := DecodeStream(evs, NewDecoder(DecoderConfig{}))
			if raw[3] != "]Q1AbC-123_xyz" {
				t.Fatalf("without AIM stripping: %q", raw[3])
			}
			// A scanner types about 10 ms per key: check the recording's
			// timestamps survived the layout.
			if d := evs[len(evs)-1].Time.Sub(evs[0].Time); d < 2*time.Second || d > 10*time.Second {
				t.Fatalf("recording spans %v", d)
			}
		})
	}
	// The 16-byte recording read as 24-byte records does not line up.
	b, _ := os.ReadFile("testdata/session-32.ev")
	if _, err := ReadEvents(bytes.NewReader(b), Layout64); !errors.Is(err, ErrTruncatedEvent) {
		if len(b)%24 != 0 {
			t.Fatalf("misaligned stream read without error: %v", err)
		}
	}
}

func TestNativeLayout(t *testing.T) {
	want := 24
	switch runtime.GOARCH {
	case "arm", "386", "mips", "mipsle":
		want = 16
	}
	if NativeLayout.Size != want {
		t.Fatalf("native input_event size on %s is %d, want %d", runtime.GOARCH, NativeLayout.Size, want)
	}
	for _, l := range []Layout{Layout64, Layout32} {
		ev := RawEvent{Time: time.Unix(1764255600, 123456000), Type: EvKey, Code: 30, Value: KeyPressed}
		if got := l.Decode(l.Encode(ev)); !got.Time.Equal(ev.Time) || got.Code != 30 || got.Value != 1 || got.Type != EvKey {
			t.Fatalf("layout %d round trip: %+v", l.Size, got)
		}
	}
}

// keys builds press/release events for s, each key 10 ms apart from start.
func keys(t0 time.Time, s string, term uint16) []RawEvent {
	evs, err := TypeCode(s, term, t0, 10*time.Millisecond)
	if err != nil {
		panic(err)
	}
	return evs
}

func TestDecoder(t *testing.T) {
	t0 := time.Unix(1000, 0)
	press := func(code uint16, at time.Duration) RawEvent {
		return RawEvent{Time: t0.Add(at), Type: EvKey, Code: code, Value: KeyPressed}
	}
	release := func(code uint16, at time.Duration) RawEvent {
		return RawEvent{Time: t0.Add(at), Type: EvKey, Code: code, Value: KeyReleased}
	}
	cat := func(parts ...[]RawEvent) []RawEvent {
		var out []RawEvent
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	tests := []struct {
		name  string
		cfg   DecoderConfig
		evs   []RawEvent
		want  []string
		stats DecodeStats
	}{
		{"plain", DecoderConfig{}, keys(t0, "134567890123456789", KeyEnter), []string{"134567890123456789"}, DecodeStats{Codes: 1}},
		{"keypad enter", DecoderConfig{}, keys(t0, "12", KeyKPEnter), []string{"12"}, DecodeStats{Codes: 1}},
		{"tab not a terminator by default", DecoderConfig{}, cat(keys(t0, "12", KeyTab), keys(t0.Add(time.Second), "3", KeyEnter)), []string{"3"}, DecodeStats{Codes: 1, Partial: 1, Unmapped: 1}},
		{"tab configured", DecoderConfig{Terminators: []uint16{KeyTab}}, keys(t0, "12", KeyTab), []string{"12"}, DecodeStats{Codes: 1}},
		{"shift letters", DecoderConfig{}, keys(t0, "AbC", KeyEnter), []string{"AbC"}, DecodeStats{Codes: 1}},
		{"caps lock", DecoderConfig{}, []RawEvent{press(KeyCapsLock, 0), press(30, 10*time.Millisecond), press(2, 20*time.Millisecond), press(KeyEnter, 30*time.Millisecond)}, []string{"A1"}, DecodeStats{Codes: 1}},
		{"caps and shift cancel on letters", DecoderConfig{}, []RawEvent{press(KeyCapsLock, 0), press(KeyRightShift, 5*time.Millisecond), press(30, 10*time.Millisecond), release(KeyRightShift, 15*time.Millisecond), press(KeyEnter, 20*time.Millisecond)}, []string{"a"}, DecodeStats{Codes: 1}},
		{"repeats ignored", DecoderConfig{}, []RawEvent{press(2, 0), {Time: t0.Add(5 * time.Millisecond), Type: EvKey, Code: 2, Value: KeyRepeated}, press(KeyEnter, 10*time.Millisecond)}, []string{"1"}, DecodeStats{Codes: 1}},
		{"keypad digits", DecoderConfig{}, []RawEvent{press(KeyKP1, 0), press(KeyKP0, 10*time.Millisecond), press(KeyKPEnter, 20*time.Millisecond)}, []string{"10"}, DecodeStats{Codes: 1}},
		{"idle gap drops partial", DecoderConfig{IdleTimeout: 300 * time.Millisecond}, cat(keys(t0, "999", KeyEnter)[:6], keys(t0.Add(time.Second), "55", KeyEnter)), []string{"55"}, DecodeStats{Codes: 1, Partial: 1}},
		{"overlong discarded to terminator", DecoderConfig{MaxLen: 5}, cat(keys(t0, "1234567", KeyEnter), keys(t0.Add(time.Second), "12", KeyEnter)), []string{"12"}, DecodeStats{Codes: 1, Overlong: 1}},
		{"exactly max length", DecoderConfig{MaxLen: 5}, keys(t0, "12345", KeyEnter), []string{"12345"}, DecodeStats{Codes: 1}},
		{"empty terminator", DecoderConfig{}, []RawEvent{press(KeyEnter, 0)}, nil, DecodeStats{Empty: 1}},
		{"unmapped keys ignored", DecoderConfig{}, []RawEvent{press(2, 0), press(KeyNumLock, 5*time.Millisecond), press(3, 10*time.Millisecond), press(KeyEnter, 20*time.Millisecond)}, []string{"12"}, DecodeStats{Codes: 1, Unmapped: 1}},
		{"non-key events ignored", DecoderConfig{}, append([]RawEvent{{Time: t0, Type: EvMsc, Code: 4, Value: 458782}}, keys(t0, "7", KeyEnter)...), []string{"7"}, DecodeStats{Codes: 1}},
		{"AIM prefix only", DecoderConfig{StripAIM: true}, keys(t0, "]E0", KeyEnter), nil, DecodeStats{Empty: 1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := NewDecoder(tc.cfg)
			got := DecodeStream(tc.evs, d)
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("codes %q, want %q", got, tc.want)
			}
			if d.Stats != tc.stats {
				t.Fatalf("stats %+v, want %+v", d.Stats, tc.stats)
			}
		})
	}
}

func TestTenKilobytesOfKeys(t *testing.T) {
	d := NewDecoder(DecoderConfig{})
	long := strings.Repeat("1234567890", 1000)
	evs := keys(time.Unix(0, 0), long, KeyEnter)
	evs = append(evs, keys(time.Unix(1, 0).Add(100*time.Second), "42", KeyEnter)...)
	got := DecodeStream(evs, d)
	if len(got) != 1 || got[0] != "42" || d.Stats.Overlong != 1 {
		t.Fatalf("got %q stats %+v", got, d.Stats)
	}
}

func TestRuneKeyRoundTrip(t *testing.T) {
	for _, r := range "0123456789abcxyzABCXYZ-_=+[]{};:'\",.<>/?`~!@#$%^&*() \\|" {
		c, shift, ok := RuneKey(r)
		if !ok {
			t.Fatalf("%q not typeable", r)
		}
		if back, _ := KeyRune(c, shift, false); back != r {
			t.Fatalf("%q → key %d shift %v → %q", r, c, shift, back)
		}
	}
	if _, _, ok := RuneKey('é'); ok {
		t.Fatal("é typed on a US keyboard")
	}
}

func TestStripAIM(t *testing.T) {
	for in, want := range map[string]string{"]Q1abc": "abc", "]E0123": "123", "]Q": "]Q", "abc": "abc", "]!1x": "]!1x", "": ""} {
		if got := StripAIM(in); got != want {
			t.Errorf("StripAIM(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzDecoder(f *testing.F) {
	for _, file := range []string{"testdata/session-64.ev"} {
		if b, err := os.ReadFile(file); err == nil {
			f.Add(b[:min(len(b), 2400)])
		}
	}
	var b bytes.Buffer
	for _, ev := range keys(time.Unix(0, 0), "AbC123", KeyEnter) {
		b.Write(Layout64.Encode(ev))
	}
	f.Add(b.Bytes())
	f.Add(bytes.Repeat([]byte{1, 0, 0, 0}, 50))
	f.Fuzz(func(t *testing.T, data []byte) {
		evs, _ := ReadEvents(bytes.NewReader(data), Layout64)
		d := NewDecoder(DecoderConfig{MaxLen: 32, StripAIM: true})
		for _, code := range DecodeStream(evs, d) {
			if code == "" || len([]rune(code)) > 32 {
				t.Fatalf("bad code %q", code)
			}
			if device.Printable(code) != code {
				t.Fatalf("control character in %q", code)
			}
		}
	})
}

// BenchmarkDecoder reports how many key events per second the decoder
// handles; a scanner sends at most a few thousand per second.
func BenchmarkDecoder(b *testing.B) {
	data, err := os.ReadFile("testdata/session-64.ev")
	if err != nil {
		b.Fatal(err)
	}
	evs, _ := ReadEvents(bytes.NewReader(data), Layout64)
	b.ReportAllocs()
	d := NewDecoder(DecoderConfig{StripAIM: true})
	n := 0
	for b.Loop() {
		d.Reset()
		n += len(DecodeStream(evs, d))
	}
	b.ReportMetric(float64(b.N*len(evs))/b.Elapsed().Seconds(), "events/s")
	if n == 0 {
		b.Fatal("no codes")
	}
}
