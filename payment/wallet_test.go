package payment

import "testing"

func TestClassifyDefaultTable(t *testing.T) {
	w, err := NewWallets(DefaultWalletRules())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		code, channel string
	}{
		{"134567890123456789", "WX_MICROPAY"},
		{"104567890123456789", "WX_MICROPAY"},
		{"154567890123456789", "WX_MICROPAY"},
		{"164567890123456789", ""},  // prefix 16 is nobody's
		{"13456789012345678", ""},   // 17 digits
		{"1345678901234567890", ""}, // 19 digits, prefix 13
		{"2812345678901234", "ALIPAY_MICROPAY"},
		{"301234567890123456789012", "ALIPAY_MICROPAY"},
		{"3012345678901234567890123", ""}, // 25 digits
		{"281234567890123", ""},           // 15 digits
		{"6212345678901234567", "UPI_MICROPAY"},
		{"621234567890123456", ""},
		{"13456789012345678X", ""},
		{"", ""},
		{" 134567890123456789", ""},
	}
	for _, tc := range tests {
		r, ok := w.Classify(tc.code)
		if tc.channel == "" && ok {
			t.Errorf("%q classified as %s, want unsupported", tc.code, r.Channel)
		}
		if tc.channel != "" && (!ok || r.Channel != tc.channel) {
			t.Errorf("%q: got %q %v, want %s", tc.code, r.Channel, ok, tc.channel)
		}
	}
	if w.Name("ALIPAY_MICROPAY") != "Alipay" {
		t.Error("name lookup")
	}
}

func TestWalletTableErrors(t *testing.T) {
	bad := [][]WalletRule{
		nil,
		{{Channel: "", Prefixes: []string{"1"}, MinLen: 1, MaxLen: 2}},
		{{Channel: "X", Prefixes: []string{"1"}, MinLen: 3, MaxLen: 2}},
		{{Channel: "X", Prefixes: nil, MinLen: 1, MaxLen: 2}},
		{{Channel: "X", Prefixes: []string{"1a"}, MinLen: 1, MaxLen: 2}},
		{{Channel: "X", Prefixes: []string{"15-10"}, MinLen: 1, MaxLen: 2}},
		{{Channel: "X", Prefixes: []string{"1-100"}, MinLen: 1, MaxLen: 2}},
	}
	for i, rules := range bad {
		if _, err := NewWallets(rules); err == nil {
			t.Errorf("table %d accepted", i)
		}
	}
}
