package payment

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/scanpay/scanpay/payment/iotpay"
)

// WalletRule maps payment codes to an IOTPay channel by prefix and length.
type WalletRule struct {
	Name     string   // shown to people: "WeChat Pay"
	Channel  string   // IOTPay channelId: WX_MICROPAY, ALIPAY_MICROPAY, UPI_MICROPAY
	Prefixes []string // digit prefixes; "10-15" stands for 10, 11, …, 15
	MinLen   int
	MaxLen   int
}

// DefaultWalletRules is iotpay.md's table: WeChat 18 digits starting 10–15,
// Alipay 16–24 digits starting 25–30, UnionPay 19 digits starting 62.
func DefaultWalletRules() []WalletRule {
	return []WalletRule{
		{Name: "WeChat Pay", Channel: iotpay.ChannelWeChat, Prefixes: []string{"10-15"}, MinLen: 18, MaxLen: 18},
		{Name: "Alipay", Channel: iotpay.ChannelAlipay, Prefixes: []string{"25-30"}, MinLen: 16, MaxLen: 24},
		{Name: "UnionPay", Channel: iotpay.ChannelUnionPay, Prefixes: []string{"62"}, MinLen: 19, MaxLen: 19},
	}
}

var _ Classifier = (*Wallets)(nil)

// Wallets classifies payment codes. Codes that match no rule are
// unsupported; the table is never guessed beyond.
type Wallets struct {
	rules []compiledRule
}

type compiledRule struct {
	WalletRule
	prefixes []string
}

// NewWallets checks and compiles a rule table.
func NewWallets(rules []WalletRule) (*Wallets, error) {
	if len(rules) == 0 {
		return nil, fmt.Errorf("wallet table is empty")
	}
	w := &Wallets{}
	for i, r := range rules {
		if r.Channel == "" {
			return nil, fmt.Errorf("wallet rule %d: channel is empty", i+1)
		}
		if r.Name == "" {
			r.Name = r.Channel
		}
		if r.MinLen < 1 || r.MaxLen < r.MinLen || r.MaxLen > 64 {
			return nil, fmt.Errorf("wallet rule %d (%s): lengths %d–%d are not a range within 1–64", i+1, r.Name, r.MinLen, r.MaxLen)
		}
		if len(r.Prefixes) == 0 {
			return nil, fmt.Errorf("wallet rule %d (%s): no prefixes", i+1, r.Name)
		}
		c := compiledRule{WalletRule: r}
		for _, p := range r.Prefixes {
			expanded, err := expandPrefix(p)
			if err != nil {
				return nil, fmt.Errorf("wallet rule %d (%s): %w", i+1, r.Name, err)
			}
			c.prefixes = append(c.prefixes, expanded...)
		}
		w.rules = append(w.rules, c)
	}
	return w, nil
}

func expandPrefix(p string) ([]string, error) {
	p = strings.TrimSpace(p)
	lo, hi, isRange := strings.Cut(p, "-")
	if !isRange {
		if !allDigits(p) || p == "" {
			return nil, fmt.Errorf("prefix %q is not digits", p)
		}
		return []string{p}, nil
	}
	lo, hi = strings.TrimSpace(lo), strings.TrimSpace(hi)
	if !allDigits(lo) || !allDigits(hi) || len(lo) != len(hi) || lo == "" {
		return nil, fmt.Errorf("prefix range %q must be two numbers of the same width, like 10-15", p)
	}
	a, _ := strconv.Atoi(lo)
	b, _ := strconv.Atoi(hi)
	if b < a || b-a > 1000 {
		return nil, fmt.Errorf("prefix range %q is empty or too wide", p)
	}
	var out []string
	for n := a; n <= b; n++ {
		out = append(out, fmt.Sprintf("%0*d", len(lo), n))
	}
	return out, nil
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Classify returns the rule a code matches. Payment codes are all digits;
// anything else is unsupported.
func (w *Wallets) Classify(code string) (WalletRule, bool) {
	if code == "" || !allDigits(code) {
		return WalletRule{}, false
	}
	for _, r := range w.rules {
		if len(code) < r.MinLen || len(code) > r.MaxLen {
			continue
		}
		for _, p := range r.prefixes {
			if strings.HasPrefix(code, p) {
				return r.WalletRule, true
			}
		}
	}
	return WalletRule{}, false
}

// Name returns the display name of a channel, or the channel itself.
func (w *Wallets) Name(channel string) string {
	for _, r := range w.rules {
		if r.Channel == channel {
			return r.Name
		}
	}
	return channel
}
